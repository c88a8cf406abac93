"""Seccomp policies: which syscalls a container's commands may make.

A :class:`Seccomp` is an immutable list of rules in the model of Docker's
and OCI's seccomp profiles (read with :meth:`Seccomp.from_json`).  It is
compiled with libseccomp in the host process (``seccomp_bpf``), cached per
policy and capability set, and every command of the container installs the
compiled filter last, right before its ``execve`` - or, with Docker's
default policy, inherits it from the launcher that forks commands exec'd
into a running container (csrc/launcher.c).
"""
from __future__ import annotations

import enum
import errno as E
import functools
import os
import pathlib
from typing import Any, FrozenSet, Mapping, Optional, Tuple, Union

import attrs

from ..native import binding
from ..errors import ConfigError

__all__ = ["Seccomp", "SeccompRule", "SeccompArg", "Action", "Op", "DEFAULT_PROFILE", "DEFAULT", "seccomp_option"]

DEFAULT_PROFILE = pathlib.Path(__file__).resolve().parent / "data" / "seccomp-default.json"

# Syscalls newer than Debian 12's libseccomp (2.5.4) knows: their x86_64 and
# i386 numbers (x32: x86_64's | 0x40000000), None where the ABI has none.
NEWER_SYSCALLS = {
    "uretprobe": (335, None), "statmount": (457, 457), "listmount": (458, 458),
    "lsm_get_self_attr": (459, 459), "lsm_set_self_attr": (460, 460), "lsm_list_modules": (461, 461),
    "mseal": (462, 462), "setxattrat": (463, 463), "getxattrat": (464, 464),
    "listxattrat": (465, 465), "removexattrat": (466, 466), "open_tree_attr": (467, 467),
    "file_getattr": (468, 468), "file_setattr": (469, 469), "riscv_hwprobe": (None, None),
}


class Action(enum.Enum):
    """What a rule does (the kernel's ``SECCOMP_RET_*``)."""

    ALLOW = 0x7FFF0000
    ERRNO = 0x00050000         # fail with the rule's errno
    KILL_THREAD = 0x00000000
    KILL_PROCESS = 0x80000000  # SIGSYS, the whole process
    TRAP = 0x00030000          # SIGSYS the process may handle
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


def _errno(value: object, field: str) -> int:
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


def _without(rules: Tuple[SeccompRule, ...], names: Tuple[str, ...]) -> Tuple[SeccompRule, ...]:
    """The rules with ``names`` removed (a rule left with none is dropped)."""
    gone = set(names)
    out = []
    for rule in rules:
        kept = tuple(n for n in rule.names if n not in gone)
        if kept:
            out.append(attrs.evolve(rule, names=kept) if kept != rule.names else rule)
    return tuple(out)


@attrs.frozen(kw_only=True, cache_hash=True)
class Seccomp:
    """An immutable seccomp policy.

    Build one with :meth:`default` (Docker's default profile),
    :meth:`from_json` (a Docker or OCI seccomp profile) and the variants
    :meth:`deny`, :meth:`kill` and :meth:`allow`, which return new policies::

        Seccomp.default().deny("ptrace", "personality", errno=errno.EPERM)

    Attributes:
        default_action: what any syscall no rule matches does.
        default_errno: its errno, with ``Action.ERRNO``.
        architectures: libseccomp names of the ABIs the filter admits
            (``"x86_64"``, ``"x86"``, ``"x32"``); other ABIs are killed.
            Empty: the native one only.
        rules: the rules, in order.
    """

    default_action: Action = Action.ERRNO
    default_errno: int = E.EPERM
    architectures: Tuple[str, ...] = ()
    rules: Tuple[SeccompRule, ...] = ()
    source: str = attrs.field(default="", eq=False)  # the file it came from, for messages

    @classmethod
    def default(cls) -> "Seccomp":
        """Docker's default profile (see ``sandboxlib/data/README.md`` for its version)."""
        return _default()

    @classmethod
    def from_json(cls, profile: Union[str, os.PathLike, Mapping[str, Any]]) -> "Seccomp":
        """A policy from a Docker/OCI seccomp profile: a path to its JSON or the parsed dict.

        Raises:
            ConfigError: malformed JSON, unknown actions, operators, arches or
                syscall names; ``field`` names the file and the place, e.g.
                ``profile.json: syscalls[3].names[1]``.
        """
        from .profile import load_profile
        return load_profile(profile)

    def _with_rule(self, names: Tuple[str, ...], action: Action, errno: Optional[int], field: str) -> "Seccomp":
        if not names:
            raise ConfigError(field, "name at least one syscall")
        checked = tuple(check_syscall(n, f"{field}[{i}]") for i, n in enumerate(names))
        rule = SeccompRule(names=checked, action=action, errno=errno, origin=f"{field}{list(checked)}")
        return attrs.evolve(self, rules=_without(self.rules, checked) + (rule,))

    def deny(self, *names: str, errno: int = E.EPERM) -> "Seccomp":
        """A policy in which ``names`` fail with ``errno`` (whatever the rules said)."""
        return self._with_rule(names, Action.ERRNO, _errno(errno, "seccomp.deny.errno"), "seccomp.deny")

    def kill(self, *names: str) -> "Seccomp":
        """A policy in which ``names`` kill the process with SIGSYS."""
        return self._with_rule(names, Action.KILL_PROCESS, None, "seccomp.kill")

    def allow(self, *names: str) -> "Seccomp":
        """A policy in which ``names`` are allowed, with any arguments."""
        return self._with_rule(names, Action.ALLOW, None, "seccomp.allow")


class _Default(enum.Enum):
    """The marker of "Docker's default policy" in signatures (None disables seccomp)."""

    DEFAULT = "default"


DEFAULT = _Default.DEFAULT
SeccompOption = Union[Seccomp, None, _Default]


def seccomp_option(value: object) -> Optional[Seccomp]:
    """``DEFAULT`` -> :meth:`Seccomp.default`; a Seccomp or None as it is."""
    if value is DEFAULT:
        return Seccomp.default()
    if value is not None and not isinstance(value, Seccomp):
        raise ConfigError("seccomp", f"expected a Seccomp policy or None, got {type(value).__name__}")
    return value


# The init's own filter (csrc/init.c: lock_down), inherited by every process
# of the container whatever its policy, seccomp=None included: so it
# refuses only syscalls that need a capability the container does not
# have (each rule drops out when it has it), which no command of it can
# make anyway; the filter stops them before the kernel parses them.
_INIT_DENIED = (
    (("init_module", "finit_module", "delete_module"), "SYS_MODULE"),
    (("kexec_load", "kexec_file_load", "reboot"), "SYS_BOOT"),
    (("iopl", "ioperm"), "SYS_RAWIO"),
    (("settimeofday", "clock_settime", "stime"), "SYS_TIME"),
    (("acct",), "SYS_PACCT"),
    (("swapon", "swapoff"), "SYS_ADMIN"),
    (("open_by_handle_at",), "DAC_READ_SEARCH"),
)


@functools.lru_cache(maxsize=1)
def init_policy() -> Seccomp:
    """The init's filter: allow all, but EPERM for the syscalls of a capability the container lacks."""
    rules = tuple(SeccompRule(names=names, action=Action.ERRNO, errno=E.EPERM, not_caps=frozenset({cap}),
                              origin=f"init policy: {cap}") for names, cap in _INIT_DENIED)
    return Seccomp(default_action=Action.ALLOW, architectures=_default().architectures, rules=rules,
                   source="the init's policy")


@functools.lru_cache(maxsize=1)
def _default() -> Seccomp:
    return Seccomp.from_json(DEFAULT_PROFILE)
