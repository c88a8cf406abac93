"""The one binding layer: the only module that imports ``_native``.

Thin, checked wrappers: every C return is checked on the next line and
turned into an exception.  ``ffi`` and ``lib`` serve the modules of this
package only (the plan, the protocol, failure decoding): the ABI's
constants and message layouts come from ``csrc/native.cdef`` through them,
and no cffi object leaves the package.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import struct
import threading
from typing import Optional, Sequence, Tuple

try:
    from ._native import ffi, lib
except ImportError as err:  # pragma: no cover - depends on the build
    raise ImportError(f"sandboxlib's C extension is not built ({err}); run `make build` or `pip install .`") from err
from ..posix.io import write_all

__all__ = [
    "ffi",
    "lib",
    "Step",
    "MountKind",
    "MountFlag",
    "message_struct",
    "REPORT",
    "REPORT_SIZE",
    "spawn",
    "idmapped_tree",
    "MAX_IDMAPS",
    "init_memfd",
    "open_in_root",
    "seccomp_syscall",
    "seccomp_syscall_arch",
    "seccomp_arch",
    "compile_seccomp",
    "x32_missing",
]

NATIVE_VERSION = 31
# (os.path: pathlib's imports are ~5% of an OCI runtime's create)
_PACKAGE = os.path.dirname(os.path.realpath(__file__))
INIT_PATH = os.path.join(_PACKAGE, "sbx-init")


def _check_build() -> None:
    """Refuse a stale extension: wrong ABI version, or (in a source checkout)
    built from other sources than the csrc/ beside it."""
    if lib.SBX_NATIVE_VERSION != NATIVE_VERSION:
        raise ImportError(
            f"stale sandboxlib.native._native: ABI version {lib.SBX_NATIVE_VERSION}, this Python code "
            f"needs {NATIVE_VERSION}; rebuild with `make build` or `pip install .`"
        )
    csrc = os.path.join(os.path.dirname(os.path.dirname(_PACKAGE)), "csrc")
    if os.path.exists(os.path.join(csrc, "build_native.py")):
        import pathlib

        from .source_hash import source_hash  # (a checkout only: hashlib is not needed installed)

        built, sources = ffi.string(lib.SBX_SOURCE_HASH).decode(), source_hash(pathlib.Path(csrc))
        if sources != built:
            raise ImportError(
                f"stale sandboxlib.native._native at {_PACKAGE}: it was built from other sources than "
                f"{csrc} (built {built}, sources {sources}); rebuild with `make build`"
            )
    if not os.path.exists(INIT_PATH):
        raise ImportError(f"{INIT_PATH} is missing; rebuild with `make build` or `pip install .`")


_check_build()


class Step(enum.IntEnum):
    """Set-up steps, mirrored from ``enum sbx_step``."""

    NONE = lib.SBX_STEP_NONE
    CLONE = lib.SBX_STEP_CLONE
    SYNC = lib.SBX_STEP_SYNC
    IDENTITY = lib.SBX_STEP_IDENTITY
    KEYRING = lib.SBX_STEP_KEYRING
    LOCKDOWN = lib.SBX_STEP_LOCKDOWN
    HOSTNAME = lib.SBX_STEP_HOSTNAME
    PROPAGATION = lib.SBX_STEP_PROPAGATION
    BASE = lib.SBX_STEP_BASE
    ROOT = lib.SBX_STEP_ROOT
    MOUNT = lib.SBX_STEP_MOUNT
    PIVOT = lib.SBX_STEP_PIVOT
    INIT_EXEC = lib.SBX_STEP_INIT_EXEC
    FORK = lib.SBX_STEP_FORK
    REQUEST = lib.SBX_STEP_REQUEST
    STDIO = lib.SBX_STEP_STDIO
    RLIMIT = lib.SBX_STEP_RLIMIT
    CHDIR = lib.SBX_STEP_CHDIR
    USER = lib.SBX_STEP_USER
    NO_NEW_PRIVS = lib.SBX_STEP_NO_NEW_PRIVS
    CAPS = lib.SBX_STEP_CAPS
    SECCOMP = lib.SBX_STEP_SECCOMP
    EXEC = lib.SBX_STEP_EXEC
    NETWORK = lib.SBX_STEP_NETWORK
    CGROUP = lib.SBX_STEP_CGROUP
    TTY = lib.SBX_STEP_TTY
    JOIN = lib.SBX_STEP_JOIN
    SCOPE = lib.SBX_STEP_SCOPE


# The namespaces sbx-init joins by path, in the order of enum sbx_join
# (the OCI runtime's type names).
JOIN_NAMESPACES = ("network", "ipc", "uts", "mount", "cgroup")
assert len(JOIN_NAMESPACES) == lib.SBX_N_JOIN


class MountKind(enum.IntEnum):
    """Mount op kinds, mirrored from ``enum sbx_mount_kind``."""

    BIND = lib.SBX_MNT_BIND
    TMPFS = lib.SBX_MNT_TMPFS
    PROC = lib.SBX_MNT_PROC
    SYSFS = lib.SBX_MNT_SYSFS
    DEVPTS = lib.SBX_MNT_DEVPTS
    MQUEUE = lib.SBX_MNT_MQUEUE
    MKDIR = lib.SBX_MNT_MKDIR
    SYMLINK = lib.SBX_MNT_SYMLINK
    REMOUNT = lib.SBX_MNT_REMOUNT
    MASK = lib.SBX_MNT_MASK
    LOWER = lib.SBX_MNT_LOWER
    OVERLAY = lib.SBX_MNT_OVERLAY
    MKNOD = lib.SBX_MNT_MKNOD  # data: "type,major,minor,mode,uid,gid" (the OCI runtime's linux.devices)


class MountFlag(enum.IntFlag):
    RDONLY = lib.SBX_MF_RDONLY
    RECURSIVE = lib.SBX_MF_RECURSIVE
    OPTIONAL = lib.SBX_MF_OPTIONAL
    FILE = lib.SBX_MF_FILE
    NOSUID = lib.SBX_MF_NOSUID
    NODEV = lib.SBX_MF_NODEV
    NOEXEC = lib.SBX_MF_NOEXEC
    USER = lib.SBX_MF_USER  # the op comes from the user's mounts: the child checks where it lands
    IDMAP = lib.SBX_MF_IDMAP  # a bind whose tree the host may idmap and send with the go message
    # Propagation once attached (else private): the OCI runtime's mount options.
    SHARED = lib.SBX_MF_SHARED
    SLAVE = lib.SBX_MF_SLAVE
    UNBINDABLE = lib.SBX_MF_UNBINDABLE
    PROPAGATE_REC = lib.SBX_MF_PROPAGATE_REC


MAX_IDMAPS = lib.SBX_MAX_IDMAPS


def idmapped_tree(source: str, userns_fd: int, *, read_only: bool) -> int:
    """A detached recursive clone of the host path ``source``, idmapped to the
    user namespace ``userns_fd`` (csrc/idmap.c; needs root): the fd.  Raises
    OSError with the kernel's errno."""
    fd = lib.sbx_idmapped_tree(os.fsencode(source), userns_fd, lib.SBX_MF_RDONLY if read_only else 0)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd), source)
    return fd


