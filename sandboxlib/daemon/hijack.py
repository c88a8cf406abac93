"""Attach and exec start take the connection over, as dockerd does: an
``HTTP/1.1 101 UPGRADED`` (``Upgrade: tcp``; the Go CLI refuses a 200), then
the raw stream both ways: the command's output as multiplexed frames
``[stream, 0, 0, 0, size BE32]`` (1 stdout, 2 stderr; never empty), or raw
for a terminal; the client's bytes as the command's stdin.  A client's
half-close ends its stdin, not our output."""

from __future__ import annotations

import asyncio
import struct
from typing import Optional

from aiohttp import web

__all__ = ["Hijacked", "STDOUT", "STDERR", "frame"]

STDOUT, STDERR = 1, 2
_UPGRADED = (
    b"HTTP/1.1 101 UPGRADED\r\n"
    b"Content-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: tcp\r\n\r\n"
)
# Without an Upgrade header dockerd answers 200 and streams until it closes.
_PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: close\r\n\r\n"
# docker-py (#3332) loses output that its read of the 101's headers takes in too: the
# output is held back after the 101, a millisecond (what a client on an idle machine
# needs) or, for docker-py itself, 20 ms (its read comes later on a loaded machine).
FIRST_FRAME_DELAY = 0.001
DOCKER_PY_DELAY = 0.02


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class _Feeder:
    """What aiohttp had buffered after the request (the client's first stdin bytes)."""

    def __init__(self, hijacked: Hijacked) -> None:
        self._hijacked = hijacked

    def feed_data(self, data: bytes):
        self._hijacked.data_received(data)
        return False, b""

    def feed_eof(self) -> None:
        self._hijacked.eof_received()


class Hijacked(asyncio.Protocol):
    """The connection of one attach or exec start, ours from its 101 on."""

    def __init__(self, request: web.Request, multiplexed: bool) -> None:
        self._request = request
        self.transport = request.transport
        self.multiplexed = multiplexed
        self.input: asyncio.StreamReader = asyncio.StreamReader()
        self.gone = asyncio.Event()  # the client has disconnected
        docker_py = request.headers.get("User-Agent", "").startswith("docker-sdk-python")
        self._held_until = asyncio.get_running_loop().time() + (DOCKER_PY_DELAY if docker_py else FIRST_FRAME_DELAY)
        self._drained = asyncio.Event()
        self._drained.set()

    @classmethod
    async def take(cls, request: web.Request, *, multiplexed: bool) -> Hijacked:
        transport, protocol = request.transport, request.protocol
        assert transport is not None and protocol is not None
        hijacked = cls(request, multiplexed)
        upgrade = "upgrade" in request.headers.get("Connection", "").lower()
        transport.write(_UPGRADED if upgrade else _PLAIN)
        if upgrade:
            protocol.set_parser(_Feeder(hijacked))  # type: ignore[arg-type]  # (its buffered tail)
        transport.set_protocol(hijacked)  # from here on its bytes, EOF and loss are ours
        if transport.is_closing():
            hijacked.gone.set()
        return hijacked

    # -- asyncio.Protocol --------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.input.feed_data(data)

    def eof_received(self) -> bool:
        self.input.feed_eof()
        return True  # a half-close: keep writing

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.input.at_eof():
            self.input.feed_eof()
        self.gone.set()
        self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    # -- writing -----------------------------------------------------------------------
    async def write(self, stream: int, data: bytes) -> None:
        if not data or self.gone.is_set():
            return
        if self._held_until > 0:  # every frame, not only the first one written: another may overtake it
            delay = self._held_until - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self._held_until = 0.0
        self.transport.write(frame(stream, data) if self.multiplexed else data)  # type: ignore[union-attr]
        await self._drained.wait()

    def close(self) -> None:
        """End the stream (the client sees EOF) and let aiohttp's side of the connection go."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        protocol = self._request.protocol
        if protocol is not None:
            asyncio.get_running_loop().call_soon(protocol.connection_lost, None)
