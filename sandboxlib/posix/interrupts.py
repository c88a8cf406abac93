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

import signal

# The signal module's pthread_sigmask turns every signal of the returned mask
# into an enum member: a dozen Python calls, twice per command.  _signal's is
# the same call without that.
from _signal import pthread_sigmask as _sigmask

__all__ = ["sigint_deferred"]

_SIGINT_NUMBER = int(signal.SIGINT)
_SIGINT = {_SIGINT_NUMBER}


class sigint_deferred:  # a class, not a generator: entered ~6 times per sb.run
    """Block SIGINT in the calling thread until the block ends."""

    __slots__ = ("_unblock",)

    def __enter__(self) -> None:
        # In any thread: Python raises KeyboardInterrupt in the main thread
        # only, so elsewhere this is harmless, and cheaper than asking.
        self._unblock = _SIGINT_NUMBER not in _sigmask(signal.SIG_BLOCK, _SIGINT)

    def __exit__(self, *exc: object) -> None:
        if self._unblock:
            _sigmask(signal.SIG_UNBLOCK, _SIGINT)
