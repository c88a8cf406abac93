"""Build the set-up plan of one container: the PLAN message that sbx-init
receives right after it starts (layout in csrc/sbx.h: struct sbx_plan_hdr,
struct sbx_mount_rec, then the strings).

Everything is decided here; the C side only parses and applies it.
Building a plan spawns nothing, so it is testable on its own."""

from __future__ import annotations

import array
import errno
import functools
import os
import socket
import struct
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..errors import ConfigError
from .binding import JOIN_NAMESPACES, lib, message_struct
from .mount_op import MountOp

__all__ = ["build_plan", "clone_flags", "receive_netns", "BASE_DIR", "GO_MESSAGE"]

BASE_DIR = "/tmp"  # host dir the child's scratch tmpfs is mounted over (in its own mount ns)
NO_STRING = lib.SBX_NO_STRING
_HEADER = message_struct("struct sbx_plan_hdr")
_RECORD = message_struct("struct sbx_mount_rec")
GO_MESSAGE = struct.pack("=I", lib.SBX_MSG_GO)


def clone_flags(*, userns: bool, new_pid: bool = True, new_uts: bool = True) -> int:
    """The namespaces of the clone.  Not the cgroup namespace: the child
    unshares that itself once it is in its cgroups, so that it is rooted there.
    ``new_pid`` False: the spawn starts it in a pid namespace it is given, or
    the caller's; ``new_uts`` False: the caller's UTS namespace."""
    flags = lib.CLONE_NEWNS | lib.CLONE_NEWIPC | (lib.CLONE_NEWPID if new_pid else 0)
    flags |= lib.CLONE_NEWUTS if new_uts else 0
    if userns:
        flags |= lib.CLONE_NEWUSER
    return flags


class _Strings:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, text: Optional[str], base: int = 0) -> int:
        if text is None:
            return NO_STRING
        offset = base + len(self.data)
        self.data += text.encode() + b"\0"
        return offset


