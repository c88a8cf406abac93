"""Deferring Ctrl-C over the few windows where it would lose a resource.

Between ``pid, pidfd = spawn(...)`` (or ``os.pipe2()``) returning and the
release being registered, a ``KeyboardInterrupt`` loses the values: a zombie
and fds leak.  Python raises ``KeyboardInterrupt`` only in the main thread,
from the handler of SIGINT, so blocking SIGINT in that thread over such a
window defers it: it is delivered, and raised, right after.  No handler is
installed (the host process is not ours); windows are short and never wait
for anything but the kernel.  A SIGINT sent to the process while another
thread of it has SIGINT unblocked is taken by that thread, and Python then
still raises in the main thread at once: that case is not covered."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["sigint_deferred"]


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Block SIGINT in the calling thread (the main thread only) until the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if signal.SIGINT not in old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
