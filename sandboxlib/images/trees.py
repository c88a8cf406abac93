"""The one walker of trees a container controls (writable layers, volumes,
unpacked layers, a running container's files): iterative, never following
a symlink, with a bounded number of open fds.

A hostile tree may be as deep as the file system allows (a container makes
10,000 nested directories in a second), so nothing here recurses in Python
(``shutil.rmtree`` and ``os.fwalk`` do, and ``os.fwalk`` also keeps one fd
per level).  The walker keeps a stack of frames (a directory's identity and
the names still to visit), holds open fds only for the deepest
``FD_WINDOW`` levels, and climbs back to a closed one with ``..`` checked
against the identity (st_dev, st_ino) it saw going down: a directory moved
meanwhile ends the walk with an error, it never leads anywhere else.
Memory: the names of the directories on the current path.

Standard library only: ``_subids_worker`` runs this source in front of its
own in a sandbox (``sandboxlib.subids``)."""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, Iterator, List, NamedTuple, Optional

__all__ = ["Entry", "walk", "open_dir", "remove_tree", "empty_dir", "DIR_FLAGS", "FD_WINDOW"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FD_WINDOW = 64  # directory fds a walk holds open at most (besides the caller's top)


class Entry(NamedTuple):
    """One step of a walk.  ``parent_fd`` (and ``dir_fd``) are valid until the next step.

    A directory is seen twice: entering (``dir_fd`` is open, its entries
    follow) and leaving (``leaving``, after its entries; ``dir_fd`` None)."""

    parent_fd: int
    name: str
    path: str  # relative to the top, "/"-separated
    st: os.stat_result
    dir_fd: Optional[int] = None
    leaving: bool = False


def open_dir(parent_fd: int, name: str) -> int:
    """A subdirectory, never through a symlink."""
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


class _Frame:
    __slots__ = ("fd", "ident", "names", "path", "entry")

    def __init__(self, fd: int, ident: tuple, names: List[str], path: str, entry: Optional[Entry]) -> None:
        self.fd: Optional[int] = fd
        self.ident, self.names, self.path, self.entry = ident, names, path, entry


def _ident(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino


def _climb(child_fd: int, parent: _Frame) -> None:
    """Reopen a parent whose fd the window closed, through ``..`` of its child."""
    fd = os.open("..", DIR_FLAGS, dir_fd=child_fd)
    if _ident(os.fstat(fd)) != parent.ident:
        os.close(fd)
        raise OSError(errno.ESTALE, "the tree changed while it was walked (a directory was moved)", parent.path or ".")
    parent.fd = fd


def walk(
    top_fd: int,
    *,
    sort: bool = False,
    opener: Callable[[int, str], int] = open_dir,
    outside: Optional[Callable[[str], bool]] = None,
) -> Iterator[Entry]:
    """Every entry below the directory ``top_fd`` (not the top itself), a
    directory before its entries; symlinks are entries, never followed.
    ``sort``: entries of a directory in name order.  ``opener(parent_fd,
    name)`` opens a subdirectory (removal makes an unreadable one readable).
    ``outside(path)``: a directory not entered (a mount point), seen once, without ``dir_fd``."""
    stack: List[_Frame] = []
    frame = _Frame(top_fd, _ident(os.fstat(top_fd)), _list_names(top_fd, sort), "", None)
    try:
        while True:
            if frame.names:
                name = frame.names.pop()
                entry = _lstat_entry(frame, name)
                if not stat.S_ISDIR(entry.st.st_mode) or (outside is not None and outside(entry.path)):
                    yield entry
                    continue
                fd = opener(frame.fd, name)
                try:
                    st = os.fstat(fd)
                    if _ident(st) != _ident(entry.st):  # replaced by something else since the lstat
                        raise OSError(errno.ESTALE, "the tree changed while it was walked", entry.path)
                    child = _Frame(fd, _ident(st), _list_names(fd, sort), entry.path, entry._replace(st=st))
                except BaseException:
                    os.close(fd)
                    raise
                stack.append(frame)
                frame = child
                _close_beyond_window(stack)
                yield frame.entry._replace(dir_fd=frame.fd)
                continue
            if not stack:
                return
            parent = stack.pop()
            if parent.fd is None:
                _climb(frame.fd, parent)
            os.close(frame.fd)
            frame.fd = None
            done, frame = frame, parent
            yield done.entry._replace(parent_fd=frame.fd, leaving=True)
    finally:
        for f in stack[1:] + [frame]:
            if f.fd is not None and f.fd != top_fd:
                os.close(f.fd)


def _list_names(fd: int, sort: bool) -> List[str]:
    names = os.listdir(fd)
    if sort:
        names.sort(reverse=True)  # popped from the end: in order
    return names


def _lstat_entry(frame: _Frame, name: str) -> Entry:
    st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
    return Entry(frame.fd, name, f"{frame.path}/{name}" if frame.path else name, st)


def _close_beyond_window(stack: List[_Frame]) -> None:
    """Close the shallowest open fd (never the caller's top) once more than the window are open."""
    index = len(stack) - FD_WINDOW
    if index >= 1 and stack[index].fd is not None:
        os.close(stack[index].fd)
        stack[index].fd = None


# -- removal ---------------------------------------------------------------------
def _opener_making_readable(parent_fd: int, name: str) -> int:
    """Open a subdirectory; one its owner made unreadable (mode 000) is made 0700 first."""
    try:
        return open_dir(parent_fd, name)
    except PermissionError:
        pass
    path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:  # chmod through the O_PATH fd: never through a symlink swapped in
        os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
    finally:
        os.close(path_fd)
    return open_dir(parent_fd, name)


def _remove_entry(parent_fd: int, name: str, directory: bool) -> None:
    """unlink or rmdir, making the parent writable once if its owner made it read-only."""
    remove = os.rmdir if directory else os.unlink
    try:
        remove(name, dir_fd=parent_fd)
    except PermissionError:
        os.fchmod(parent_fd, stat.S_IMODE(os.fstat(parent_fd).st_mode) | 0o700)
        remove(name, dir_fd=parent_fd)


def empty_dir(dir_fd: int) -> None:
    """Remove everything below the directory ``dir_fd`` (not the directory).
    Raises OSError on the first entry that cannot be removed."""
    for entry in walk(dir_fd, opener=_opener_making_readable):
        if entry.dir_fd is None:
            _remove_entry(entry.parent_fd, entry.name, entry.leaving)


def remove_tree(path: str, dir_fd: Optional[int] = None) -> None:
    """Remove ``path`` (relative to ``dir_fd`` if given) and, for a directory,
    its tree; a symlink is removed, never followed.  Directories their owner
    made unwritable or unreadable are made 0700 first (the tree must be ours,
    or we must be root).  Raises OSError (FileNotFoundError when ``path`` is gone)."""
    if dir_fd is None:
        parent = os.open(os.path.dirname(os.path.abspath(path)), DIR_FLAGS)
        name = os.path.basename(os.path.abspath(path))
    else:
        parent, name = os.dup(dir_fd), path
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            fd = _opener_making_readable(parent, name)
            try:
                empty_dir(fd)
            finally:
                os.close(fd)
        _remove_entry(parent, name, stat.S_ISDIR(st.st_mode))
    finally:
        os.close(parent)
