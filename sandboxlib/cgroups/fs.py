"""Small file operations on cgroup directories: read a value, write one,
kill everything in a directory, remove a directory tree once it is empty."""

from __future__ import annotations

import errno
import os
import time
from typing import Dict, List, Optional

from ..posix.signals import kill_quietly

__all__ = ["read_text", "read_keys", "write", "kill_all", "remove_tree", "populated"]


def read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_keys(path: str) -> Dict[str, int]:
    """``key value`` lines (memory.events, pids.events, cpu.stat, ...) as a dict."""
    out: Dict[str, int] = {}
    for line in (read_text(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def write(path: str, value: str) -> None:
    """Write ``value`` to a cgroup file in one write(2), as the kernel wants it."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _procs(directory: str) -> List[int]:
    return [int(p) for p in (read_text(os.path.join(directory, "cgroup.procs")) or "").split()]


def _freeze_kill(directory: str) -> None:
    """cgroup v1: freeze (no process can fork meanwhile), SIGKILL all, thaw."""
    state = os.path.join(directory, "freezer.state")
    write(state, "FROZEN")
    deadline = time.monotonic() + 1.0
    while (read_text(state) or "").strip() == "FREEZING" and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        for pid in _procs(directory):
            kill_quietly(pid)
    finally:
        write(state, "THAWED")


def kill_all(directory: str) -> bool:
    """SIGKILL every process in the cgroup and below, without a race against
    fork: ``cgroup.kill`` (v2), else freeze-then-kill (v1 freezer).
    Returns False when the directory offers neither."""
    try:
        if os.path.exists(os.path.join(directory, "cgroup.kill")):
            write(os.path.join(directory, "cgroup.kill"), "1")
            return True
        if os.path.exists(os.path.join(directory, "freezer.state")):
            _freeze_kill(directory)
            return True
    except FileNotFoundError:
        return True  # already removed
    return False


def freeze(directory: str, frozen: bool) -> bool:
    """Freeze (or thaw) every process in the cgroup and below: ``cgroup.freeze``
    (v2), else the v1 freezer (waited for while FREEZING, up to a second).
    Returns False when the directory offers neither."""
    if os.path.exists(os.path.join(directory, "cgroup.freeze")):
        write(os.path.join(directory, "cgroup.freeze"), "1" if frozen else "0")
        return True
    state = os.path.join(directory, "freezer.state")
    if not os.path.exists(state):
        return False
    write(state, "FROZEN" if frozen else "THAWED")
    deadline = time.monotonic() + 1.0
    while frozen and (read_text(state) or "").strip() == "FREEZING" and time.monotonic() < deadline:
        time.sleep(0.001)
    return True


def populated(directory: str) -> bool:
    """Whether any process is still in the cgroup (or below it)."""
    events = read_keys(os.path.join(directory, "cgroup.events"))
    if "populated" in events:
        return events["populated"] == 1
    if _procs(directory):
        return True
    return any(entry.is_dir() and populated(entry.path) for entry in _subdirs(directory))


def _subdirs(directory: str) -> list:
    try:
        return [e for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def remove_tree(directory: str, deadline: float) -> bool:
    """rmdir the cgroup and its children, bottom up, retrying while processes
    are still leaving (EBUSY) until ``deadline``.  True once it is gone.
    Children are looked for only when the rmdir fails (a listing of a
    cgroup directory costs more than the rmdir)."""
    while True:
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno != errno.EBUSY:
                return False
        for entry in _subdirs(directory):
            remove_tree(entry.path, deadline)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
