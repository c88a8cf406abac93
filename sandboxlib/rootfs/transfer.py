"""Copying files into and out of a running container, from the host side.

Paths are resolved inside the container's root (``/proc/PID/root``) with
``openat2(RESOLVE_IN_ROOT)``: a symlink in the container is followed as the
container would follow it and never leads out of its root.  Archives are
unpacked with the images' hostile-input extractor; archives made of a tree
never follow a symlink (``images.trees``: iterative, whatever the depth).
Nothing of the container is executed or loaded on the host."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
import stat
import tarfile
from typing import BinaryIO, Callable, FrozenSet, Optional, Tuple

from ..images.trees import walk
from ..images.unpack import IdPolicy, unpack_into
from ..native.binding import open_in_root

__all__ = [
    "write_file",
    "make_dirs",
    "read_file",
    "put_archive",
    "get_archive",
    "write_archive",
    "export_root",
    "mount_points",
    "path_stat",
]


def write_file(root_fd: int, path: str, data: bytes, mode: int, policy: IdPolicy) -> None:
    """Write ``data`` to the regular file ``path`` (made, owned by the
    container's root, if missing).  Anything else there is refused before a
    byte is written or an attribute changed: a device the container binds
    from the host (its /dev, the masks) is the host's own inode, and a fifo
    would block."""
    try:
        fd, made = open_in_root(root_fd, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK), True
    except FileExistsError:
        fd, made = open_in_root(root_fd, path, os.O_WRONLY | os.O_NONBLOCK), False  # (a fifo without reader: ENXIO)
    try:
        _check_regular(fd, path)
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if made and policy.privileged:
            os.fchown(fd, *policy.owner(0, 0))
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _open_regular(root_fd: int, path: str) -> int:
    """An fd to read the regular file or directory ``path`` (never blocks on a fifo)."""
    fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISDIR(mode):
            _check_regular(fd, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a device, fifo or socket)", path)


def make_dirs(root_fd: int, path: str, policy: IdPolicy) -> None:
    """``mkdir -p path``: the missing directories made mode 0755, owned by
    the container's root; each parent is resolved inside the root again."""
    current = "/"
    for name in [part for part in path.split("/") if part]:
        parent = open_in_root(root_fd, current, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # a directory (or not: the next open says so, naming it)
        else:
            made = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                if policy.privileged:
                    os.fchown(made, *policy.owner(0, 0))
                os.fchmod(made, 0o755)  # whatever our umask
            finally:
                os.close(made)
        finally:
            os.close(parent)
        current = posixpath.join(current, name)


def read_file(root_fd: int, path: str) -> bytes:
    fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _check_regular(fd, path)  # (read() would name the fd, not the path; a device may never end)
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def put_archive(root_fd: int, path: str, data: bytes, policy: IdPolicy) -> None:
    fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        unpack_into(io.BytesIO(data), fd, policy, f"archive for {path}", whiteouts=False)
    finally:
        os.close(fd)


def get_archive(root_fd: int, path: str, policy: IdPolicy, mounts: FrozenSet[str] = frozenset()) -> bytes:
    """A tar of ``path`` (named by its last component; a final symlink resolved inside
    the root), the symlinks below it kept as symlinks;
    ``mounts``: the mount points below the root (relative to it), archived empty."""
    buf = io.BytesIO()
    write_archive(root_fd, path, buf, policy, mounts)
    return buf.getvalue()


def write_archive(root_fd: int, path: str, f: BinaryIO, policy: IdPolicy, mounts: FrozenSet[str]) -> None:
    """get_archive's tar written to ``f`` as it is made (a stream: never whole in memory)."""
    fd = _open_regular(root_fd, path)
    prefix = posixpath.normpath("/" + path).strip("/") + "/"
    below = frozenset(m[len(prefix) :] for m in mounts if m.startswith(prefix)) if prefix != "/" else mounts
    try:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            name = os.path.basename(path.rstrip("/")) or "."
            _add(tar, fd, name, policy, below.__contains__ if below else None)
    finally:
        os.close(fd)


def path_stat(root_fd: int, path: str) -> Tuple[os.stat_result, str]:
    """``path``'s stat, a final symlink not followed, and its target ("" for anything else)."""
    fd = open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        return st, os.readlink("", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
    finally:
        os.close(fd)


def export_root(root_fd: int, path: str, f: BinaryIO, policy: IdPolicy, mounts: FrozenSet[str]) -> None:
    """The whole root as a tar written to ``f`` (``docker export``: names
    relative to it); ``mounts`` (paths relative to the root) are the mount
    points in it, archived empty as dockerd's export has them (not /proc's,
    /dev's or a bind's contents)."""
    fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, fd, "", policy, mounts.__contains__)
    finally:
        os.close(fd)


def mount_points(mountinfo: str) -> FrozenSet[str]:
    """The mount points of a ``/proc/PID/mountinfo`` (relative to its root, the root itself left out)."""
    found = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]).strip("/")
            if point:
                found.add(point)
    return frozenset(found)


def _info(name: str, st: os.stat_result, policy: IdPolicy) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.uid, info.gid = _container_ids(st.st_uid, st.st_gid, policy)
    return info


def _container_ids(uid: int, gid: int, policy: IdPolicy) -> Tuple[int, int]:
    return policy.container_ids(uid, gid)


def _add(
    tar: tarfile.TarFile, fd: int, name: str, policy: IdPolicy, outside: Optional[Callable[[str], bool]] = None
) -> None:
    """Add the open file or directory ``fd`` and, for a directory, its tree
    (devices and sockets are not copied out); ``name`` "": its tree only.
    ``outside(path)``: a mount point, added empty."""
    st = os.fstat(fd)
    info = _info(name, st, policy)
    if stat.S_ISREG(st.st_mode):
        _add_file(tar, info, fd, st)
        return
    info.type = tarfile.DIRTYPE
    if name:
        tar.addfile(info)
    for entry in walk(fd, sort=True, outside=outside):
        mode = entry.st.st_mode
        if entry.leaving:
            continue
        child_info = _info(f"{name}/{entry.path}" if name else entry.path, entry.st, policy)
        if stat.S_ISDIR(mode):
            child_info.type = tarfile.DIRTYPE
        elif stat.S_ISREG(mode) and outside is not None and outside(entry.path):
            child_info.size = 0
        elif stat.S_ISREG(mode):
            # (O_NONBLOCK: the running container may have swapped in a fifo since the walk saw a file)
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            child = os.open(entry.name, flags, dir_fd=entry.parent_fd)
            try:
                child_st = os.fstat(child)
                if not stat.S_ISREG(child_st.st_mode):
                    continue
                os.set_blocking(child, True)
                _add_file(tar, child_info, child, child_st)
            finally:
                os.close(child)
            continue
        elif stat.S_ISLNK(mode):
            child_info.type, child_info.linkname = tarfile.SYMTYPE, os.readlink(entry.name, dir_fd=entry.parent_fd)
        elif stat.S_ISFIFO(mode):
            child_info.type = tarfile.FIFOTYPE
        else:
            continue
        tar.addfile(child_info)


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, fd: int, st: os.stat_result) -> None:
    info.size = st.st_size
    with os.fdopen(os.dup(fd), "rb") as f:
        tar.addfile(info, f)
