"""Attach and exec start take the connection over, as dockerd does: an
``HTTP/1.1 101 UPGRADED`` (``Upgrade: tcp``; the Go CLI refuses a 200), then
the raw stream both ways: the command's output as multiplexed frames
``[stream, 0, 0, 0, size BE32]`` (1 stdout, 2 stderr; never empty), or raw
for a terminal; the client's bytes as the command's stdin.  A client's
half-close ends its stdin, not our output."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import struct
import termios
from typing import Callable, Optional

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
# docker-py (#3332) loses output that its read of the 101's headers takes in too
# (it parses them from a buffered file, then reads the raw socket).  On the UNIX
# socket the first frame waits until the client has read the whole 101: the
# kernel's count of our sent bytes not yet received (SIOCOUTQ) is 0.  Polled,
# from a loop turn up to POLL_MAX apart, at most FIRST_FRAME_WAIT in all (a
# client that reads nothing gets its output then).  Over TCP (the TLS front's
# socket pair shows only what the TLS thread read) the output is held back
# after the 101 instead: a millisecond, or for docker-py 20 ms.
POLL_MAX = 0.002
FIRST_FRAME_WAIT = 2.0
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
        self._sent_first: Optional[asyncio.Future] = None  # the wait before the first frame, shared
        self._upgraded_at = asyncio.get_running_loop().time()
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
        if self._sent_first is None:
            self._sent_first = asyncio.ensure_future(self._first_frame_wait())
        if not self._sent_first.done():  # every writer waits: another frame may overtake the first
            await asyncio.shield(self._sent_first)
        if self.gone.is_set():
            return
        self.transport.write(frame(stream, data) if self.multiplexed else data)  # type: ignore[union-attr]
        await self._drained.wait()

    async def _first_frame_wait(self) -> None:
        loop = asyncio.get_running_loop()
        unread = _unread_of(self.transport)
        if unread is None:
            docker_py = self._request.headers.get("User-Agent", "").startswith("docker-sdk-python")
            held = DOCKER_PY_DELAY if docker_py else FIRST_FRAME_DELAY
            await asyncio.sleep(max(0.0, self._upgraded_at + held - loop.time()))
            return
        deadline, pause = loop.time() + FIRST_FRAME_WAIT, 0.0
        while not self.gone.is_set() and loop.time() < deadline:
            if self.transport.get_write_buffer_size() == 0 and unread() == 0:  # type: ignore[union-attr]
                return
            await asyncio.sleep(pause)
            pause = min(POLL_MAX, pause * 2 or 0.0001)

    def close(self) -> None:
        """End the stream (the client sees EOF) and let aiohttp's side of the connection go."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        protocol = self._request.protocol
        if protocol is not None:
            asyncio.get_running_loop().call_soon(protocol.connection_lost, None)


def _unread_of(transport) -> Optional[Callable[[], int]]:
    """How many of our sent bytes the client has not read yet, for a client on
    the UNIX socket (None otherwise: a TCP connection's come through the TLS
    front's socket pair, which has no name; an accepted connection's socket is
    named by the listener's path)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX or not sock.getsockname():
        return None
    fd = sock.fileno()

    def unread() -> int:
        count = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.TIOCOUTQ, count)
        except OSError:
            return 0  # (gone: nothing to wait for)
        return count[0]

    return unread
