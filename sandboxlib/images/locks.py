"""File locks shared by every process that uses a store (``flock``: the
kernel drops them when a holder dies, so a crash never leaves a store locked)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

__all__ = ["locked"]


@contextlib.contextmanager
def locked(path: str, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
    """Hold a shared or exclusive lock on ``path`` (created if needed).

    Yields True, or False when ``blocking`` is False and someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode if blocking else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
