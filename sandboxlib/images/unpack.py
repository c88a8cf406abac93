"""Layer extraction for hostile input.

Every entry is created through directory file descriptors opened one
component at a time with ``O_NOFOLLOW``, starting at the layer directory:
nothing is ever looked up through a symlink, so no name (``..``, absolute,
under a symlinked parent, a symlink chain, a hard link to elsewhere) can reach
outside the layer.  ``tarfile`` only parses headers here; its extraction
(whose filters were bypassable, CVE-2025-4517) is never used.

OCI whiteouts become overlayfs whiteouts: ``.wh.NAME`` a 0:0 character device,
``.wh..wh..opq`` the ``user.overlay.opaque`` xattr (every overlay is mounted in
a user namespace, with ``userxattr``).  Extended attributes of the
archive are not applied (an ``overlay.*`` one could redirect a lookup).

Ownership follows an :class:`IdPolicy`.  A rootless caller cannot chown to
its subordinate ids, so with a ``sub`` policy the unpacker creates every
file as the caller and returns the owners the archive wants, by inode; the
caller of :func:`unpack` applies them in a user namespace that maps those
ids (``sandboxlib.runtime.subids``)."""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

import attrs

from ..errors import ImageFormatError
from ..posix.io import write_all
from .trees import remove_tree

__all__ = [
    "IdPolicy",
    "Owners",
    "unpack",
    "unpack_into",
    "remove_tree",
    "refused",
    "split_name",
    "link_target",
    "check_symlink",
]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX, SYMLINK_MAX = 255, 4095  # bytes of a name and of a symlink's target (Linux)

# Why a layer is refused: shared with the check at import (layercheck.py),
# which must give the same message as unpacking would.
REFUSALS = {
    "dotdot": "{what} {name!r} has a '..' component",
    "nul": "{what} {name!r} has a NUL byte",
    "long": "{what} {name!r} has a component longer than 255 bytes",
    "long link": "symlink {name!r} has a target longer than 4095 bytes",
    "root": "entry {name!r} would replace the layer root",
    "not dir": "{path!r}: {part!r} is not a directory (a symlink or a file) in this layer",
    "whiteout": "entry {name!r} has an invalid whiteout name",
    "type": "entry {name!r} has an unsupported type {type!r}",
    "link root": "hard link {name!r} points at the layer root",
    "link missing": "hard link {name!r}: target {target!r} is not in this layer",
    "link dir": "hard link {name!r} points at a directory",
}


def refused(label: str, why: str, **facts) -> ImageFormatError:
    """The error that refuses a layer (``why``: a key of REFUSALS)."""
    return ImageFormatError(label, REFUSALS[why].format(**facts))


# Owners still to apply: inode -> (container uid, container gid, mode).
Owners = Dict[int, Tuple[int, int, int]]


@attrs.frozen(kw_only=True)
class IdPolicy:
    """How an unpacked layer's files are owned on the host.

    Root: container ids are shifted by ``shift`` (host id = container id +
    shift).  Rootless: ``squash`` is the caller's (uid, gid), the host ids of
    the container's root.  With ``sub`` = (uid start, gid start, size), the
    caller's subordinate ranges, container id N in 1..size is host id
    start + N - 1 (the container's maps are ``0 caller 1, 1 start size``);
    without, or for ids beyond the range, files are owned by the caller
    (the container's root: only the caller's own id exists in its namespace)."""

    shift: int = 0
    squash: Optional[Tuple[int, int]] = None
    sub: Optional[Tuple[int, int, int]] = None

    @property
    def privileged(self) -> bool:
        return self.squash is None

    @property
    def key(self) -> str:
        """The directory name under ``layers/``: one unpacked copy per policy."""
        if self.sub:
            return f"sub-{self.squash[0]}-{self.sub[0]}-{self.sub[1]}-{self.sub[2]}"
        return f"user-{self.squash[0]}" if self.squash else f"shift-{self.shift}"

    @property
    def opaque_xattr(self) -> str:
        # Overlays are mounted in a user namespace with ``userxattr``: the
        # trusted.* namespace is out of reach there, even for host root.
        return "user.overlay.opaque"

    @classmethod
    def for_caller(cls, shift: int = 0) -> IdPolicy:
        if os.geteuid() == 0:
            return cls(shift=shift)
        return cls(squash=(os.geteuid(), os.getegid()))

    def kept(self, uid: int, gid: int) -> Tuple[int, int]:
        """The container ids a file keeps (rootless: 0 for ids outside the range)."""
        if not self.squash:
            return uid, gid
        size = self.sub[2] if self.sub else 0
        return (uid if 0 < uid <= size else 0), (gid if 0 < gid <= size else 0)

    def owner(self, uid: int, gid: int) -> Tuple[int, int]:
        """The host ids of the container ids (uid, gid)."""
        if not self.squash:
            return uid + self.shift, gid + self.shift
        uid, gid = self.kept(uid, gid)
        return (self.sub[0] + uid - 1 if uid else self.squash[0]), (self.sub[1] + gid - 1 if gid else self.squash[1])

    def container_ids(self, uid: int, gid: int) -> Tuple[int, int]:
        """The container ids of the host ids (uid, gid): the inverse of ``owner``."""
        if not self.squash:
            return max(uid - self.shift, 0), max(gid - self.shift, 0)
        start_uid, start_gid, size = self.sub or (0, 0, 0)
        return _unshift(uid, self.squash[0], start_uid, size), _unshift(gid, self.squash[1], start_gid, size)

    def mode(self, mode: int, directory: bool) -> int:
        """The mode bits kept: setuid and setgid only as root (a rootless
        caller's file with them would hand its ids to any host user who can
        run it); a setgid directory only decides new files' groups."""
        if self.privileged or (directory and self.sub):
            return mode & 0o7777
        return mode & 0o1777


