"""The mount points a root directory (``rootfs=``, ``--rootfs``) lacks: made
by the caller before the container starts, as Docker does, or all reported
at once.

The container's root cannot make them itself when the directory belongs to
someone else (as root, the container's root is an unprivileged host id), and
it would stop at the first.  The caller makes them instead, resolved inside
the directory (a symlink in it never leads a mkdir onto the host)."""

from __future__ import annotations

import errno
import os
from typing import List, Sequence, Tuple

from ..errors import ConfigError
from ..native import binding
from ..native.binding import MountFlag as F
from ..native.binding import MountKind as K
from ..native.mount_op import MountOp

__all__ = ["make_mount_points"]

# Ops that make their target themselves (a symlink) or skip a missing one.
_NO_POINT = (K.SYMLINK, K.LOWER, K.OVERLAY)


def _points(ops: Sequence[MountOp]) -> List[Tuple[str, bool]]:
    """(target, is_file) of every system op whose target lies in the directory
    itself, not inside a mount an earlier op makes (those are the container's).
    The user's mount points the child makes, as before: it checks where each
    lands first (csrc/mounts.c, check_user_target)."""
    mounted: List[str] = []
    points = []
    for op in ops:
        inside = any(op.target.startswith(m.rstrip("/") + "/") for m in mounted)
        if op.kind not in _NO_POINT and not op.flags & (F.OPTIONAL | F.USER) and not inside and op.target != "/":
            points.append((op.target, bool(op.flags & F.FILE)))
        if op.kind not in (K.MKDIR, K.SYMLINK, K.REMOUNT, K.MASK):
            mounted.append(op.target)
    return points


def _missing(root_fd: int, path: str) -> bool:
    try:
        os.close(binding.open_in_root(root_fd, path, os.O_PATH))
        return False
    except FileNotFoundError:
        return True


def _make(root_fd: int, path: str, is_file: bool) -> None:
    """mkdir -p path (its last part an empty file with is_file), resolved in the root."""
    parts = [p for p in path.split("/") if p]
    depth = len(parts)
    while depth > 0 and _missing(root_fd, "/" + "/".join(parts[: depth - 1])):
        depth -= 1  # the deepest existing parent: parts[:depth - 1]
    parent = binding.open_in_root(root_fd, "/" + "/".join(parts[: depth - 1]), os.O_PATH | os.O_DIRECTORY)
    try:
        for i in range(depth - 1, len(parts)):
            name, last = parts[i], i == len(parts) - 1
            if last and is_file:
                os.close(
                    os.open(
                        name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
                    )
                )
                return
            os.mkdir(name, 0o755, dir_fd=parent)
            child = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            os.close(parent)
            parent = child
    finally:
        os.close(parent)


def make_mount_points(rootfs: str, ops: Sequence[MountOp]) -> List[str]:
    """Make the mount points ``rootfs`` lacks (what it made); a ConfigError
    naming every one that the caller may not make."""
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    made, refused = [], []
    try:
        for target, is_file in _points(ops):
            if not _missing(root_fd, target):
                continue
            try:
                _make(root_fd, target, is_file)
                made.append(target)
            except OSError as err:
                refused.append(f"{target} ({os.strerror(err.errno or errno.EIO)})")
    finally:
        os.close(root_fd)
    if refused:
        raise ConfigError(
            "rootfs",
            f"{rootfs!r} lacks mount points the container needs, and you may not make "
            f"them: {', '.join(refused)}; make them (mkdir) or use a directory you "
            f"may write",
        )
    return made
