"""Signalling a process that may be gone already (ESRCH is not an error here)."""

from __future__ import annotations

import os
import signal

__all__ = ["kill_quietly", "pidfd_kill_quietly"]


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    """``kill(pid, sig)``, ignoring a process that is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def pidfd_kill_quietly(pidfd: int, sig: int = signal.SIGKILL) -> None:
    """``pidfd_send_signal(pidfd, sig)``, ignoring a process that is gone (no pid reuse: a pidfd)."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
