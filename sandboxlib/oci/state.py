"""The runtime's per-container state under ``--root``.

``ROOT/ID/`` holds ``state.json`` (what ``state`` prints and what the later
verbs need: the init's pid and start time, the bundle, the cgroup
directories, the hooks), ``init.sock`` (the init's listening control
socket: ``start``, ``kill`` of one command, ``exec`` connect there) and
``started`` once ``start`` released the main process, and ``front`` (what
the C front, csrc/front.c, reads: ``control.front_record``).  Writes are whole
(rename), and each verb holds ``ROOT/ID/lock`` (flock) while it changes the
container, so concurrent verbs on one id see one another's results."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
from typing import Any, Dict, Iterator, Optional

from ..errors import ConfigError

__all__ = ["default_root", "ContainerDir", "NotFound", "status_of"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$")


class NotFound(Exception):
    """No container of that id (runc: ``container does not exist``)."""


def _real_root() -> bool:
    """Root of the host's user namespace (rootless podman runs us as root of its own)."""
    try:
        with open("/proc/self/uid_map") as f:
            return os.geteuid() == 0 and f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def default_root() -> str:
    """runc's choice: /run/... as root, $XDG_RUNTIME_DIR/... rootless (also as
    root of a user namespace), else a directory of ours in /tmp.  Made 0700 if
    missing, and refused if another user could have placed or can change it
    (``/tmp`` is everyone's: a directory or symlink made there first by
    someone else would show them our containers, or hand them our verbs)."""
    if _real_root():
        return _private("/run/sandboxlib-runtime")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        os.makedirs(xdg, 0o700, exist_ok=True)
        return _private(os.path.join(xdg, "sandboxlib-runtime"))
    return _private(os.path.join(_private(f"/tmp/sandboxlib-runtime-{os.geteuid()}"), "sandboxlib-runtime"))


def _private(path: str) -> str:
    """``path``, a directory only we can change: made 0700 if missing (mkdir
    follows no symlink), else checked (csrc/front.c's private_or_missing too)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    else:
        return path
    raise ConfigError("--root", f"the default state root {path} {problem}: remove it, or pass --root")


def start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has stopped, whoever reaps it
    return int(fields[19])


class ContainerDir:
    def __init__(self, root: str, container_id: str) -> None:
        if not _ID.match(container_id):
            raise ConfigError("id", f"invalid container id {container_id!r}")
        self.id = container_id
        self.path = os.path.join(root, container_id)

    @contextlib.contextmanager
    def socket_address(self) -> Iterator[str]:
        """The control socket's path, short enough for AF_UNIX (108 bytes)
        however deep ``--root`` is: through an fd of the container's directory."""
        fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}/init.sock"
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.path, "state.json"))

    def make(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            raise ConfigError("id", f"container with id {self.id} already exists") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFound(self.id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> Dict[str, Any]:
        try:
            with open(os.path.join(self.path, "state.json"), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise NotFound(self.id) from None

    def write(self, state: Dict[str, Any]) -> None:
        tmp = os.path.join(self.path, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.rename(tmp, os.path.join(self.path, "state.json"))

    def write_front(self, text: str) -> None:
        tmp = os.path.join(self.path, "front.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.path, "front"))

    def mark_started(self) -> None:
        open(os.path.join(self.path, "started"), "w").close()

    def started(self) -> bool:
        return os.path.exists(os.path.join(self.path, "started"))

    def remove(self) -> None:
        import shutil  # (not on create's path: its imports are most of its time)

        shutil.rmtree(self.path, ignore_errors=True)


def status_of(cdir: ContainerDir, state: Dict[str, Any]) -> str:
    """created, running or stopped (the init gone, or another process in its pid's place)."""
    pid = state.get("pid") or 0
    if not pid or start_time(pid) != state.get("init_start"):
        return "stopped"
    return "running" if cdir.started() else "created"
