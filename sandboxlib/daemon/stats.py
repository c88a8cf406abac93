"""``GET /containers/{id}/stats``: Docker's JSON from the container's
cgroup (``Container.stats()``), one-shot or every second."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Dict, List, Optional

import psutil
from aiohttp import web

from ..errors import SandboxError
from .apierrors import ApiError
from .registry_of_containers import ZERO_TIME, ContainerRecord, now_rfc3339
from .server import Route, flush_headers, json_response, query_bool
from .threads import in_thread

__all__ = ["ROUTES"]

INTERVAL = 1.0  # between two samples of a stream (Docker's)
ONE_SHOT_INTERVAL = 0.25  # between the two samples of stream=false, for a CPU percentage


def _system_cpu_ns() -> int:
    """All CPUs' time since boot, as Docker's system_cpu_usage (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return int(sum(int(v) for v in fields) * 1_000_000_000 / os.sysconf("SC_CLK_TCK"))


def _cpu(sample: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if sample is None:
        return {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
    return sample


async def _sample(record: ContainerRecord) -> Dict[str, Any]:
    try:
        stats = await in_thread(record.box.sync.stats)  # type: ignore[union-attr]
    except SandboxError as err:
        raise ApiError(409, str(err)) from None
    total = int(stats.cpu_seconds * 1e9)
    limit = record.request.options["limits"].memory if record.request.options.get("limits") else None
    return {
        "read": now_rfc3339(),
        "pids_stats": {"current": stats.pids},
        "cpu_stats": {
            "cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": total},
            "system_cpu_usage": _system_cpu_ns(),
            "online_cpus": os.cpu_count() or 1,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "memory_stats": {
            "usage": stats.memory_bytes,
            "max_usage": stats.memory_peak_bytes or 0,
            "limit": limit or psutil.virtual_memory().total,
            "stats": {},
        },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": stats.io_read_bytes or 0},
                {"major": 0, "minor": 0, "op": "write", "value": stats.io_write_bytes or 0},
            ]
        },
        "networks": {},
        "name": "/" + record.name,
        "id": record.id,
    }


def _stopped(record: ContainerRecord) -> Dict[str, Any]:
    return {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "cpu_stats": _cpu(None),
        "precpu_stats": _cpu(None),
        "memory_stats": {},
        "blkio_stats": {},
        "name": "/" + record.name,
        "id": record.id,
    }


async def _stats(request: web.Request) -> web.StreamResponse:
    record = request.app["context"].containers.get(request.match_info["id"])
    stream = query_bool(request, "stream", True)
    one_shot = query_bool(request, "one-shot")
    if not record.running and not stream:
        return json_response(_stopped(record))
    previous: Optional[Dict[str, Any]] = None
    if not stream:
        if not one_shot:
            previous = await _sample(record)
            await asyncio.sleep(ONE_SHOT_INTERVAL)
        current = await _sample(record)
        current["precpu_stats"] = _cpu(previous and previous["cpu_stats"])
        current["preread"] = previous["read"] if previous else ZERO_TIME
        return json_response(current)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await flush_headers(response, request)
    while record.running:
        started = time.monotonic()
        try:
            current = await _sample(record)
        except ApiError:
            break  # it stopped meanwhile
        current["precpu_stats"] = _cpu(previous and previous["cpu_stats"])
        current["preread"] = previous["read"] if previous else ZERO_TIME
        await response.write(json.dumps(current).encode() + b"\n")
        previous = current
        await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
    await response.write_eof()
    return response


ROUTES: List[Route] = [("GET", "/containers/{id}/stats", _stats)]
