"""The parts of a seccomp policy: actions, argument comparisons, rules, syscall names."""

from __future__ import annotations

import enum
import errno as E
from typing import FrozenSet, Optional, Tuple

import attrs

from ..errors import ConfigError
from ..native import binding

__all__ = [
    "Action",
    "ACTION_NAMES",
    "Op",
    "SeccompArg",
    "SeccompRule",
    "NEWER_SYSCALLS",
    "check_syscall",
    "check_errno",
]

# Syscalls newer than Debian 12's libseccomp (2.5.4) knows: their x86_64 and
# i386 numbers (x32: x86_64's | 0x40000000), None where the ABI has none.
NEWER_SYSCALLS = {
    "uretprobe": (335, None),
    "statmount": (457, 457),
    "listmount": (458, 458),
    "lsm_get_self_attr": (459, 459),
    "lsm_set_self_attr": (460, 460),
    "lsm_list_modules": (461, 461),
    "mseal": (462, 462),
    "setxattrat": (463, 463),
    "getxattrat": (464, 464),
    "listxattrat": (465, 465),
    "removexattrat": (466, 466),
    "open_tree_attr": (467, 467),
    "file_getattr": (468, 468),
    "file_setattr": (469, 469),
    "riscv_hwprobe": (None, None),
}


class Action(enum.Enum):
    """What a rule does (the kernel's ``SECCOMP_RET_*``)."""

    ALLOW = 0x7FFF0000
    ERRNO = 0x00050000  # fail with the rule's errno
    KILL_THREAD = 0x00000000
    KILL_PROCESS = 0x80000000  # SIGSYS, the whole process
    TRAP = 0x00030000  # SIGSYS the process may handle
    TRACE = 0x7FF00000
    LOG = 0x7FFC0000


# Docker/OCI action names; SCMP_ACT_KILL is KILL_THREAD, as in libseccomp.
ACTION_NAMES = {f"SCMP_ACT_{a.name}": a for a in Action}
ACTION_NAMES["SCMP_ACT_KILL"] = Action.KILL_THREAD


class Op(enum.IntEnum):
    """Argument comparisons (libseccomp's ``enum scmp_compare``)."""

    NE = 1
    LT = 2
    LE = 3
    EQ = 4
    GE = 5
    GT = 6
    MASKED_EQ = 7  # (arg & value) == value_two


def check_syscall(name: object, field: str) -> str:
    """A syscall name libseccomp (or our table of newer ones) knows, for any ABI."""
    if not isinstance(name, str) or not name:
        raise ConfigError(field, f"expected a syscall name, got {name!r}")
    if name not in NEWER_SYSCALLS and binding.seccomp_syscall(name) == -1:
        raise ConfigError(field, f"unknown syscall {name!r}")
    return name


def check_errno(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ConfigError(field, f"expected an errno number (e.g. {E.EPERM}), got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class SeccompArg:
    """A condition on one syscall argument: ``args[index] <op> value``."""

    index: int
    op: Op
    value: int
    value_two: int = 0


@attrs.frozen(kw_only=True)
class SeccompRule:
    """``action`` for ``names`` when every condition in ``args`` holds.

    ``caps``/``arches``/``min_kernel`` (Docker's ``includes``) and their
    ``not_`` forms (``excludes``) choose whether the rule applies to a
    container: capability names without ``CAP_``, Docker's architecture
    names (``amd64``, ``x32``, ...), a kernel version such as ``"4.8"``.
    """

    names: Tuple[str, ...]
    action: Action
    errno: Optional[int] = None
    args: Tuple[SeccompArg, ...] = ()
    caps: FrozenSet[str] = frozenset()
    arches: FrozenSet[str] = frozenset()
    min_kernel: Optional[str] = None
    not_caps: FrozenSet[str] = frozenset()
    not_arches: FrozenSet[str] = frozenset()
    not_min_kernel: Optional[str] = None
    origin: str = attrs.field(default="", eq=False)  # e.g. "profile.json: syscalls[3]"