_STRUCT_CODES = {"uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "int32_t": "i", "uint64_t": "Q", "int64_t": "q"}


def _layout(ctype, base: int = 0) -> list:
    """(offset, struct code) of every scalar field of ``ctype``, nested structs flattened."""
    out = []
    for _name, field in ctype.fields:
        if field.type.kind == "struct":
            out += _layout(field.type, base + field.offset)
        else:
            out.append((base + field.offset, _STRUCT_CODES[field.type.cname]))
    return out


def message_struct(cname: str) -> struct.Struct:
    """The ``struct.Struct`` of a message layout of csrc/sbx.h, with the
    compiler's offsets and padding (fields in declaration order)."""
    ctype = ffi.typeof(cname)
    fmt, at = "=", 0
    for offset, code in _layout(ctype):
        fmt += "x" * (offset - at) + code
        at = offset + struct.calcsize("=" + code)
    fmt += "x" * (ffi.sizeof(ctype) - at)
    return struct.Struct(fmt)


FD_UPPER = lib.SBX_FD_UPPER  # where the init keeps an image root's upper directory
REPORT = message_struct("struct sbx_report")
REPORT_SIZE = REPORT.size


_INIT_NAME = ffi.new("char[]", b"sbx-init")  # own the strings the arrays point to
_NET = ffi.new("char[]", b"net")
_INIT_ARGV = ffi.new("char *[]", [_INIT_NAME, ffi.NULL])
# "net": start making the network namespace before the plan arrives.
_INIT_ARGV_NET = ffi.new("char *[]", [_INIT_NAME, _NET, ffi.NULL])
_INIT_ENVP = ffi.new("char *[]", [ffi.NULL])


def spawn(
    clone_flags: int,
    fds: Sequence[int],
    *,
    caps: int,
    netns: bool,
    fault: Tuple[int, int] = (0, 0),
    cgroup_fd: int = -1,
    attach_fds: Sequence[int] = (),
    new_cgroupns: bool = True,
    pidns_fd: int = -1,
) -> Tuple[int, int]:
    """Clone a child in new namespaces (``clone_flags``) that execs sbx-init
    with ``fds`` = (/dev/null, control socket, parent pidfd, error pipe) as
    its 0-2, 3, 4 and 5, keeping the capability mask ``caps``.

    The child starts in the cgroup v2 directory ``cgroup_fd`` (clone3
    ``CLONE_INTO_CGROUP``), joins the cgroup v1 hierarchies by writing "0"
    to each of ``attach_fds`` (their ``tasks`` files), then, with
    ``new_cgroupns``, unshares a cgroup namespace rooted there.
    ``pidns_fd``: a pid namespace to start the child in (the OCI runtime's
    joined one; ``clone_flags`` then without CLONE_NEWPID).  ``fault``
    (tests): (step INIT_EXEC or CGROUP, errno) to fail.  Returns
    ``(pid, pidfd)`` once it has exec'd (or failed, having reported on the
    error pipe); raises OSError when clone itself fails."""
    if len(attach_fds) > lib.SBX_MAX_ATTACH_FDS:
        raise ValueError(f"at most {lib.SBX_MAX_ATTACH_FDS} cgroup attach fds")
    args = ffi.new("struct sbx_spawn_args *")
    args.cgroup_fd = cgroup_fd
    args.n_attach = len(attach_fds)
    args.attach_fds[0 : len(attach_fds)] = list(attach_fds)
    args.new_cgroupns = int(new_cgroupns)
    args.pidns_fd = pidns_fd
    args.clone_flags = clone_flags
    args.fds = list(fds)
    args.init_fd = init_memfd()
    args.fault_step, args.fault_errno = fault
    args.caps = caps
    args.argv = _INIT_ARGV_NET if netns else _INIT_ARGV
    args.envp = _INIT_ENVP
    pidfd = ffi.new("int *", -1)
    pid = lib.sbx_spawn(args, pidfd)
    if pid < 0:
        raise OSError(-pid, os.strerror(-pid))
    return pid, pidfd[0]


_init_lock = threading.Lock()
_init_fd: Optional[int] = None


def init_memfd() -> int:
    """A sealed memfd holding the init executable, made once per process.

    Executing from a sealed memfd (as runc does) means no container can
    ever write through ``/proc/1/exe`` to a file on the host."""
    global _init_fd
    with _init_lock:
        if _init_fd is None:
            with open(INIT_PATH, "rb") as f:
                data = f.read()
            fd = os.memfd_create("sbx-init", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                write_all(fd, data)
                fcntl.fcntl(
                    fd,
                    fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,
                )
            except BaseException:
                os.close(fd)
                raise
            _init_fd = fd
        return _init_fd


@contextlib.contextmanager
def fs_ids(uid: int, gid: int):
    """Create files as ``uid``/``gid`` in this thread only (setfsuid/setfsgid),
    e.g. as a container's root in a file system of its user namespace."""
    if lib.sbx_set_fsids(uid, gid) != uid:
        lib.sbx_set_fsids(os.geteuid(), os.getegid())
        raise PermissionError(1, f"setfsuid({uid}) was refused")
    try:
        yield
    finally:
        lib.sbx_set_fsids(os.geteuid(), os.getegid())


def open_in_root(root_fd: int, path: str, flags: int = os.O_RDONLY) -> int:
    """Open ``path`` inside the directory ``root_fd`` as if it were ``/``:
    no ``..``, absolute symlink or magic link leads out of it."""
    fd = lib.sbx_open_in_root(root_fd, path.encode(), flags)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd), path)
    return fd


