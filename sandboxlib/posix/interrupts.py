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

import _signal  # signal.pthread_sigmask's wrapper turns its answer into enums: ~4x the cost
import signal
import threading

__all__ = ["sigint_deferred"]

_SIGINT = {int(signal.SIGINT)}


class sigint_deferred:  # a class, not a generator: entered ~6 times per sb.run
    """Block SIGINT in the calling thread (the main thread only) until the block ends."""

    __slots__ = ("_unblock",)

    def __enter__(self) -> None:
        self._unblock = False
        if threading.get_ident() == threading.main_thread().ident:
            self._unblock = signal.SIGINT not in _signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)

    def __exit__(self, *exc: object) -> None:
        if self._unblock:
            _signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
