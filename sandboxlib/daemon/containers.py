"""The container endpoints: create, list, prune, inspect, start, stop,
restart, kill, pause, unpause, wait, remove, rename, resize, top (their
output: ``output.py``)."""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Dict, List, Optional

from aiohttp import web

from ..errors import ConfigError, SandboxError
from ..runtime.container import HELPER_NAMES
from .apierrors import ApiError, library_error
from .create_config import parse_create, with_update, with_volumes_from
from .inspect import container_json, container_summary, docker_state
from .registry_of_containers import ContainerRecord
from .server import Route, flush_headers, json_body, json_response, query_bool, query_int
from .threads import in_thread

__all__ = ["ROUTES", "container_of", "filters_of", "parse_signal"]


def _context(request: web.Request):
    return request.app["context"]


def container_of(request: web.Request) -> ContainerRecord:
    return _context(request).containers.get(request.match_info["id"])


def parse_signal(text: Optional[str], default: int) -> int:
    if not text:
        return default
    if text.isdigit():
        return int(text)
    name = text.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise ApiError(400, f"Invalid signal: {text}") from None


def filters_of(request: web.Request) -> Dict[str, List[str]]:
    text = request.query.get("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ApiError(400, f"invalid filters: {err}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid filters: expected an object")
    return {k: list(v) if isinstance(v, (list, dict)) else [str(v)] for k, v in raw.items()}


# -- create, list, inspect -----------------------------------------------------------
async def _create(request: web.Request) -> web.Response:
    context = _context(request)
    body = await json_body(request)
    name = request.query.get("name") or None
    image_ref = body.get("Image")
    if not isinstance(image_ref, str) or not image_ref:
        raise ApiError(400, "Config cannot be empty in order to create a container" if not body else "Image: required")
    image = await context.image(image_ref)
    parsed = parse_create(body, image, context.store_path, context.default_network)
    parsed = with_volumes_from(parsed, lambda name: context.containers.get(name).request.options["mounts"])
    record = context.containers.create(name, image_ref, image.id, parsed)
    return json_response({"Id": record.id, "Warnings": []}, 201)


def _matches(record: ContainerRecord, filters: Dict[str, List[str]]) -> bool:
    for key, wanted in filters.items():
        if key == "id":
            ok = any(record.id.startswith(w) for w in wanted)
        elif key == "name":
            ok = any(w.lstrip("/") in record.name for w in wanted)
        elif key == "status":
            ok = docker_state(record) in wanted
        elif key == "label":
            labels = record.request.body.get("Labels") or {}
            ok = all(
                (labels.get(w.partition("=")[0]) == w.partition("=")[2]) if "=" in w else w in labels for w in wanted
            )
        elif key == "ancestor":
            ok = any(w in (record.image, record.image_id) for w in wanted)
        elif key == "exited":
            ok = record.state == "exited" and str(record.exit_code) in wanted
        else:
            raise ApiError(400, f"invalid filter '{key}'")
        if not ok:
            return False
    return True


async def _list(request: web.Request) -> web.Response:
    everything = query_bool(request, "all")
    limit = query_int(request, "limit", -1) or -1
    filters = filters_of(request)
    records = [
        r
        for r in _context(request).containers.all()
        if (everything or r.running or "status" in filters) and _matches(r, filters)
    ]
    if limit > 0:
        records = records[:limit]
    containers = _context(request).containers
    return json_response([container_summary(r, containers.link_names(r)) for r in records])


async def _inspect(request: web.Request) -> web.Response:
    record = container_of(request)
    children = _context(request).containers.children(record)
    return json_response(container_json(record, [f"/{c.name}:/{record.name}/{alias}" for alias, c in children]))


# -- runs ----------------------------------------------------------------------------
async def _start(request: web.Request) -> web.Response:
    record = container_of(request)
    try:
        await _context(request).containers.start(record)
    except ApiError as err:
        if err.status == 304:
            return web.Response(status=304)
        raise
    return web.Response(status=204)


def _timeout(request: web.Request) -> Optional[float]:
    value = query_int(request, "t")
    if value is None:
        value = query_int(request, "timeout")
    return None if value is None else float(value)


async def _stop(request: web.Request) -> web.Response:
    record = container_of(request)
    try:
        await _context(request).containers.stop(record, _timeout(request))
    except ApiError as err:
        if err.status == 304:
            return web.Response(status=304)
        raise
    return web.Response(status=204)


async def _restart(request: web.Request) -> web.Response:
    containers = _context(request).containers
    record = container_of(request)
    if record.running:
        await containers.stop(record, _timeout(request))
    await containers.start(record)
    containers.events.emit("container", "restart", record.id, record.attributes())
    return web.Response(status=204)


async def _kill(request: web.Request) -> web.Response:
    record = container_of(request)
    sig = parse_signal(request.query.get("signal"), signal.SIGKILL)
    await _context(request).containers.kill(record, sig)
    _context(request).containers.events.emit(
        "container", "kill", record.id, {**record.attributes(), "signal": str(sig)}
    )
    return web.Response(status=204)


async def _pause(request: web.Request) -> web.Response:
    await _context(request).containers.pause(container_of(request))
    return web.Response(status=204)


async def _unpause(request: web.Request) -> web.Response:
    await _context(request).containers.unpause(container_of(request))
    return web.Response(status=204)


async def _remove(request: web.Request) -> web.Response:
    context = _context(request)
    if query_bool(request, "link"):  # (only the link PARENT/ALIAS goes)
        context.containers.remove_link(request.match_info["id"])
        return web.Response(status=204)
    record = container_of(request)
    await context.containers.remove(record, force=query_bool(request, "force"))
    if query_bool(request, "v"):  # its anonymous volumes, unless another container mounts one
        used = {
            str(m.source)
            for other in context.containers.all()
            for m in other.request.options.get("mounts") or ()
            if m.kind.value == "volume"
        }
        for name in record.request.anonymous_volumes:
            if name not in used:
                with contextlib.suppress(ConfigError):  # (never made: the container never started)
                    await in_thread(context.store().remove_volume, name)
    return web.Response(status=204)


async def _prune(request: web.Request) -> web.Response:
    """Remove every container that is not running (filters: label, until)."""
    containers = _context(request).containers
    filters = filters_of(request)
    until = filters.pop("until", None)
    gone = []
    freed = 0  # the writable layers' bytes
    for record in containers.all():
        if record.running or record.state in ("restarting", "removing") or not _matches(record, filters):
            continue
        if until and record.created > until[0]:
            continue
        layer = record.layer
        freed += await in_thread(layer.size) if layer is not None else 0
        await containers.remove(record, force=False)
        gone.append(record.id)
    return json_response({"ContainersDeleted": gone or None, "SpaceReclaimed": freed})


async def _rename(request: web.Request) -> web.Response:
    name = request.query.get("name")
    if not name:
        raise ApiError(400, "name: required")
    _context(request).containers.rename(container_of(request), name)
    return web.Response(status=204)


async def _update(request: web.Request) -> web.Response:
    record = container_of(request)
    updated = with_update(record.request, await json_body(request))
    limits = updated.options.get("limits")
    if record.box is not None and record.running and limits != record.request.options.get("limits"):
        try:
            await in_thread(record.box.sync.update_limits, limits)
        except SandboxError as err:
            raise library_error(err) from None
    record.request = updated  # (the next start's limits too)
    return json_response({"Warnings": []})


async def _resize(request: web.Request) -> web.Response:
    record = container_of(request)
    rows, cols = query_int(request, "h", 0), query_int(request, "w", 0)
    if record.interactive is not None and rows and cols:
        record.interactive.resize(rows, cols)
    return web.Response(status=200)


async def _wait(request: web.Request) -> web.StreamResponse:
    """Headers at once, ``{"Error": null, "StatusCode": N}`` when the condition holds."""
    record = container_of(request)
    condition = request.query.get("condition") or "not-running"
    if condition == "next-exit":
        target = record.exits + 1

        def holds() -> bool:
            return record.exits >= target or record.removed
    elif condition == "removed":

        def holds() -> bool:
            return record.removed
    elif condition == "not-running":
        ended = record.exits + 1  # as dockerd: an exit a restart policy follows releases the wait too

        def holds() -> bool:
            return record.removed or record.exits >= ended or record.state not in ("running", "paused", "restarting")
    else:
        raise ApiError(400, f"invalid condition: {condition!r}")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await flush_headers(response, request)
    await record.wait_for(holds)
    await response.write(json.dumps({"Error": None, "StatusCode": record.exit_code}).encode() + b"\n")
    await response.write_eof()
    return response


# -- processes -----------------------------------------------------------------------
async def _top(request: web.Request) -> web.Response:
    record = container_of(request)
    if not record.running or record.box is None:
        raise ApiError(409, f"Container {record.id} is not running")
    try:
        processes = await in_thread(record.box.sync.top)
    except SandboxError as err:
        raise library_error(err) from None
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    rows = [
        [str(p.uid), str(p.pid), str(p.ppid), "0", "", "?", _cpu_time(p.cpu_seconds), " ".join(p.cmdline) or p.name]
        for p in processes[1:]  # (the first is the library's init: not the container's, as dockerd's shim)
        if p.name not in HELPER_NAMES  # (nor are its helpers)
    ]
    return json_response({"Titles": titles, "Processes": rows})


def _cpu_time(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


ROUTES: List[Route] = [
    ("POST", "/containers/create", _create),
    ("GET", "/containers/json", _list),
    ("POST", "/containers/prune", _prune),
    ("GET", "/containers/{id}/json", _inspect),
    ("POST", "/containers/{id}/start", _start),
    ("POST", "/containers/{id}/stop", _stop),
    ("POST", "/containers/{id}/restart", _restart),
    ("POST", "/containers/{id}/kill", _kill),
    ("POST", "/containers/{id}/wait", _wait),
    ("DELETE", "/containers/{id}", _remove),
    ("POST", "/containers/{id}/rename", _rename),
    ("POST", "/containers/{id}/update", _update),
    ("POST", "/containers/{id}/pause", _pause),
    ("POST", "/containers/{id}/unpause", _unpause),
    ("POST", "/containers/{id}/resize", _resize),
    ("GET", "/containers/{id}/top", _top),
]