def _unshift(host: int, own: int, start: int, size: int) -> int:
    """A host id as the container sees it: the caller's is 0, a sub-id start + N - 1 is N."""
    if host == own:
        return 0
    return host - start + 1 if start <= host < start + size else host


def split_name(name: str, label: str, what: str = "entry") -> List[str]:
    """The components of an entry name inside the layer ([] for the layer root)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refused(label, "dotdot", what=what, name=name)
    if "\0" in name:
        raise refused(label, "nul", what=what, name=name)
    # a component's UTF-8 is at most 4 bytes a character: encode only when it may be too long
    if max(map(len, parts), default=0) * 4 > NAME_MAX and any(len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise refused(label, "long", what=what, name=name)
    return parts


def link_target(member: tarfile.TarInfo, label: str) -> List[str]:
    """The components of a hard link's target (never the layer root)."""
    target = split_name(member.linkname, label, what=f"hard link {member.name!r}: target")
    if not target:
        raise refused(label, "link root", name=member.name)
    return target


def check_symlink(member: tarfile.TarInfo, label: str) -> None:
    """Refuse a symlink target the kernel would refuse (os.symlink would raise)."""
    if "\0" in member.linkname:
        raise refused(label, "nul", what="symlink target of", name=member.name)
    if len(os.fsencode(member.linkname)) > SYMLINK_MAX:
        raise refused(label, "long link", name=member.name)