class _Same:
    """A cache key that is its object's identity: hashing a layout's tuple
    hashed each of its ~40 ops (a Python call each) at every spawn, while
    the layout itself comes from a cache, the same tuple every time.  The
    key holds the tuple, so its id is not reused while cached."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _encode_ops(ops: Tuple[MountOp, ...]) -> Tuple[bytes, bytes]:
    return _encode_same(_Same(ops))


@functools.lru_cache(maxsize=64)
def _encode_same(key: _Same) -> Tuple[bytes, bytes]:
    """Records and strings of a layout: the same for every spawn of it."""
    ops: Tuple[MountOp, ...] = key.obj  # type: ignore[assignment]
    strings = _Strings()
    records = b"".join(
        _RECORD.pack(int(op.kind), int(op.flags), strings.add(op.source), strings.add(op.target), strings.add(op.data))
        for op in ops
    )
    return records, bytes(strings.data)


def build_plan(
    *,
    ops: Sequence[MountOp],
    rootfs: Optional[str],
    read_only: bool,
    hostname: Optional[str],
    userns: bool,
    netns: bool,
    set_groups: bool,
    send_netns: bool = False,
    fault: Optional[Tuple[int, int]] = None,
    seccomp_filter: bytes = b"",
    launcher: bool = False,
    init_caps: int = 0,
    init_filter: bytes = b"",
    detached: bool = False,
    keep_privs: bool = False,
    mount_order: bool = False,
    root_propagation: int = 0,
    joins: Optional[Mapping[str, str]] = None,
    cgroup_launcher: Optional[Tuple[bytes, bytes]] = None,
    forkers: int = 0,
    scope: bool = False,
) -> bytes:
    """The PLAN message for one container; ``seccomp_filter`` is the compiled
    BPF the init installs in every command (empty: none).  ``launcher``: the
    filter allows the whole command set-up, so commands may be forked by a
    process that installed it once (csrc/launcher.c).  ``init_caps`` and
    ``init_filter``: what the init keeps once set up (csrc/init.c: lock_down).
    ``send_netns``: the init sends its new network namespace before waiting
    for go (:func:`receive_netns`), for the parent to connect it.
    ``detached``: the container outlives its creator (the OCI runtime's; the
    init's fd 4 is then a listening control socket, not the creator's pidfd).
    ``keep_privs``: the init does not set no_new_privs on itself (an OCI
    config's ``noNewPrivileges: false``; the library never asks it).
    ``mount_order``: the container's mountinfo lists the mounts in plan
    order (binds cloned again when applied; the runtime-spec's order).
    ``root_propagation``: MountFlag propagation bits of the root mount (0:
    private; always a peer group of the container's own).  ``joins``:
    namespace type (``JOIN_NAMESPACES``) -> a path the init setns()es
    into, replacing the new one (the OCI runtime's; not with ``netns``).
    ``cgroup_launcher``: commands with a cgroup of their own are forked by a
    launcher too; its filter and the one each of its commands adds
    (``security.bpf.clone3_split``); ``forkers``: at most that many of the
    cgroups the host keeps for reuse get a resident forker (csrc/init.c),
    with the cgroup launcher only.  ``scope``: the container's processes
    may signal and trace only each other (a Landlock domain of their own: in
    the host's pid namespace they share a host uid with other containers')."""
    ops = tuple(ops)  # (the layout's cached tuple is kept as it is)
    static_key = _PlanKey(
        id(ops),
        rootfs,
        read_only,
        userns,
        netns,
        set_groups,
        send_netns,
        seccomp_filter,
        launcher,
        init_caps,
        init_filter,
        detached,
        keep_privs,
        mount_order,
        root_propagation,
        None if joins is None else tuple(joins.get(kind) for kind in JOIN_NAMESPACES),
        cgroup_launcher,
        forkers,
        scope,
    )
    static = _STATIC.get(static_key)
    if static is None or static.ops is not ops:
        static = _static_part(ops, static_key)
        if len(_STATIC) >= _STATIC_SIZE:
            _STATIC.clear()  # (a process that makes many kinds of containers: rarely)
        _STATIC[static_key] = static
    host = b"" if hostname is None else hostname.encode() + b"\0"
    fault_step, fault_errno = fault or (0, 0)
    header = _HEADER.pack(
        lib.SBX_MSG_PLAN,
        static.flags,
        static.newnet,
        fault_step,
        fault_errno,
        NO_STRING if hostname is None else static.strings_len,  # the hostname comes last
        *static.offsets,
        len(ops),
        static.strings_len + len(host),
        *static.rest,
    )
    message = header + static.body + host
    if len(message) > lib.SBX_MAX_REQUEST:
        raise ConfigError("mounts", f"the set-up plan takes {len(message)} bytes; the limit is {lib.SBX_MAX_REQUEST}")
    return message


class _PlanKey(NamedTuple):
    """What a PLAN message but for its hostname and fault is made of
    (``build_plan``'s options; the ops by identity: see ``_StaticPart.ops``)."""

    ops_id: int
    rootfs: Optional[str]
    read_only: bool
    userns: bool
    netns: bool
    set_groups: bool
    send_netns: bool
    seccomp_filter: bytes
    launcher: bool
    init_caps: int
    init_filter: bytes
    detached: bool
    keep_privs: bool
    mount_order: bool
    root_propagation: int
    joins: Optional[Tuple[Optional[str], ...]]  # a path per JOIN_NAMESPACES kind
    cgroup_launcher: Optional[Tuple[bytes, bytes]]
    forkers: int
    scope: bool


class _StaticPart(NamedTuple):
    """A PLAN message but for its hostname and fault: the same for every
    container of one configuration, so built once (``build_plan``)."""

    ops: Tuple[MountOp, ...]  # (held: its id, in the key, is not reused while cached)
    flags: int
    newnet: int
    offsets: Tuple[int, ...]  # base dir's, rootfs's
    strings_len: int  # without the hostname
    rest: Tuple[int, ...]  # the header's fields after the strings' length
    body: bytes  # what follows the header, without the hostname


_STATIC: Dict[_PlanKey, _StaticPart] = {}
_STATIC_SIZE = 64


def _static_part(ops: Tuple[MountOp, ...], key: _PlanKey) -> _StaticPart:
    if len(ops) > lib.SBX_MAX_MOUNTS:
        raise ConfigError("mounts", f"{len(ops)} mount operations; the limit is {lib.SBX_MAX_MOUNTS}")
    records, op_strings = _encode_ops(ops)
    extra = _Strings()
    base = len(op_strings)
    offsets = (extra.add(BASE_DIR, base), extra.add(key.rootfs, base))
    joined = [extra.add(path, base) for path in key.joins or [None] * len(JOIN_NAMESPACES)]
    flags = lib.SBX_PLAN_NEW_MNTNS
    flags |= lib.SBX_PLAN_BECOME_ROOT if key.userns else 0
    flags |= lib.SBX_PLAN_SET_GROUPS if key.set_groups else 0
    flags |= lib.SBX_PLAN_LOOPBACK_UP if key.netns else 0
    flags |= lib.SBX_PLAN_READ_ONLY_ROOT if key.read_only else 0
    flags |= lib.SBX_PLAN_LAUNCHER if key.launcher and key.seccomp_filter else 0
    flags |= lib.SBX_PLAN_SEND_NETNS if key.netns and key.send_netns else 0
    flags |= lib.SBX_PLAN_DETACHED if key.detached else 0
    flags |= lib.SBX_PLAN_KEEP_PRIVS if key.keep_privs else 0
    flags |= lib.SBX_PLAN_MOUNT_ORDER if key.mount_order else 0
    flags |= lib.SBX_PLAN_SCOPE if key.scope else 0
    launcher_filter, clone3_filter = key.cgroup_launcher or (b"", b"")
    cgroup_launcher = key.cgroup_launcher is not None and key.launcher and bool(key.seccomp_filter)
    flags |= lib.SBX_PLAN_CGROUP_LAUNCHER if cgroup_launcher else 0
    strings = op_strings + bytes(extra.data)
    # A network namespace takes ~0.5 ms to create: the child unshares it
    # itself while the parent writes the id maps.
    return _StaticPart(
        ops=ops,
        flags=flags,
        newnet=lib.CLONE_NEWNET if key.netns else 0,
        offsets=offsets,
        strings_len=len(strings),
        rest=(
            len(key.seccomp_filter),
            key.init_caps,
            len(key.init_filter),
            key.root_propagation,
            *joined,
            len(launcher_filter),
            len(clone3_filter),
            key.forkers if cgroup_launcher else 0,
        ),
        body=key.seccomp_filter + key.init_filter + launcher_filter + clone3_filter + records + strings,
    )


NETNS_MESSAGE = struct.pack("=I", lib.SBX_MSG_NETNS)


def receive_netns(control: socket.socket) -> int:
    """The network namespace fd the init sends with ``send_netns`` (OSError:
    the init ended first; it then reports why on its error pipe)."""
    fds = array.array("i")
    message, ancillary, _, _ = control.recvmsg(16, socket.CMSG_SPACE(fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if message != NETNS_MESSAGE or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ConnectionError(errno.EBADMSG, "the init sent no network namespace")
    return fds[0]
