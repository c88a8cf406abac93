"""Build the C plan (``struct sbx_plan``) for one spawn.

A :class:`Plan` owns every cffi allocation the child will read; it must
outlive the spawn call.  Building it spawns nothing, so it is testable on
its own."""
from __future__ import annotations

from typing import List, Optional, Sequence

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


def clone_flags(*, userns: bool, netns: bool) -> int:
    flags = (lib.CLONE_NEWNS | lib.CLONE_NEWPID | lib.CLONE_NEWUTS | lib.CLONE_NEWIPC
             | lib.CLONE_NEWCGROUP)
    if userns:
        flags |= lib.CLONE_NEWUSER
    if netns:
        flags |= lib.CLONE_NEWNET
    return flags


def build_plan(*, ops: Sequence[MountOp], rootfs: Optional[str], read_only: bool,
               hostname: Optional[str], userns: bool, netns: bool, set_groups: bool,
               fds: dict, fault: Optional[tuple] = None) -> Plan:
    """Everything the child needs; ``fds`` maps sync/error/control/parent_pidfd/init."""
    plan = Plan()
    c = plan.c
    c.clone_flags = clone_flags(userns=userns, netns=netns)
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
    array = ffi.new("struct sbx_mount_op[]", max(len(ops), 1))
    plan._keep.append(array)
    for i, op in enumerate(ops):
        entry = array[i]
        entry.kind = int(op.kind)
        entry.flags = int(op.flags)
        entry.source = plan._str(op.source)
        entry.target = plan._str(op.target)
        entry.data = plan._str(op.data)
    c.mounts = array
    tree_fds = ffi.new("int[]", max(len(ops), 1))
    plan._keep.append(tree_fds)
    c.tree_fds = tree_fds
    c.n_mounts = len(ops)
    plan.ops = tuple(ops)
    c.init_argv = plan._argv(["sbx-init"])
    c.init_envp = plan._argv([])
    return plan
