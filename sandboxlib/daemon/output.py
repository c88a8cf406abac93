"""A container's output: ``logs`` (chunked frames; a ``follow`` ends with the
run) and ``attach`` (the taken-over connection: from a start on, or from
now; a ``-i``/``-t`` container's output as it comes and its stdin)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional

from aiohttp import web

from ..runtime.logs import log_time
from .apierrors import ApiError
from .containers import container_of
from .exec import DetachWatch, detach_keys
from .hijack import STDERR, STDOUT, Hijacked, frame
from .logstream import log_records
from .registry_of_containers import ContainerRecord
from .server import Route, flush_headers, query_bool

__all__ = ["ROUTES"]

_STREAMS = {"stdout": STDOUT, "stderr": STDERR}


def _wanted(request: web.Request) -> Dict[str, bool]:
    return {name: query_bool(request, name) for name in _STREAMS}


def _until(request: web.Request) -> Optional[str]:
    """``until`` (seconds since the epoch, as ``since``) as a record's time, which sorts as text."""
    text = request.query.get("until", "0")
    try:
        seconds = float(text)
    except ValueError:
        raise ApiError(400, f"invalid value for until: {text!r}") from None
    return log_time(int(seconds * 1_000_000_000)) if seconds > 0 else None


async def _logs(request: web.Request) -> web.StreamResponse:
    record = container_of(request)
    wanted = _wanted(request)
    if not any(wanted.values()):
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    if record.request.host_config["LogConfig"]["Type"] == "none":
        raise ApiError(501, "configured logging driver does not support reading")
    tail_text = request.query.get("tail", "all")
    try:
        tail = None if tail_text in ("all", "") else max(0, int(tail_text))
    except ValueError:
        raise ApiError(400, f"invalid value for tail: {tail_text!r}") from None
    since_text = request.query.get("since", "0")
    try:
        since = float(since_text) or None
    except ValueError:
        raise ApiError(400, f"invalid value for since: {since_text!r}") from None
    until = _until(request)
    tty = record.request.tty  # a terminal's output is one raw stream, as dockerd sends it
    kind = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
    response = web.StreamResponse(headers={"Content-Type": kind})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await flush_headers(response, request)
    options = {
        "follow": query_bool(request, "follow"),
        "tail": tail,
        "since": since,
        "timestamps": query_bool(request, "timestamps") or until is not None,
    }
    async for stream, data in log_records(record, **options):
        if until is not None:  # each record read with its time, which says whether it is shown
            stamp, _, rest = data.partition(b" ")
            if stamp.decode(errors="replace") > until:
                continue
            data = data if query_bool(request, "timestamps") else rest
        if wanted[stream]:
            await response.write(data if tty else frame(_STREAMS[stream], data))
    await response.write_eof()
    return response


async def _attach(request: web.Request) -> web.StreamResponse:
    """The main command's output from now on (``logs=1``: what it wrote before, first),
    over the taken-over connection; it ends when the run ends."""
    record = container_of(request)
    keys = detach_keys(request.query.get("detachKeys"))  # (a 400 before the upgrade)
    before = record.attempts, record.runs, record.running
    hijacked = await Hijacked.take(request, multiplexed=not record.request.tty)
    record.attached += 1  # (until it has read the run's output: an AutoRemove waits for it)
    try:
        if record.interactive is not None:
            await _attach_interactive(record, hijacked, request, keys)
        else:
            await _attach_to_log(record, hijacked, request, before)
    finally:
        hijacked.close()
        record.attached -= 1
        await record.notify()
    return web.Response()


async def _attach_to_log(record: ContainerRecord, hijacked: Hijacked, request: web.Request, before) -> None:
    attempts, runs, was_running = before
    wanted = _wanted(request)
    if query_bool(request, "logs"):
        async for name, data in log_records(record):
            if wanted[name]:
                await hijacked.write(_STREAMS[name], data)
    if not query_bool(request, "stream"):
        return
    gone = asyncio.ensure_future(hijacked.gone.wait())
    try:
        if was_running:
            options: Dict[str, Any] = {"follow": True, "tail": 0}
        else:  # attached before a start (docker run, docker start -a): from that start on
            started = asyncio.ensure_future(record.wait_for(lambda: record.attempts > attempts or record.removed))
            await asyncio.wait([started, gone], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            options = {"follow": True, "since": record.run_started}
        if not hijacked.gone.is_set() and (was_running or record.runs > runs):
            await _forward(record, hijacked, wanted, options, gone)
    finally:
        gone.cancel()


async def _attach_interactive(record: ContainerRecord, hijacked: Hijacked, request: web.Request, keys: bytes) -> None:
    """A ``-it`` (or ``-i``) container: its output as it comes, the client's bytes as its stdin
    (``StdinOnce``: the client's end of input is the command's; the detach keys, ctrl-p
    ctrl-q unless ``detachKeys`` says otherwise, end the attach and leave it running)."""
    interactive = record.interactive
    assert interactive is not None
    wanted = _wanted(request)
    queue = interactive.subscribe()
    feeding = None
    try:
        if query_bool(request, "logs"):
            async for name, data in log_records(record):
                if wanted[name]:
                    await hijacked.write(_STREAMS[name], data)
        if query_bool(request, "stdin") and record.request.open_stdin:
            feeding = asyncio.ensure_future(_feed(record, hijacked, DetachWatch(keys)))
        if not query_bool(request, "stream"):
            return
        gone = asyncio.ensure_future(hijacked.gone.wait())
        try:
            while True:
                getting = asyncio.ensure_future(queue.get())
                await asyncio.wait([getting, gone], return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    return
                chunk = getting.result()
                if chunk is None:
                    return
                if wanted[chunk[0]]:
                    await hijacked.write(_STREAMS[chunk[0]], chunk[1])
        finally:
            gone.cancel()
    finally:
        interactive.unsubscribe(queue)
        if feeding is not None:
            feeding.cancel()


async def _feed(record: ContainerRecord, hijacked: Hijacked, watch: DetachWatch) -> None:
    interactive = record.interactive
    assert interactive is not None
    await record.wait_for(lambda: interactive.process is not None or record.removed)  # (sent before the start)
    while data := await hijacked.input.read(65536):
        passed = watch.feed(data)
        if passed:
            await interactive.write(passed)
        if watch.detached:
            hijacked.close()  # (its loss ends the output's loop)
            return
    if record.request.body.get("StdinOnce"):
        interactive.close_stdin()


async def _forward(record: ContainerRecord, hijacked: Hijacked, wanted, options, gone: asyncio.Future) -> None:
    records = log_records(record, **options)
    try:
        while True:
            following = asyncio.ensure_future(records.__anext__())
            await asyncio.wait([following, gone], return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                return
            try:
                name, data = following.result()
            except StopAsyncIteration:
                return
            if wanted[name]:
                await hijacked.write(_STREAMS[name], data)
    finally:
        await records.aclose()


ROUTES: List[Route] = [
    ("POST", "/containers/{id}/attach", _attach),
    ("GET", "/containers/{id}/logs", _logs),
]
