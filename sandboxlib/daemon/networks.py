"""The network endpoints: the two networks a sandboxlib container can join
now, ``host`` and ``none`` (the default); networks of one's own need the
network helper (not here yet): creating one is refused with a 400."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List

from aiohttp import web

from .apierrors import ApiError
from .server import Route, json_response

__all__ = ["ROUTES"]

_DRIVERS = {"host": "host", "none": "null"}
_NOT_YET = "networks other than host and none need sandboxlib's network helper, not here yet"


def _id(name: str) -> str:
    return hashlib.sha256(f"sandboxlib network {name}".encode()).hexdigest()


def _shape(request: web.Request, name: str) -> Dict[str, Any]:
    members = {
        r.id: {"Name": r.name, "EndpointID": "", "MacAddress": "", "IPv4Address": "", "IPv6Address": ""}
        for r in request.app["context"].containers.all()
        if r.running and (r.request.network_mode == name or (name == "none" and r.request.network_mode != "host"))
    }
    return {
        "Name": name,
        "Id": _id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": _DRIVERS[name],
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": {},
        "Labels": {},
    }


def _named(request: web.Request) -> str:
    ref = request.match_info["id"]
    for name in _DRIVERS:
        if ref in (name, _id(name)) or (len(ref) >= 3 and _id(name).startswith(ref)):
            return name
    raise ApiError(404, f"network {ref} not found")


async def _list(request: web.Request) -> web.Response:
    return json_response([_shape(request, name) for name in _DRIVERS])


async def _inspect(request: web.Request) -> web.Response:
    return json_response(_shape(request, _named(request)))


async def _create(request: web.Request) -> web.Response:
    raise ApiError(400, _NOT_YET)


async def _remove(request: web.Request) -> web.Response:
    name = _named(request)
    raise ApiError(403, f"{name} is a pre-defined network and cannot be removed")


async def _connect(request: web.Request) -> web.Response:
    _named(request)
    raise ApiError(400, f"connecting a running container: {_NOT_YET}")


async def _prune(request: web.Request) -> web.Response:
    return json_response({"NetworksDeleted": []})


ROUTES: List[Route] = [
    ("GET", "/networks", _list),
    ("POST", "/networks/create", _create),
    ("POST", "/networks/prune", _prune),
    ("GET", "/networks/{id}", _inspect),
    ("DELETE", "/networks/{id}", _remove),
    ("POST", "/networks/{id}/connect", _connect),
    ("POST", "/networks/{id}/disconnect", _connect),
]
