"""A record per running container, so that whatever a SIGKILLed host process
left behind is found and removed by the next one that starts a container
(not for a one-shot run without a cgroup: its init ends with its owner and
leaves nothing behind).

Each record is one small file named by the container id; it says who owns
it and which process is its init, each as (pid, start time) so that a
reused pid is never mistaken for them: a first line ``OWNER START``, one
``cgroup PATH`` line per cgroup directory of the container (written before
the cgroups are made), and ``init PID START`` appended once the init exists.

A record appears whole (written unnamed, ``O_TMPFILE``, then linked in), so
one that is empty or whose owner line does not parse is garbage (a crash
of an older writer, a disk error): the sweep removes it.  A later line that
does not parse is an ``init`` line being appended (its owner is alive), or
the last words of a dead owner: the sweep uses the lines it can read.

A container with ``log=True`` keeps its main command's log in
``.logs/ID/`` (made after its record exists, removed before it): a sweep
that removes a record removes that directory too."""

from __future__ import annotations

import errno
import functools
import os
from typing import Optional, Sequence

from .. import cgroups
from ..posix import throttle
from ..posix.signals import kill_quietly

__all__ = [
    "state_root",
    "register",
    "add_init",
    "unregister",
    "sweep",
    "sweep_if_due",
    "SWEEP_INTERVAL",
    "ensure_root",
    "make_log_dir",
    "remove_log_dir",
]


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


def start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def ensure_root(root: str) -> None:
    """Create the directory (0700, ours); refuse someone else's (checked at every start: two
    microseconds, and nothing for this process to remember)."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"state directory {root} must be owned by uid {os.geteuid()} with mode 0700")


def _write(path: str, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def register(root: str, container_id: str, cgroup_paths: Sequence[str] = (), init_pid: Optional[int] = None) -> str:
    """Record a container: its owner (us), the cgroup directories it is about
    to get (recorded before they exist) and, when it exists already, its
    init.  Returns the record's path.  The record appears whole or not at all."""
    ensure_root(root)
    path = os.path.join(root, container_id)
    me = os.getpid()
    text = f"{me} {_own_start_time()}\n" + "".join(f"cgroup {p}\n" for p in cgroup_paths)
    if init_pid is not None:
        text += f"init {init_pid} {start_time(init_pid)}\n"
    fd_of_root = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(root, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as err:
        os.close(fd_of_root)
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR):
            raise
        _write(path, text.encode(), os.O_CREAT | os.O_EXCL)  # a file system without O_TMPFILE
        return path
    except BaseException:
        os.close(fd_of_root)
        raise
    try:
        data = text.encode()
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, f"short write of the state record {path}")
        # linkat(AT_SYMLINK_FOLLOW), as open(2) documents for O_TMPFILE (a dir fd
        # makes os.link use linkat); EEXIST as O_EXCL would.
        os.link(f"/proc/self/fd/{fd}", container_id, dst_dir_fd=fd_of_root)
    finally:
        os.close(fd)
        os.close(fd_of_root)
    return path


@functools.lru_cache(maxsize=1)  # a fact of a pid, which never changes: not state
def _start_time_of(pid: int) -> int:
    return start_time(pid)


def _own_start_time() -> int:
    return _start_time_of(os.getpid())  # keyed by pid: a forked child reads its own


def add_init(path: str, init_pid: int) -> None:
    """Add the container's init once it exists: one small appended line (a
    sweep that reads half of it skips the record until next time)."""
    _write(path, f"init {init_pid} {start_time(init_pid)}\n".encode(), os.O_APPEND)


def unregister(path: str) -> None:
    remove_log_dir(os.path.dirname(path), os.path.basename(path))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_LOGS = ".logs"  # a dot name: never read as a record


def make_log_dir(root: str, container_id: str) -> str:
    """``ROOT/.logs/ID`` (0700), for a container whose record exists already."""
    logs = os.path.join(root, _LOGS)
    os.makedirs(logs, mode=0o700, exist_ok=True)
    path = os.path.join(logs, container_id)
    os.mkdir(path, 0o700)
    return path


def remove_log_dir(root: str, container_id: str) -> None:
    """Remove a container's log directory (its files only: we made no subdirectory), if any."""
    path = os.path.join(root, _LOGS, container_id)
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


_GARBAGE = "garbage"


def _read_record(path: str):
    """(owner, owner start, init, init start, cgroup paths); None when it is
    gone, _GARBAGE when it is empty or its owner line does not parse."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    try:
        owner, owner_start = (int(x) for x in lines[0].split())
    except (IndexError, ValueError):
        return _GARBAGE
    init, init_start = 0, None
    paths = []
    for line in lines[1:]:
        kind, _, value = line.partition(" ")
        if kind == "cgroup":
            paths.append(value)
        elif kind == "init":
            try:
                init, init_start = (int(x) for x in value.split())
            except ValueError:
                pass  # being appended, or cut short by its owner's death
    return owner, owner_start, init, init_start, tuple(paths)


SWEEP_INTERVAL = 1.0  # seconds between two sweeps of one state root (a start stays cheap with many running)


def sweep_if_due(root: str) -> int:
    """``sweep`` at most once per ``SWEEP_INTERVAL`` for this state root, across processes."""
    return sweep(root) if throttle.due(os.path.join(root, ".swept"), SWEEP_INTERVAL) else 0


def sweep(root: str) -> int:
    """Remove the records whose owner process is gone, killing an init that
    is somehow still there and everything in the record's cgroups, and
    removing those.  Returns how many records were removed."""
    try:
        names = [name for name in os.listdir(root) if not name.startswith(".")]  # not the sweep's stamp
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(root, name)
        record = _read_record(path)
        if record is None:
            continue  # removed meanwhile
        if record is _GARBAGE:
            unregister(path)
            removed += 1
            continue
        owner, owner_start, init, init_start, cgroup_paths = record
        if start_time(owner) == owner_start:
            continue
        if init_start is not None and start_time(init) == init_start:
            kill_quietly(init)
        if cgroups.release_paths(cgroup_paths):
            continue  # still busy: the next sweep tries again
        unregister(path)
        removed += 1
    return removed
