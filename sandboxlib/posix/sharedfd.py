"""An fd that several threads may use while another closes it.

Closing an fd that another thread is polling, reading or sending on is a
bug twice over: that thread gets ``EBADF``, or worse, the number is reused
by an unrelated ``open`` meanwhile and it waits on (or writes to) the wrong
file.  So a :class:`SharedFd` counts its users: ``close()`` marks it closed
(new users get ``ContainerStateError``), wakes the users (``wake``, e.g. a
socket shutdown: they see EOF), and the fd itself is closed exactly once,
when the last user has left."""

from __future__ import annotations

import socket
import threading
from typing import Callable, Generic, Optional, TypeVar

from ..errors import ContainerStateError

__all__ = ["SharedFd", "OwnedSocket"]

T = TypeVar("T")


class SharedFd(Generic[T]):
    """``handle`` (an fd, a socket, ...) released by ``release(handle)`` once
    closed and unused.  ``gone`` is the message of the error a user gets after close."""

    def __init__(self, handle: T, release: Callable[[T], None], gone: str) -> None:
        self._handle = handle
        self._release = release
        self._gone = gone
        self._users = 0
        self._waiting = 0  # threads in close(wait=True): notified when the last user leaves
        self._closed = False
        self._lock = threading.Lock()  # taken directly where nobody waits: no Python-level call
        # Made by the first close(wait=True): most handles never need one (a
        # Condition is 5 objects for the cycle collector, per command).
        self._idle: Optional[threading.Condition] = None

    @property
    def closed(self) -> bool:
        return self._closed

    def use(self, *, closed_ok: bool = False) -> _Use[T]:
        """The handle, kept open until the block ends.  Once closed: raises
        ContainerStateError, or with ``closed_ok`` gives None."""
        return _Use(self, closed_ok)

    def close(self, wake: Optional[Callable[[T], None]] = None, wait: bool = False) -> None:
        """No new users; ``wake`` the current ones (called while they hold it:
        the handle is still open).  With ``wait``, return once they left.
        Idempotent; the handle is released exactly once."""
        with self._lock:
            first = not self._closed
            self._closed = True
            if self._users:
                if first and wake is not None:
                    wake(self._handle)
                if wait:
                    if self._idle is None:
                        self._idle = threading.Condition(self._lock)
                    self._waiting += 1
                    while self._users:
                        self._idle.wait()
                    self._waiting -= 1
                if self._users:
                    return  # the last user releases it
            handle, self._handle = self._handle, None
        if handle is not None:
            self._release(handle)


class _Use(Generic[T]):
    """``with shared.use() as handle``: a class, not a generator (~6 per sb.run)."""

    __slots__ = ("_shared", "_closed_ok", "_entered")

    def __init__(self, shared: SharedFd[T], closed_ok: bool) -> None:
        self._shared = shared
        self._closed_ok = closed_ok
        self._entered = False

    def __enter__(self) -> T:  # (None only with closed_ok, which the callers' types say)
        shared = self._shared  # (its state used here directly: two Python calls fewer per use)
        with shared._lock:
            if shared._closed:
                if self._closed_ok:
                    return None  # type: ignore[return-value]
                raise ContainerStateError(shared._gone)
            shared._users += 1
            self._entered = True
            return shared._handle

    def __exit__(self, *exc: object) -> None:
        if not self._entered:
            return
        shared = self._shared
        with shared._lock:
            shared._users -= 1
            if shared._users or not shared._closed:
                return
            if shared._waiting:  # (a close(wait=True) releases nothing more: the handle is taken here)
                assert shared._idle is not None  # (made by the waiter)
                shared._idle.notify_all()
            handle, shared._handle = shared._handle, None
        if handle is not None:
            shared._release(handle)


class OwnedSocket(socket.socket):
    """A socket whose owner warns (``ResourceWarning``) when it was never
    closed: collected in the owner's garbage cycle, perhaps before the
    owner's own finalizer, it closes without a second warning of its own."""

    __slots__ = ()

    def __del__(self) -> None:
        self.close()
