"""A container's network files, ``<state>/net/files/NAME/``: its ``resolv.conf``
and ``hosts`` (bound read-only over ``/etc``), and the pid file of a helper
process (rootless: pasta).  The directory is held by its owner's flock; a
sweep (under the network lock, as the creation is) removes those of dead
owners, killing a helper left running.

A container with a leased address (a root bridge's) gets
``<state>/net/files/lease-BRIDGE-ADDRESS/`` instead (:class:`LeaseFiles`):
held by the lease's own flock, it is kept when the container ends and its
files rewritten by the next holder of that address (so the mount layout
and the plan of the next container there come from their caches, and a
start makes and removes no directory: an ext4 ``rmdir`` cost 0.4 ms and more
under load).  The sweep leaves them be; a named network's removal removes
its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
from typing import Dict, Tuple

from ..config import Mount
from . import ipam

__all__ = [
    "ContainerFiles",
    "LeaseFiles",
    "sweep",
    "network_dir",
    "records_dir",
    "lease_dir",
    "kill_helper",
    "HELPER_PID",
    "rewrite",
]

_FILES = "files"
_LEASED = "lease-"  # the prefix of LeaseFiles' directories
HELPER_PID = "helper.pid"
MOUNTED = ("resolv.conf", "hosts")


def network_dir(state_root: str) -> str:
    return os.path.join(state_root, "net")


def records_dir(state_root: str) -> str:
    """Named networks' records (named.py's ``NAME.json``)."""
    return os.path.join(network_dir(state_root), "networks")


def lease_dir(state_root: str, bridge_name: str) -> str:
    return os.path.join(network_dir(state_root), f"leases-{bridge_name}")


def kill_helper(path: str) -> None:
    """Kill the helper whose pid file is in ``path`` if it is still that helper
    (its command line names the pid file: a reused pid is left alone)."""
    pid_file = os.path.join(path, HELPER_PID)
    try:
        with open(pid_file, encoding="ascii") as file:
            pid = int(file.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            if pid_file.encode() not in file.read():
                return
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def sweep(state_root: str) -> None:
    top = os.path.join(network_dir(state_root), _FILES)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(top):
            if name.startswith(_LEASED):
                continue  # (held by their leases, kept between holders)
            path = os.path.join(top, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            kill_helper(path)
            shutil.rmtree(path, ignore_errors=True)


class ContainerFiles:
    """The directory of one container, held until :meth:`close`."""

    def __init__(self, state_root: str, name: str, contents: Dict[str, str]) -> None:
        """``name``: the directory's, unique among the live containers (the
        container's id, or its leased address on its bridge)."""
        top = os.path.join(network_dir(state_root), _FILES)
        with ipam.dir_lock(network_dir(state_root)):
            sweep(state_root)
            os.makedirs(top, mode=0o755, exist_ok=True)
            self.path = os.path.join(top, name)
            os.mkdir(self.path, 0o755)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._names = tuple(contents)
        for name, text in contents.items():
            with open(os.path.join(self.path, name), "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(os.path.join(self.path, name), 0o644)

    def mounts(self) -> Tuple[Mount, ...]:
        """The binds of ``/etc/resolv.conf`` and ``/etc/hosts`` (read-only), of those it has."""
        return tuple(
            Mount.bind(os.path.join(self.path, name), f"/etc/{name}", read_only=True)
            for name in MOUNTED
            if name in self._names
        )

    @property
    def helper_pid_file(self) -> str:
        return os.path.join(self.path, HELPER_PID)

    def close(self) -> None:
        if self._fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = -1


class LeaseFiles:
    """The files of the container holding a lease (see the module's docstring):
    the caller's lease stands for the directory's lock."""

    def __init__(self, state_root: str, bridge: str, address: str, contents: Dict[str, str]) -> None:
        self.path = os.path.join(network_dir(state_root), _FILES, f"{_LEASED}{bridge}-{address}")
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        for name, text in contents.items():
            rewrite(os.path.join(self.path, name), text.encode())

    def mounts(self) -> Tuple[Mount, ...]:
        """The binds of ``/etc/resolv.conf`` and ``/etc/hosts`` (read-only)."""
        return tuple(Mount.bind(os.path.join(self.path, name), f"/etc/{name}", read_only=True) for name in MOUNTED)

    def close(self) -> None:
        """Nothing to undo: the directory stays for the lease's next holder."""

    @staticmethod
    def remove_all(state_root: str, bridge: str) -> None:
        """A removed network's directories."""
        top = os.path.join(network_dir(state_root), _FILES)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(top):
                if name.startswith(f"{_LEASED}{bridge}-"):
                    shutil.rmtree(os.path.join(top, name), ignore_errors=True)


def rewrite(path: str, data: bytes) -> None:
    """``path`` holds ``data`` (0644): left alone when it does already; else
    overwritten in place and cut to length, never truncated to 0 first (ext4
    flushes a file rewritten after a truncation to 0 when it is closed, its
    ``auto_da_alloc``: measured 1.3 ms more per start than a new directory)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.pread(fd, len(data) + 1, 0) == data:
            return
        if os.fstat(fd).st_mode & 0o777 != 0o644:  # (a new one, under a umask)
            os.fchmod(fd, 0o644)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
