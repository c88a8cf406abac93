"""A container's whole file system and its changes, running or stopped
(``filesystems.py``): ``export`` (``docker export``: a tar of the root) and
``changes`` (``docker diff``: its writable layer against its image)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import BinaryIO, Callable, Dict, List, Optional

from aiohttp import web

from ..aio.loop import readable
from ..errors import SandboxError
from .apierrors import ApiError, library_error
from .filesystems import files_of
from .server import Route, json_response
from .threads import in_thread

__all__ = ["ROUTES", "streamed_tar"]

LOG = logging.getLogger("sandboxlib.daemon")

CHUNK = 1 << 20


async def _export(request: web.Request) -> web.StreamResponse:
    context = request.app["context"]
    record = context.containers.get(request.match_info["id"])
    try:
        async with files_of(record) as box:
            response = await streamed_tar(request, box.sync.export)
    except SandboxError as err:
        raise library_error(err) from None
    except OSError as err:  # (a file the daemon may not read)
        raise ApiError(500, f"export of {record.name}: {err}") from None
    context.events.emit("container", "export", record.id, record.attributes())
    return response


async def streamed_tar(
    request: web.Request, write: Callable[[BinaryIO], None], headers: Optional[Dict[str, str]] = None
) -> web.StreamResponse:
    """``write(f)`` on a thread, into a pipe whose bytes go to the client as they come
    (as dockerd's: neither the daemon's memory nor its state directory holds a tar
    whose size the container decides: a sparse file of a terabyte).  An error
    before the first bytes is raised (a Docker-shaped answer); after them the
    connection is cut, the client's tar left short."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)

    def produce() -> None:
        with os.fdopen(writer, "wb") as f:
            write(f)

    produced = asyncio.ensure_future(in_thread(produce))
    try:
        first = await _chunk(reader)
        if not first:
            await produced  # (its error, if any, before an answer is sent)
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar", **(headers or {})})
        await response.prepare(request)
        data = first
        while data:
            await response.write(data)
            data = await _chunk(reader)
        try:
            await produced
        except Exception as err:  # noqa: BLE001  (the answer has begun: the connection is cut, the tar short)
            LOG.warning("%s: the tar ended early: %r", request.path, err)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
    finally:
        os.close(reader)  # (a writer still at work gets EPIPE and ends)
        with contextlib.suppress(BaseException):
            await produced


async def _chunk(fd: int) -> bytes:
    """The pipe's next bytes, b"" at its end (the writer closed it, ending or failing)."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            await readable(fd)


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
