"""The container's file system as an ordered list of mount ops.

Python decides the whole layout here (host view or a rootfs directory,
/proc, /dev, /sys, masked and read-only paths, the user's mounts); the C
child applies it in order."""

from __future__ import annotations

import functools
import os
import stat
import sys
from typing import List, Optional, Tuple

from ..config import ContainerConfig, MountKind, Namespace, Network
from ..native.binding import MountFlag as F
from ..native.binding import MountKind as K
from ..native.mount_op import MountOp

__all__ = ["MountOp", "layout", "HOST_SYSTEM_DIRS", "ETC_SECRETS", "MASKED_PATHS", "READ_ONLY_PATHS"]

HOST_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
ETC_SECRETS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/security/opasswd",
)
# Docker's masked and read-only paths.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READ_ONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_SAFE = F.NOSUID | F.NODEV


def interpreter_prefixes() -> Tuple[str, ...]:
    """The running interpreter's prefixes that the system dirs do not cover."""
    found = []
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        real = os.path.realpath(prefix)
        if not any(real == d or real.startswith(d + "/") for d in HOST_SYSTEM_DIRS):
            found.append(real)
    return tuple(sorted(set(found)))


@functools.lru_cache(maxsize=1)
def _host_view() -> Tuple[MountOp, ...]:
    """The host view's mounts (the host's layout is read once per process)."""
    ops = []
    for path in HOST_SYSTEM_DIRS:
        if os.path.islink(path):
            ops.append(MountOp(kind=K.SYMLINK, target=path, source=os.readlink(path)))
        elif os.path.isdir(path):
            ops.append(MountOp(kind=K.BIND, target=path, source=path, flags=F.RDONLY | F.RECURSIVE | _SAFE))
    for path in interpreter_prefixes():
        ops.append(MountOp(kind=K.BIND, target=path, source=path, flags=F.RDONLY | F.RECURSIVE | _SAFE))
    for path in ETC_SECRETS:
        if os.path.lexists(path):  # the view shows the host's /etc: mask what it has
            ops.append(MountOp(kind=K.MASK, target=path, source="/dev/null", flags=F.OPTIONAL))
    ops.append(MountOp(kind=K.TMPFS, target="/tmp", data="mode=1777", flags=_SAFE))
    ops.append(MountOp(kind=K.TMPFS, target="/run", data="mode=0755", flags=_SAFE))
    return tuple(ops)


@functools.lru_cache(maxsize=1)
def _private_etc_entries() -> Tuple[str, ...]:
    """The entries of the host's /etc that other users may not read (files
    without o+r, directories without o+rx; not below such a directory).

    A container in a user namespace reads /etc as an unmapped "other" user
    and so cannot read them; real root (``userns=False``) could, and this
    host's /etc holds more secrets than ``ETC_SECRETS`` names (Docker's
    key.json, a database's pg_hba.conf...): the host view masks them all,
    so both modes show the same /etc.  Walked once per process (~5 ms for
    1,200 entries), iteratively; /usr and /lib are shown as they are
    (walking them cost ~0.5 s and they hold software, not secrets)."""
    found, pending = [], ["/etc"]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                continue  # its target is checked where it lives (a symlink is never masked)
            private = not mode & stat.S_IROTH or (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH)
            if private:
                found.append(entry.path)
            elif stat.S_ISDIR(mode):
                pending.append(entry.path)
    return tuple(sorted(found))


def _real_root_masks() -> List[MountOp]:
    return [
        MountOp(kind=K.MASK, target=path, source="/dev/null", flags=F.OPTIONAL)
        for path in _private_etc_entries()
        if path not in ETC_SECRETS
    ]


def _dev() -> List[MountOp]:
    # nodev: device nodes made inside (userns=False with MKNOD) never work;
    # the devices below are binds, mounts of their own.
    ops = [MountOp(kind=K.TMPFS, target="/dev", data="mode=0755,size=65536k", flags=_SAFE | F.NOEXEC)]
    ops += [
        MountOp(kind=K.BIND, target=f"/dev/{name}", source=f"/dev/{name}", flags=F.FILE | F.NOSUID | F.NOEXEC)
        for name in DEVICES
    ]
    ops += [
        MountOp(
            kind=K.DEVPTS, target="/dev/pts", data="newinstance,ptmxmode=0666,mode=0620", flags=F.NOSUID | F.NOEXEC
        ),
        MountOp(kind=K.SYMLINK, target="/dev/ptmx", source="pts/ptmx"),
        MountOp(kind=K.TMPFS, target="/dev/shm", data="mode=1777,size=65536k", flags=_SAFE | F.NOEXEC),
        MountOp(kind=K.MQUEUE, target="/dev/mqueue", flags=_SAFE | F.NOEXEC),
        MountOp(kind=K.SYMLINK, target="/dev/fd", source="/proc/self/fd"),
    ]
    ops += [
        MountOp(kind=K.SYMLINK, target=f"/dev/{name}", source=f"/proc/self/fd/{fd}")
        for fd, name in enumerate(("stdin", "stdout", "stderr"))
    ]
    return ops


