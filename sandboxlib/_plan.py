"""Build the C plan (``struct sbx_plan``) for one spawn.

A :class:`Plan` owns every cffi allocation the child will read; it must
outlive the spawn call.  Building it spawns nothing, so it is testable on
its own."""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

from ._lowlevel import ffi, lib
from .rootfs import MountOp

__all__ = ["Plan", "build_plan", "BASE_DIR"]

BASE_DIR = "/tmp"       # host dir the child's scratch tmpfs is mounted over (in its own mount ns)


class Plan:
    """The C plan plus the memory it points to."""

    def __init__(self) -> None:
        self._keep: List[object] = []
        self.c = ffi.new("struct sbx_plan *")
        self.ops: Sequence[MountOp] = ()

    def _str(self, text: Optional[str]):
        if text is None:
            return ffi.NULL
        buf = ffi.new("char[]", text.encode())
        self._keep.append(buf)
        return buf

    def _argv(self, items: Sequence[str]):
        strings = [self._str(s) for s in items]
        array = ffi.new("char *[]", strings + [ffi.NULL])
        self._keep.append(array)
        return array


class _MountArray:
    """The C array of a layout's mount ops.  Read-only for the child, so
    one array serves every spawn of the same layout."""

    def __init__(self, ops: Tuple[MountOp, ...]) -> None:
        self.keep: List[object] = []
        self.array = ffi.new("struct sbx_mount_op[]", max(len(ops), 1))
        for i, op in enumerate(ops):
            entry = self.array[i]
            entry.kind = int(op.kind)
            entry.flags = int(op.flags)
            entry.source = self._str(op.source)
            entry.target = self._str(op.target)
            entry.data = self._str(op.data)

    def _str(self, text: Optional[str]):
        if text is None:
            return ffi.NULL
        buf = ffi.new("char[]", text.encode())
        self.keep.append(buf)
        return buf


@functools.lru_cache(maxsize=64)
def _mount_array(ops: Tuple[MountOp, ...]) -> _MountArray:
    return _MountArray(ops)


def clone_flags(*, userns: bool) -> int:
    flags = (lib.CLONE_NEWNS | lib.CLONE_NEWPID | lib.CLONE_NEWUTS | lib.CLONE_NEWIPC
             | lib.CLONE_NEWCGROUP)
    if userns:
        flags |= lib.CLONE_NEWUSER
    return flags


def build_plan(*, ops: Sequence[MountOp], rootfs: Optional[str], read_only: bool,
               hostname: Optional[str], userns: bool, netns: bool, set_groups: bool,
               fds: dict, fault: Optional[tuple] = None) -> Plan:
    """Everything the child needs; ``fds`` maps sync/error/control/parent_pidfd/init."""
    plan = Plan()
    c = plan.c
    c.clone_flags = clone_flags(userns=userns)
    # A network namespace takes ~0.5 ms to create: the child unshares it
    # itself while the parent writes the id maps.
    c.unshare_flags = lib.CLONE_NEWNET if netns else 0
    c.sync_fd = fds["sync"]
    c.error_fd = fds["error"]
    c.control_fd = fds["control"]
    c.parent_pidfd = fds["parent_pidfd"]
    c.init_fd = fds["init"]
    c.become_root = int(userns)
    c.set_groups = int(set_groups)
    c.loopback_up = int(netns)
    c.hostname = plan._str(hostname)
    c.base_dir = plan._str(BASE_DIR)
    c.rootfs = plan._str(rootfs)
    c.read_only_root = int(read_only)
    if fault:
        c.fault_step, c.fault_errno = fault
    mounts = _mount_array(tuple(ops))
    plan._keep.append(mounts)
    c.mounts = mounts.array
    tree_fds = ffi.new("int[]", max(len(ops), 1))
    plan._keep.append(tree_fds)
    c.tree_fds = tree_fds
    c.n_mounts = len(ops)
    plan.ops = tuple(ops)
    c.init_argv = plan._argv(["sbx-init"])
    c.init_envp = plan._argv([])
    return plan
