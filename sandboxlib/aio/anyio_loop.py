"""Waiting under another event loop than asyncio's (trio), through anyio: the
waits of ``loop.py``, one fd at a time (``anyio.wait_readable`` and
``wait_writable``), work in a thread through ``anyio.to_thread``, and the
pipes of a spawned command as StreamReader-like readers and writers.
Imported only when no asyncio loop runs: anyio is an extra
(``sandboxlib[anyio]``)."""

from __future__ import annotations

import asyncio
import math
import os
import selectors
import time
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Set, Tuple

try:
    import anyio
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError(
        "sandboxlib.aio runs on asyncio; under another event loop (trio) it needs anyio: "
        "pip install 'sandboxlib[anyio]'"
    ) from None

from ..errors import ContainerStateError
from ..posix.sharedfd import SharedFd
from ..runtime.launch import Outgoing

__all__ = ["readable", "writable", "readable_until", "readable_abortable", "run_in_thread", "Selector", "ControlSender"]

_CHUNK = 1 << 16


async def readable(fd: int) -> None:
    await anyio.wait_readable(fd)


async def writable(fd: int) -> None:
    await anyio.wait_writable(fd)


async def readable_until(fd: int, deadline: Optional[float]) -> bool:
    """True once ``fd`` is readable; False at the monotonic ``deadline``."""
    with anyio.move_on_after(math.inf if deadline is None else max(0.0, deadline - time.monotonic())):
        await anyio.wait_readable(fd)
        return True
    return False


async def readable_abortable(fd: int, on_wait: Callable[[Callable[[], None]], None]) -> None:
    """Wait until ``fd`` is readable; ``on_wait`` gets the function that ends the wait early."""
    with anyio.CancelScope() as scope:
        on_wait(scope.cancel)
        await anyio.wait_readable(fd)


async def run_in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a worker thread; a cancellation waits for it to end."""
    return await anyio.to_thread.run_sync(fn)


class Selector:
    """``loop.LoopSelector``'s interface: ``select`` waits for any registered fd."""

    def __init__(self) -> None:
        self._keys: Dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = self._keys[fd] = selectors.SelectorKey(fileobj, fd, events, data)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = next(fd for fd, key in self._keys.items() if key.fileobj is fileobj)
        return self._keys.pop(fd)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def get_map(self) -> Dict[int, selectors.SelectorKey]:
        return self._keys

    async def select(self, timeout: Optional[float]) -> List[Tuple[selectors.SelectorKey, int]]:
        ready: Dict[int, int] = {}
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            async with anyio.create_task_group() as group:
                for key in list(self._keys.values()):
                    for event in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                        if key.events & event:
                            group.start_soon(_ready, key.fd, event, ready, group.cancel_scope)
        return [(self._keys[fd], events) for fd, events in ready.items() if fd in self._keys]

    async def serve(self, service: Callable[[Any, selectors.SelectorKey, int], None], timeout: Optional[float]) -> None:
        """``LoopSelector.serve``: ``service`` each ready fd (returns after one round, or ``timeout``)."""
        for key, events in await self.select(timeout):
            if key.fd in self._keys:  # (not let go by an earlier one)
                service(self, key, events)

    def close(self) -> None:
        self._keys.clear()

    def __enter__(self) -> Selector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def _ready(fd: int, event: int, ready: Dict[int, int], scope: anyio.CancelScope) -> None:
    await (anyio.wait_readable if event == selectors.EVENT_READ else anyio.wait_writable)(fd)
    ready[fd] = ready.get(fd, 0) | event
    scope.cancel()


class ControlSender:
    """``loop.ControlSender`` here: requests sent in order, each waiting while the socket is full."""

    def __init__(self, channel: SharedFd) -> None:
        self._channel = channel
        self._lock = anyio.Lock()
        self._waits: Set[anyio.CancelScope] = set()
        self._closed = False

    def _try(self, outgoing: Outgoing) -> Optional[int]:
        """None once sent; else the fd to wait for."""
        with self._channel.use() as control:
            try:
                outgoing.send(control, block=False)
                return None
            except BlockingIOError:
                return control.fileno()

    def send_now(self, outgoing: Outgoing) -> bool:
        """Never at once here: ``send`` keeps the order under its lock."""
        return False

    async def send(self, outgoing: Outgoing) -> None:
        async with self._lock:
            while True:
                if self._closed:
                    raise ContainerStateError("the container closed before the command was sent")
                fd = self._try(outgoing)
                if fd is None:
                    return
                with anyio.CancelScope() as scope:
                    self._waits.add(scope)
                    try:
                        await anyio.wait_writable(fd)
                    finally:
                        self._waits.discard(scope)

    def close(self) -> None:
        """The container closes (before its fds): what waits to be sent fails."""
        self._closed = True
        for scope in list(self._waits):
            scope.cancel()


class PipeReader:
    """Our end of a command's stdout or stderr, read as ``asyncio.StreamReader``
    is: ``read``, ``readline``, ``readexactly``, ``readuntil``, ``at_eof``,
    ``async for line in reader``."""

    def __init__(self, pipe: BinaryIO) -> None:
        self._pipe = pipe
        self._buffer = bytearray()
        self._eof = False
        os.set_blocking(pipe.fileno(), False)

    async def _fill(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(self._pipe.fileno(), _CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self._pipe.fileno())
                continue
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
                self._pipe.close()
            return

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            while not self._eof:
                await self._fill()
            return self._take(len(self._buffer))
        if not self._buffer:
            await self._fill()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
            await self._fill()
        return self._take(end + len(separator))

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as err:
            return err.partial

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), n)
            await self._fill()
        return self._take(n)

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    def __aiter__(self) -> PipeReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def close(self) -> None:
        self._pipe.close()


class PipeWriter:
    """Our end of a command's stdin, written as ``asyncio.StreamWriter`` is:
    ``write`` (what does not fit now waits for ``drain``), ``await drain()``,
    ``close()`` (after ``drain``: what was not drained is dropped)."""

    def __init__(self, pipe: BinaryIO) -> None:
        self._pipe = pipe
        self._pending = bytearray()
        os.set_blocking(pipe.fileno(), False)

    def write(self, data: bytes) -> None:
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                del self._pending[: os.write(self._pipe.fileno(), self._pending)]
        except BlockingIOError:
            pass

    async def drain(self) -> None:
        while self._pending:
            await anyio.wait_writable(self._pipe.fileno())
            self._flush()

    def is_closing(self) -> bool:
        return self._pipe.closed

    def close(self) -> None:
        self._pipe.close()

    async def wait_closed(self) -> None:
        return None