class _WalkedDirs:
    """The directories of the last walk below a layer's root, the deepest
    ``KEEP`` of them open: a tar lists a tree depth first, so the next entry's
    parent is nearly always on that path or just below it, and a deep tree
    unpacks in linear time instead of walking every entry's path from the
    root.  Above the open ones, a level is reopened through ``..`` and must be
    the directory (device, inode) the walk down met.  The fds stay valid as
    long as no directory is removed (``forget``)."""

    KEEP = 64

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.parts: List[str] = []  # the path walked
        self.ids: List[Tuple[int, int]] = []  # (device, inode) of each level
        self.fds: List[int] = []  # the deepest levels': fds[-1] is parts[:]'s

    def open(self, parts: List[str], step: Callable[[int, str], int]) -> int:
        """A new fd of the directory ``parts``; ``step(fd, name)`` opens one level."""
        if not self._climb_to(self._common(parts)):
            self.forget()
        fd = self.fds[-1] if self.parts else self.root_fd
        for part in parts[len(self.parts) :]:
            fd = step(fd, part)
            st = os.fstat(fd)
            self.parts.append(part)
            self.ids.append((st.st_dev, st.st_ino))
            self.fds.append(fd)
            if len(self.fds) > self.KEEP:
                os.close(self.fds.pop(0))
        return os.dup(fd)

    def _common(self, parts: List[str]) -> int:
        """How many leading parts the last walk shares (list compares run in C)."""
        if parts[: len(self.parts)] == self.parts:
            return len(self.parts)
        if self.parts[: len(parts)] == parts:
            return len(parts)
        return next(i for i, (a, b) in enumerate(zip(self.parts, parts)) if a != b)

    def _climb_to(self, depth: int) -> bool:
        """Keep the walk's first ``depth`` levels; False if one changed under us."""
        if depth == 0:
            self.forget()
        while len(self.parts) > depth:
            if len(self.fds) == 1:  # reopen the level above through ".."
                up = os.open("..", DIR_FLAGS, dir_fd=self.fds[0])
                st = os.fstat(up)
                os.close(self.fds[0])
                self.fds[0] = up
                if (st.st_dev, st.st_ino) != self.ids[-2]:
                    return False
            else:
                os.close(self.fds.pop())
            self.parts.pop()
            self.ids.pop()
        return True

    def forget(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.parts, self.ids, self.fds = [], [], []

    close = forget


class _Unpacker:
    def __init__(
        self, root_fd: int, policy: IdPolicy, label: str, whiteouts: bool = True, source_fd: Optional[int] = None
    ) -> None:
        self.root_fd, self.policy, self.label, self.whiteouts = root_fd, policy, label, whiteouts
        self.source_fd = source_fd  # the tar as a file: data is copied by the kernel
        self.dirs: List[Tuple[List[str], tarfile.TarInfo]] = []
        self.owners: Owners = {}  # a ``sub`` policy: what the caller could not chown itself
        self.walked = _WalkedDirs(root_fd)

    def _parent(self, parts: List[str], create: bool) -> int:
        """An fd of the directory holding ``parts[-1]``, walked with O_NOFOLLOW."""
        return self.walked.open(parts[:-1], lambda fd, part: self._step(fd, part, parts, create))

    def _step(self, fd: int, part: str, parts: List[str], create: bool) -> int:
        try:
            return os.open(part, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            if self.policy.privileged:  # owned by the container's root, as Docker does
                os.fchown(nxt, *self.policy.owner(0, 0))
            self.owners.pop(os.fstat(nxt).st_ino, None)  # a new inode may reuse a freed number
            return nxt
        except (NotADirectoryError, OSError) as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise refused(self.label, "not dir", path="/".join(parts), part=part) from None
            raise

    def close(self) -> None:
        self.walked.close()

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = split_name(member.name, self.label)
        if not parts:
            if not member.isdir():
                raise refused(self.label, "root", name=member.name)
            self._meta_fd(self.root_fd, member)
            self.dirs.append((parts, member))
            return
        base = parts[-1]
        parent = self._parent(parts, create=True)
        try:
            if base == OPAQUE and self.whiteouts:
                os.setxattr(parent, self.policy.opaque_xattr, b"y")
            elif base.startswith(WHITEOUT) and self.whiteouts:
                self._clear(parent, base[len(WHITEOUT) :], member, keep_dir=False)
                os.mknod(base[len(WHITEOUT) :], stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
                self.owners.pop(os.stat(base[len(WHITEOUT) :], dir_fd=parent, follow_symlinks=False).st_ino, None)
            else:
                self._create(tar, member, parts, parent)
        finally:
            os.close(parent)

    def _clear(self, parent: int, name: str, member: tarfile.TarInfo, keep_dir: bool) -> None:
        """Remove what is at ``name``, unless it is a directory to keep."""
        if name in ("", ".", ".."):
            raise refused(self.label, "whiteout", name=member.name)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            self.walked.forget()  # it may hold the removed directories
            remove_tree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: List[str], parent: int) -> None:
        name = parts[-1]
        self._clear(parent, name, member, keep_dir=member.isdir())
        mode = self.policy.mode(member.mode, member.isdir())
        if member.isdir():
            with _suppress_exists():
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            try:
                self._meta_fd(fd, member, 0o700)
            finally:
                os.close(fd)
            self.dirs.append((parts, member))  # its own mode only at the end: it may forbid writes
            return
        if member.isreg():
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent
            )
            try:
                if self.source_fd is not None and member.sparse is None:
                    _copy_range(self.source_fd, member.offset_data, fd, member.size, self.label)
                else:
                    _copy(tar.extractfile(member), fd, member.size)
                self._meta_fd(fd, member)
            finally:
                os.close(fd)
            return
        if member.issym():
            check_symlink(member, self.label)
            os.symlink(member.linkname, name, dir_fd=parent)
        elif member.islnk():
            self._hardlink(member, name, parent)
            return  # the target's metadata is the link's
        elif member.isfifo():
            os.mkfifo(name, mode, dir_fd=parent)
        elif member.ischr() or member.isblk():
            if not self.policy.privileged:
                return  # rootless: device nodes cannot be made (Docker skips them too)
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | mode, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        else:
            raise refused(self.label, "type", name=member.name, type=member.type)
        self._owner(name, parent, member)
        if not member.issym():
            os.chmod(name, mode, dir_fd=parent)
        os.utime(name, ns=(int(member.mtime * 1e9),) * 2, dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, member: tarfile.TarInfo, name: str, parent: int) -> None:
        target = link_target(member, self.label)
        try:
            target_parent = self._parent(target, create=False)
        except FileNotFoundError:
            raise refused(self.label, "link missing", name=member.name, target=member.linkname) from None
        try:
            st = os.stat(target[-1], dir_fd=target_parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise refused(self.label, "link dir", name=member.name)
            os.link(target[-1], name, src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise refused(self.label, "link missing", name=member.name, target=member.linkname) from None
        finally:
            os.close(target_parent)

    def _owner(self, name: str, parent: int, member: tarfile.TarInfo) -> None:
        if self.policy.privileged:
            os.chown(name, *self.policy.owner(member.uid, member.gid), dir_fd=parent, follow_symlinks=False)
        elif self.policy.sub:
            self._record(os.stat(name, dir_fd=parent, follow_symlinks=False), member)

    def _record(self, st: os.stat_result, member: tarfile.TarInfo) -> None:
        """Note an owner other than the container's root, to apply later."""
        ids = self.policy.kept(member.uid, member.gid)
        if ids != (0, 0):
            self.owners[st.st_ino] = (*ids, self.policy.mode(member.mode, member.isdir()))
        else:
            self.owners.pop(st.st_ino, None)  # replaced later in the layer

    def _meta_fd(self, fd: int, member: tarfile.TarInfo, extra_mode: int = 0) -> None:
        if self.policy.privileged:
            os.fchown(fd, *self.policy.owner(member.uid, member.gid))
        elif self.policy.sub:
            self._record(os.fstat(fd), member)
        os.fchmod(fd, self.policy.mode(member.mode, member.isdir()) | extra_mode)
        os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)

    def finish(self) -> None:
        """Directory modes and times, deepest last entries first (writing inside changes mtime)."""
        for parts, member in reversed(self.dirs):
            try:
                parent = self._parent(parts + ["."], create=False)
            except (FileNotFoundError, ImageFormatError):
                continue  # replaced or whited out later in the layer
            try:
                self._meta_fd(parent, member)
            finally:
                os.close(parent)


class _suppress_exists:
    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        return isinstance(err, FileExistsError)


def _copy(src: BinaryIO, fd: int, size: int) -> None:
    left = size
    while left > 0:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            raise ImageFormatError("layer", "truncated file data")
        write_all(fd, chunk)
        left -= len(chunk)


def _copy_range(src: int, offset: int, fd: int, size: int, label: str) -> None:
    while size > 0:
        n = os.copy_file_range(src, fd, size, offset)
        if n <= 0:
            raise ImageFormatError(label, "truncated file data")
        offset, size = offset + n, size - n


def unpack_tar_file(path: str, dest: str, policy: IdPolicy, label: str) -> Owners:
    """Unpack an uncompressed tar that is a file: headers read in place,
    file data copied with copy_file_range (no pass through Python).
    Returns the owners still to apply (see :class:`IdPolicy`)."""
    root_fd = os.open(dest, DIR_FLAGS)
    try:
        with open(path, "rb") as f:
            unpacker = _Unpacker(root_fd, policy, label, source_fd=f.fileno())
            try:
                with tarfile.open(fileobj=f, mode="r:") as tar:
                    for member in tar:
                        unpacker.entry(tar, member)
                unpacker.finish()
            except (tarfile.TarError, EOFError) as err:
                raise ImageFormatError(label, f"truncated or corrupt archive: {err}") from None
            finally:
                unpacker.close()
    finally:
        os.close(root_fd)
    return unpacker.owners


def unpack(
    stream: BinaryIO,
    dest: str,
    policy: IdPolicy,
    label: str,
    *,
    before: Optional[Callable[[tarfile.TarInfo], None]] = None,
) -> Owners:
    """Unpack the uncompressed layer tar ``stream`` into the empty directory
    ``dest`` (``before``: as for :func:`unpack_into`).  Returns the owners
    still to apply (see :class:`IdPolicy`)."""
    root_fd = os.open(dest, DIR_FLAGS)
    try:
        return unpack_into(stream, root_fd, policy, label, before=before)
    finally:
        os.close(root_fd)


def unpack_into(
    stream: BinaryIO,
    root_fd: int,
    policy: IdPolicy,
    label: str,
    *,
    whiteouts: bool = True,
    before: Optional[Callable[[tarfile.TarInfo], None]] = None,
) -> Owners:
    """Unpack a tar below the directory ``root_fd`` (``whiteouts=False``: ``.wh.``
    names are plain names, as in an archive copied into a container);
    ``before`` sees each header before it is applied (a check that raises)."""
    unpacker = _Unpacker(root_fd, policy, label, whiteouts)
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as tar:
            for member in tar:
                if before is not None:
                    before(member)
                unpacker.entry(tar, member)
        unpacker.finish()
    except (tarfile.TarError, EOFError) as err:
        raise ImageFormatError(label, f"truncated or corrupt archive: {err}") from None
    finally:
        unpacker.close()
    return unpacker.owners
