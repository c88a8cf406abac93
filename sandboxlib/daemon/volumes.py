"""The volume endpoints: named volumes of the image store (``Mount.volume``),
which containers mount (``-v NAME:/dst``) and which outlive them."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any, Dict, List

from aiohttp import web

from ..config import Mount
from ..errors import ConfigError
from .apierrors import ApiError
from .containers import filters_of
from .create_config import check_volume_driver
from .server import Route, json_body, json_response, query_bool

__all__ = ["ROUTES", "volume_json", "volumes_in_use"]


def _context(request: web.Request):
    return request.app["context"]


def volume_json(store, name: str) -> Dict[str, Any]:
    path = os.path.join(store.path, "volumes", name)
    created = os.stat(path).st_mtime if os.path.exists(path) else time.time()
    return {
        "Name": name,
        "Driver": "local",
        "Mountpoint": path,
        "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "Labels": store.volume_labels(name),
        "Scope": "local",
        "Options": {},
    }


def volumes_in_use(context) -> Dict[str, List[str]]:
    """Volume name -> the containers (ids) whose config names it."""
    used: Dict[str, List[str]] = {}
    for record in context.containers.all():
        for mount in record.request.options.get("mounts") or ():
            if getattr(mount, "kind", None) is not None and mount.kind.value == "volume":
                used.setdefault(str(mount.source), []).append(record.id)
    return used


async def _list(request: web.Request) -> web.Response:
    store = _context(request).store()
    names = await asyncio.to_thread(store.volumes)
    wanted = filters_of(request).get("name")
    shown = [volume_json(store, n) for n in names if not wanted or any(w in n for w in wanted)]
    return json_response({"Volumes": shown, "Warnings": []})


async def _create(request: web.Request) -> web.Response:
    body = await json_body(request, required=False)
    name = body.get("Name") or secrets.token_hex(32)
    if not isinstance(name, str):
        raise ApiError(400, "Name: expected a string")
    driver = body.get("Driver") or ""
    if not isinstance(driver, str):
        raise ApiError(400, "Driver: expected a string")
    check_volume_driver(driver, name)
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ApiError(400, "Labels: expected an object of strings")
    store = _context(request).store()
    try:
        Mount.volume(name, "/v")  # the name checked as a container's mount checks it
        await asyncio.to_thread(store.volume, name, labels=labels)  # the daemon's own: containers idmap it
    except ConfigError as err:
        raise ApiError(400, f"create {name}: {err.message}") from None
    _context(request).events.emit("volume", "create", name, {"driver": "local"})
    return json_response(volume_json(store, name), 201)


async def _inspect(request: web.Request) -> web.Response:
    store = _context(request).store()
    name = request.match_info["name"]
    if name not in await asyncio.to_thread(store.volumes):
        raise ApiError(404, f"get {name}: no such volume")
    return json_response(volume_json(store, name))


async def _remove(request: web.Request) -> web.Response:
    context = _context(request)
    name = request.match_info["name"]
    users = volumes_in_use(context).get(name)
    if users:
        raise ApiError(409, f"remove {name}: volume is in use - [{', '.join(users)}]")
    try:
        await asyncio.to_thread(context.store().remove_volume, name)
    except ConfigError:
        if query_bool(request, "force"):
            return web.Response(status=204)
        raise ApiError(404, f"get {name}: no such volume") from None
    context.events.emit("volume", "destroy", name, {"driver": "local"})
    return web.Response(status=204)


async def _prune(request: web.Request) -> web.Response:
    context = _context(request)
    store = context.store()
    used = volumes_in_use(context)
    gone = []
    for name in await asyncio.to_thread(store.volumes):
        if name not in used:
            await asyncio.to_thread(store.remove_volume, name)
            gone.append(name)
    return json_response({"VolumesDeleted": gone, "SpaceReclaimed": 0})


ROUTES: List[Route] = [
    ("GET", "/volumes", _list),
    ("POST", "/volumes/create", _create),
    ("POST", "/volumes/prune", _prune),
    ("GET", "/volumes/{name}", _inspect),
    ("DELETE", "/volumes/{name}", _remove),
]
