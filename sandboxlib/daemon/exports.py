"""A container's whole file system and its changes, running or stopped
(``filesystems.py``): ``export`` (``docker export``: a tar of the root) and
``changes`` (``docker diff``: its writable layer against its image)."""

from __future__ import annotations

import tempfile
from typing import List

from aiohttp import web

from ..errors import SandboxError
from .apierrors import ApiError, library_error
from .filesystems import files_of
from .server import Route, json_response
from .threads import in_thread

__all__ = ["ROUTES"]

CHUNK = 1 << 20


async def _export(request: web.Request) -> web.StreamResponse:
    """The tar is written to a file of the state directory first (the container is free
    again sooner, and an error is still a Docker-shaped one), then sent."""
    context = request.app["context"]
    record = context.containers.get(request.match_info["id"])
    with tempfile.TemporaryFile(dir=context.state_dir) as f:
        try:
            async with files_of(record) as box:
                await in_thread(box.sync.export, f)
        except SandboxError as err:
            raise library_error(err) from None
        except OSError as err:  # (a file the daemon may not read, rootless)
            raise ApiError(500, f"export of {record.name}: {err}") from None
        size = f.tell()
        f.seek(0)
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.content_length = size
        await response.prepare(request)
        while data := await in_thread(f.read, CHUNK):
            await response.write(data)
        await response.write_eof()
    context.events.emit("container", "export", record.id, record.attributes())
    return response


async def _changes(request: web.Request) -> web.Response:
    record = request.app["context"].containers.get(request.match_info["id"])
    try:
        async with files_of(record) as box:
            found = await in_thread(box.sync.changes)
    except SandboxError as err:
        raise library_error(err) from None
    return json_response([{"Path": path, "Kind": kind} for path, kind in found])


ROUTES: List[Route] = [
    ("GET", "/containers/{id}/export", _export),
    ("GET", "/containers/{id}/changes", _changes),
]