def seccomp_syscall(name: str) -> int:
    """libseccomp's number for a syscall name: native, negative for another
    ABI's syscall, -1 when libseccomp does not know the name."""
    return lib.sbx_seccomp_syscall(name.encode())


def seccomp_syscall_arch(arch: int, name: str) -> int:
    """A syscall's number in the ABI ``arch`` (audit token), negative if it has none there."""
    return lib.sbx_seccomp_syscall_arch(arch, name.encode())


def seccomp_arch(name: str) -> int:
    """The audit architecture token of a libseccomp arch name, 0 if unknown."""
    return lib.sbx_seccomp_arch(name.encode())


def x32_missing() -> bool:
    """True when the kernel has no x32 ABI (its syscalls all fail with ENOSYS)."""
    return bool(lib.sbx_x32_missing())


def compile_seccomp(
    default_action: int,
    bad_arch_action: int,
    arches: Sequence[int],
    rules: Sequence[Tuple[int, int, Sequence[Tuple[int, int, int, int]]]],
) -> bytes:
    """Classic BPF for rules ``(syscall, action, [(arg, op, value, value_two)])``
    compiled by libseccomp.  Raises ``OSError`` with ``.rule`` the index of the
    rule libseccomp refused (-1: the filter itself)."""
    c_rules = ffi.new("struct sbx_seccomp_rule[]", max(1, len(rules)))
    for i, (syscall, action, conds) in enumerate(rules):
        c_rules[i].syscall = syscall
        c_rules[i].action = action
        c_rules[i].n_conds = len(conds)
        for j, cond in enumerate(conds):
            c_rules[i].conds[j] = cond
    c_arches = ffi.new("uint32_t[]", list(arches) or [0])
    failed = ffi.new("int *")
    fd = os.memfd_create("sbx-seccomp", os.MFD_CLOEXEC)
    try:
        r = lib.sbx_seccomp_compile(
            default_action, bad_arch_action, c_arches, len(arches), c_rules, len(rules), fd, failed
        )
        if r < 0:
            err = OSError(-r, os.strerror(-r))
            err.rule = failed[0]
            raise err
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)
