"""A directory per running container, so that whatever a SIGKILLed host
process left behind is found and removed by the next one that starts a
container.  Each entry records who owns it (pid + start time, so a reused
pid is not mistaken for the owner) and its init."""
from __future__ import annotations

import os
import shutil
import signal
from typing import Optional, Tuple

__all__ = ["state_root", "register", "unregister", "sweep"]


def state_root() -> str:
    """$SANDBOXLIB_RUN, else /run/sandboxlib as root, else $XDG_RUNTIME_DIR/sandboxlib
    or /tmp/sandboxlib-UID."""
    explicit = os.environ.get("SANDBOXLIB_RUN")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/sandboxlib"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "sandboxlib")
    return f"/tmp/sandboxlib-{os.geteuid()}"


def _start_time(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _ensure_root(root: str) -> None:
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"state directory {root} must be owned by uid {os.geteuid()} with mode 0700")


def register(root: str, container_id: str, init_pid: int) -> str:
    _ensure_root(root)
    path = os.path.join(root, container_id)
    os.mkdir(path, 0o700)
    me = os.getpid()
    with open(os.path.join(path, "owner"), "w") as f:
        f.write(f"{me} {_start_time(me)} {init_pid} {_start_time(init_pid)}\n")
    return path


def unregister(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _read_owner(path: str) -> Optional[Tuple[int, Optional[int], int, Optional[int]]]:
    try:
        with open(os.path.join(path, "owner")) as f:
            owner, owner_start, init, init_start = f.read().split()
        return int(owner), int(owner_start), int(init), int(init_start)
    except (OSError, ValueError):
        return None


def sweep(root: str) -> int:
    """Remove entries whose owner process is gone, killing a leftover init.
    Returns how many were removed."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(root, name)
        record = _read_owner(path)
        if record is None:
            # Being written right now, or garbage: only remove when old.
            continue
        owner, owner_start, init, init_start = record
        if _start_time(owner) == owner_start:
            continue
        if init_start is not None and _start_time(init) == init_start:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unregister(path)
        removed += 1
    return removed