def _kernel_filesystems(config: ContainerConfig) -> List[MountOp]:
    if config.pid_namespace is Namespace.PRIVATE:
        ops = [MountOp(kind=K.PROC, target="/proc", flags=_SAFE | F.NOEXEC)]
    else:  # the kernel gives a fresh proc of the host's pid namespace only to its own user namespace
        ops = [MountOp(kind=K.BIND, target="/proc", source="/proc", flags=F.RECURSIVE | _SAFE | F.NOEXEC)]
    if config.network is not Network.HOST:  # a network namespace of its own
        ops.append(MountOp(kind=K.SYSFS, target="/sys", flags=F.RDONLY | _SAFE | F.NOEXEC))
    else:  # sysfs belongs to the network namespace; show the host's, read-only
        ops.append(MountOp(kind=K.BIND, target="/sys", source="/sys", flags=F.RDONLY | F.RECURSIVE | _SAFE))
    # A fresh proc and sysfs of this kernel have what the host's have: skip
    # the ops for paths this kernel does not provide.
    ops += [
        MountOp(kind=K.MASK, target=p, source="/dev/null", flags=F.OPTIONAL) for p in MASKED_PATHS if os.path.lexists(p)
    ]
    ops += [
        MountOp(kind=K.REMOUNT, target=p, flags=F.RDONLY | F.OPTIONAL) for p in READ_ONLY_PATHS if os.path.lexists(p)
    ]
    return ops


def _user_mounts(config: ContainerConfig) -> List[MountOp]:
    ops = []
    for i, mount in enumerate(config.mounts):
        field = f"mounts[{i}]"
        # USER: the child refuses a target that a symlink in the root leads
        # onto /proc, /sys, /dev/pts or /dev (config/mounts.py sees only the path).
        ro = F.USER | (F.RDONLY if mount.read_only else F(0))
        if mount.kind is MountKind.BIND:
            is_file = not os.path.isdir(mount.source)
            ops.append(
                MountOp(
                    kind=K.BIND,
                    target=mount.target,
                    source=mount.source,
                    field=field,
                    flags=ro | F.RECURSIVE | (F.FILE if is_file else F(0)) | (F.IDMAP if mount.idmap else F(0)),
                )
            )
        else:
            data = f"mode={mount.mode:04o}" + (f",size={mount.size}" if mount.size is not None else "")
            ops.append(MountOp(kind=K.TMPFS, target=mount.target, data=data, flags=ro | _SAFE, field=field))
    return ops


def _image_root(layers: Tuple[str, ...], upper: Optional[str], size: Optional[int]) -> List[MountOp]:
    """An overlay of the layers (the LOWER ops, top first) with the writable
    layer in ``upper`` (a host dir with upper/ and work/) or on a tmpfs."""
    ops = [MountOp(kind=K.LOWER, target="/", source=path, field="image") for path in reversed(layers)]
    data = None if upper else "mode=0755" + (f",size={size}" if size is not None else "")
    ops.append(
        MountOp(kind=K.OVERLAY, target="/", source=upper, data=data, field="writable_layer" if upper else "image")
    )
    return ops


@functools.lru_cache(maxsize=64)
def layout(
    config: ContainerConfig, image_layers: Tuple[str, ...] = (), upper: Optional[str] = None
) -> Tuple[MountOp, ...]:
    """Every mount op of the container, parents before children.

    The system's ops first, then the user's (which may cover them); among
    the system's, /sys and what lies below it come last: sysfs shows the
    mounter's network namespace, which a thread of the child creates in
    parallel with all the other ops."""
    if config.image is not None:
        root = _image_root(image_layers, upper, config.writable_layer_size)  # depth 0: first, in order
    else:
        root = list(_host_view()) if config.rootfs is None else []
        if config.rootfs is None and not config.userns:
            root += _real_root_masks()
    system = root + _kernel_filesystems(config) + _dev()
    ranked = [(_under_sys(op), op.depth, 0, i, op) for i, op in enumerate(system)]
    ranked += [(_under_sys(op), op.depth, 1, i, op) for i, op in enumerate(_user_mounts(config))]
    return tuple(op for *_, op in sorted(ranked, key=lambda r: r[:4]))


def _under_sys(op: MountOp) -> bool:
    return op.target == "/sys" or op.target.startswith("/sys/")
