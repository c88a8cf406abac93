"""Docker-shaped errors: ``{"message": ...}`` as ``application/json`` with
Docker's status codes and texts (clients match on both: docker-py pulls an
image when a create answers ``No such image: X``)."""

from __future__ import annotations

import json

from aiohttp import web

from ..errors import ConfigError, ContainerStateError, ImageNotFound, RegistryError, SandboxError, UnsupportedError

__all__ = ["ApiError", "error_response", "library_error", "no_such_container", "no_such_image"]


class ApiError(Exception):
    """An answer other than success: its HTTP status and Docker's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def no_such_container(name: str) -> ApiError:
    return ApiError(404, f"No such container: {name}")


def no_such_image(name: str) -> ApiError:
    return ApiError(404, f"No such image: {name}")


def error_response(status: int, message: str) -> web.Response:
    # (content_type= would add "; charset=utf-8": Docker's is exactly application/json)
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode(),
        headers={"Content-Type": "application/json"},
    )


def library_error(err: SandboxError) -> ApiError:
    """The library's exception as the API's answer."""
    if isinstance(err, ImageNotFound):
        return no_such_image(err.reference)
    if isinstance(err, (ConfigError, UnsupportedError)):
        return ApiError(400, str(err))
    if isinstance(err, ContainerStateError):
        return ApiError(409, str(err))
    if isinstance(err, RegistryError):
        return ApiError(500, str(err))
    return ApiError(500, str(err))
