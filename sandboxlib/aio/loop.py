"""Waiting on the event loop: fds through the loop's readers and writers,
the control socket's sends queued while it is full, the steps of a start
(``posix.steps``) awaited.  The sync front waits on the same fds with
poll(); what it does once they are ready is shared.  Under another event
loop (trio, through anyio) the same waits are ``anyio_loop``'s."""

from __future__ import annotations

import asyncio
import collections
import select
import selectors
import time
from typing import Any, Callable, Deque, Dict, Generator, List, Optional, Tuple

from ..errors import CallTimeout, ContainerStateError
from ..posix.sharedfd import SharedFd
from ..posix.steps import Offload, Steps
from ..runtime.launch import Outgoing

__all__ = [
    "asyncio_loop",
    "LoopSelector",
    "ControlSender",
    "StepDriver",
    "readable",
    "readable_until",
    "writable",
    "drive",
    "selector",
    "FdHub",
    "fd_hub",
    "control_sender",
    "new_lock",
    "in_thread",
]


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


def asyncio_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The running asyncio loop; None under another one (trio: ``anyio_loop``'s waits)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def selector(hub: Optional[FdHub] = None) -> Any:
    """A selector for ``Process.communicate``'s steps, of the running loop
    (its fds watched through ``hub``, when given: a container's)."""
    if hub is not None and hub.open:  # (a container's: of the loop it was started on, the one running)
        return LoopSelector(hub._loop, hub)
    loop = asyncio_loop()
    if loop is None:
        from . import anyio_loop

        return anyio_loop.Selector()
    return LoopSelector(loop)


def fd_hub() -> Optional[FdHub]:
    """An ``FdHub`` of the running asyncio loop (None under another loop)."""
    loop = asyncio_loop()
    return FdHub(loop) if loop is not None else None


class FdHub:
    """Many fds watched as one reader of the loop: an epoll of its own, whose
    fd the loop watches.  A container's commands register their pipes here:
    an ``epoll_ctl`` each, not the loop's per-fd bookkeeping (a handle, a
    context and two selector keys per fd, ~25 Python calls a registration),
    and one callback of the loop serves every fd that is ready."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll: Optional[select.epoll] = select.epoll()
        self._owners: Dict[int, Callable[[int, int], None]] = {}
        self._users = 0  # selectors using it: it closes once the last one has let go
        self._closing = False
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    @property
    def open(self) -> bool:
        return not self._closing

    def use(self) -> None:
        self._users += 1

    def let_go(self) -> None:
        self._users -= 1
        if self._closing and not self._users:
            self._shut()

    def add(self, fd: int, events: int, owner: Callable[[int, int], None]) -> None:
        """Call ``owner(fd, events)`` whenever ``fd`` is ready for ``events`` (selectors' EVENT_*)."""
        assert self._epoll is not None  # (open, or still serving what was added before close)
        read, write = events & selectors.EVENT_READ, events & selectors.EVENT_WRITE
        self._epoll.register(fd, (select.EPOLLIN if read else 0) | (select.EPOLLOUT if write else 0))
        self._owners[fd] = owner

    def remove(self, fd: int) -> None:
        if self._owners.pop(fd, None) is not None and self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # closed meanwhile: the kernel let go of it

    def _dispatch(self) -> None:
        assert self._epoll is not None  # (our reader is removed when it closes)
        for fd, mask in self._epoll.poll(0):
            owner = self._owners.get(fd)
            if owner is not None:
                read = selectors.EVENT_READ if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) else 0
                owner(fd, read | (selectors.EVENT_WRITE if mask & (select.EPOLLOUT | select.EPOLLERR) else 0))

    def close(self) -> None:
        """No new users; the epoll closes once the selectors still using it let go."""
        self._closing = True
        if not self._users:
            self._shut()

    def _shut(self) -> None:
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None


def control_sender(channel: SharedFd) -> Any:
    """A ``ControlSender`` of the running loop."""
    loop = asyncio_loop()
    if loop is None:
        from . import anyio_loop

        return anyio_loop.ControlSender(channel)
    return ControlSender(loop, channel)


def new_lock() -> Any:
    """A lock of the running loop's kind."""
    if asyncio_loop() is None:
        from . import anyio_loop  # (its ImportError says how to install anyio)

        return anyio_loop.anyio.Lock()
    return asyncio.Lock()


async def in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a worker thread (the loop's executor).  Cancelled, it still
    waits for the thread to end (what follows must not run beside it), then raises."""
    if asyncio_loop() is None:
        from . import anyio_loop

        return await anyio_loop.run_in_thread(fn)
    return await _offload(fn)


class LoopSelector:
    """The part of ``selectors.BaseSelector`` that ``Process.communicate``'s
    steps use (register, unregister, modify, get_map), over the loop's
    readers and writers; ``await select(timeout)`` in place of ``select``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hub: Optional[FdHub] = None) -> None:
        self._loop = loop
        self._hub = hub
        if hub is not None:
            hub.use()
        self._keys: Dict[int, selectors.SelectorKey] = {}
        self._ready: Dict[int, int] = {}  # fd -> the events seen
        self._waiter: Optional[asyncio.Future] = None
        self._service: Optional[Callable[[Any, selectors.SelectorKey, int], None]] = None  # while serve() runs
        self._error: Optional[BaseException] = None  # what the service raised

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if type(fileobj) is int else fileobj.fileno(), events, data)
        self._keys[key.fd] = key
        if self._hub is not None:
            self._hub.add(key.fd, events, self._on_ready)
            return key
        if events & selectors.EVENT_READ:
            self._loop.add_reader(key.fd, self._on_ready, key.fd, selectors.EVENT_READ)
        if events & selectors.EVENT_WRITE:
            self._loop.add_writer(key.fd, self._on_ready, key.fd, selectors.EVENT_WRITE)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        if fd < 0:  # closed meanwhile: its key has the number it had
            fd = next(key.fd for key in self._keys.values() if key.fileobj is fileobj)
        key = self._keys.pop(fd)
        self._ready.pop(key.fd, None)
        if self._hub is not None:
            self._hub.remove(key.fd)
            return key
        if key.events & selectors.EVENT_READ:
            self._loop.remove_reader(key.fd)
        if key.events & selectors.EVENT_WRITE:
            self._loop.remove_writer(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def get_map(self) -> Dict[int, selectors.SelectorKey]:
        return self._keys

    def _on_ready(self, fd: int, event: int) -> None:
        if self._service is None:
            self._ready[fd] = self._ready.get(fd, 0) | event
            self._wake()
            return
        key = self._keys.get(fd)
        if key is not None and self._error is None:
            try:
                self._service(self, key, event)
            except BaseException as err:  # noqa: BLE001 - raised by serve(), in the awaiting task
                self._error = err
        if not self._keys or self._error is not None:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def serve(self, service: Callable[[Any, selectors.SelectorKey, int], None], timeout: Optional[float]) -> None:
        """Call ``service(self, key, events)`` for each fd as it becomes ready,
        right in the loop's callback (no wake-up of the awaiting task per
        readiness), until no fd is left registered or ``timeout`` seconds
        passed; what ``service`` raises is raised here."""
        self._service = service
        try:
            if self._ready:  # (seen by an earlier select)
                ready, self._ready = self._ready, {}
                for fd, events in ready.items():
                    self._on_ready(fd, events)
            if self._keys and self._error is None:
                waiter = self._waiter = self._loop.create_future()
                timer = self._loop.call_later(timeout, _wake, waiter) if timeout is not None else None
                try:
                    await waiter
                finally:
                    self._waiter = None
                    if timer is not None:
                        timer.cancel()
        finally:
            self._service = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def select(self, timeout: Optional[float]) -> List[Tuple[selectors.SelectorKey, int]]:
        """The ready keys (as ``select`` gives them); [] after ``timeout`` seconds."""
        if not self._ready:
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _wake, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        ready, self._ready = self._ready, {}
        return [(self._keys[fd], events) for fd, events in ready.items() if fd in self._keys]

    def close(self) -> None:
        for key in list(self._keys.values()):
            self.unregister(key.fileobj)
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.let_go()

    def __enter__(self) -> LoopSelector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def readable(sock: Any) -> None:
    """Return once ``sock`` (a socket or an fd) is readable."""
    loop = asyncio_loop()
    fd = _fd(sock)
    if loop is None:
        from . import anyio_loop

        return await anyio_loop.readable(fd)
    waiter = loop.create_future()
    loop.add_reader(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


async def writable(fd: int) -> None:
    """Return once ``fd`` is writable."""
    loop = asyncio_loop()
    if loop is None:
        from . import anyio_loop

        return await anyio_loop.writable(fd)
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


async def readable_until(fd: int, deadline: Optional[float]) -> bool:
    """Wait until ``fd`` is readable (True) or the monotonic ``deadline`` passed (False)."""
    loop = asyncio_loop()
    if loop is None:
        from . import anyio_loop

        return await anyio_loop.readable_until(fd, deadline)
    waiter = loop.create_future()
    loop.add_reader(fd, _settle, waiter, True)
    timer = (
        loop.call_later(max(0.0, deadline - time.monotonic()), _settle, waiter, False) if deadline is not None else None
    )
    try:
        return await waiter
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


def _settle(waiter: asyncio.Future, value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


async def drive(steps: Generator[Optional[float], None, Any], fd: int) -> Any:
    """Run steps that wait for ``fd`` (``CallServer.steps``) on the loop:
    each yielded deadline is awaited; past it CallTimeout(0) is thrown in,
    and so is a cancellation (the steps end what they started, then it goes on)."""
    try:
        deadline = next(steps)
        while True:
            try:
                ready = await readable_until(fd, deadline)
            except BaseException as err:  # cancelled: the steps clean up and re-raise it
                deadline = steps.throw(err)
                continue
            deadline = steps.send(None) if ready else steps.throw(CallTimeout(0))
    except StopIteration as done:
        return done.value


class StepDriver:
    """Runs steps (``posix.steps``: a container's start, a command's start)
    on the loop: each fd is one of the loop's readers, each offload runs in
    the loop's default executor.  Whatever ends a wait (a cancellation,
    ``abort``) is thrown into the steps, which clean up and raise it."""

    def __init__(self) -> None:
        self._wake: Optional[Callable[[], None]] = None  # ends the current wait
        self._aborted: Optional[BaseException] = None

    async def run(self, steps: Steps) -> Any:
        value: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                need = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as done:
                return done.value
            value = error = None
            try:
                if self._aborted is None:
                    value = await (in_thread(need.fn) if isinstance(need, Offload) else self._readable(need))
                if self._aborted is not None:
                    raise self._aborted
            except BaseException as err:  # noqa: BLE001 - thrown in: the steps clean up, then raise it
                error = err

    async def _readable(self, fd: int) -> None:
        loop = asyncio_loop()
        try:
            if loop is None:
                from . import anyio_loop

                await anyio_loop.readable_abortable(fd, self._on_wait)
                return
            waiter = loop.create_future()
            self._wake = lambda: _wake(waiter)
            loop.add_reader(fd, _wake, waiter)
            try:
                await waiter
            finally:
                loop.remove_reader(fd)
        finally:
            self._wake = None

    def _on_wait(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def abort(self, error: BaseException) -> None:
        """End the steps with ``error`` at their current wait (an offload first runs to its end)."""
        self._aborted = error
        if self._wake is not None:
            self._wake()


async def _offload(fn: Any) -> Any:
    """``fn()`` in the loop's executor.  Cancelled, it still waits for the
    thread to end (the steps' cleanup must not run beside it), then raises."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                pass  # (one cancellation is raised below)
        if not future.cancelled():
            future.exception()  # (retrieved: the cancellation is what goes on)
        raise


class ControlSender:
    """Sends requests on a container's control socket without blocking the
    loop: straight away while it has room, else queued in order and sent
    by a writer callback as the init reads them (one writer per fd and loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: SharedFd) -> None:
        self._loop = loop
        self._channel = channel
        self._queue: Deque[Tuple[Outgoing, asyncio.Future]] = collections.deque()
        self._fd: Optional[int] = None  # while our writer is armed

    def _try(self, outgoing: Outgoing) -> bool:
        """Send now if there is room (raises ContainerStateError once the container is gone)."""
        with self._channel.use() as control:
            try:
                outgoing.send(control, block=False)
            except BlockingIOError:
                if self._fd is None:
                    self._fd = control.fileno()
                    self._loop.add_writer(self._fd, self._on_writable)
                return False
        return True

    def send_now(self, outgoing: Outgoing) -> bool:
        """Send ``outgoing`` at once if nothing is queued and there is room
        (True); else ``await send(outgoing)``.  (Most sends: no coroutine.)"""
        return not self._queue and self._try(outgoing)

    async def send(self, outgoing: Outgoing) -> None:
        """Send ``outgoing`` (its ``sent`` says whether it went, whatever is raised)."""
        if self.send_now(outgoing):
            return
        future = self._loop.create_future()
        self._queue.append((outgoing, future))
        if self._fd is None:  # (armed by _try unless the queue was busy)
            self._on_writable()
        await future

    def _on_writable(self) -> None:
        while self._queue:
            outgoing, future = self._queue[0]
            if future.done():  # its task was cancelled: not sent
                self._queue.popleft()
                continue
            try:
                if not self._try(outgoing):
                    return
            except BaseException as err:  # (ContainerStateError: the container is gone)
                self._queue.popleft()
                future.set_exception(err)
                continue
            self._queue.popleft()
            future.set_result(None)
        self._disarm()

    def _disarm(self) -> None:
        if self._fd is not None:
            self._loop.remove_writer(self._fd)
            self._fd = None

    def close(self) -> None:
        """The container closes: what is still queued fails."""
        self._disarm()
        while self._queue:
            _outgoing, future = self._queue.popleft()
            if not future.done():
                future.set_exception(ContainerStateError("the container closed before the command was sent"))
