"""File descriptors a fork's child closes at once: a lock held by an open file
description (``flock``, OFD locks) is held for as long as any fd of it is open,
so a child of ``os.fork()`` (multiprocessing's workers, a caller's own fork)
would keep the lock held after its owner released it, and could release it
for the owner.  ``O_CLOEXEC`` covers only a child that execs.

The one piece of process state in the package (see docs/architecture.md): the
fds are this process's, and only a hook run at fork can know which they are."""

from __future__ import annotations

import os
import threading
from typing import Set

__all__ = ["open_fd", "close_fd"]

_guard = threading.Lock()  # (held across a fork: an fd is in _held from its open on)
_held: Set[int] = set()


def _close_in_child() -> None:
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()
    _guard.release()


os.register_at_fork(before=_guard.acquire, after_in_parent=_guard.release, after_in_child=_close_in_child)


def open_fd(path: str, flags: int) -> int:
    """``os.open(path, flags | O_CLOEXEC)``, an fd no fork's child will have."""
    with _guard:
        fd = os.open(path, flags | os.O_CLOEXEC)
        _held.add(fd)
    return fd


def close_fd(fd: int) -> None:
    """Close an fd of ``open_fd``; nothing in a fork's child (it was closed there, its number may be reused)."""
    with _guard:
        if fd in _held:
            _held.discard(fd)
            os.close(fd)
