"""Seccomp policies: which syscalls a container's commands may make.

A :class:`Seccomp` is an immutable list of rules in the model of Docker's
and OCI's seccomp profiles (read with :meth:`Seccomp.from_json`).  It is
compiled with libseccomp in the host process (``seccomp_bpf``), cached per
policy and capability set, and every command of the container installs the
compiled filter last, right before its ``execve`` - or, with Docker's
default policy, inherits it from the launcher that forks commands exec'd
into a running container (csrc/launcher.c), or, in a one-shot run, from the
init, which installed it in its own filter's place (runtime/lifecycle.py).
"""

from __future__ import annotations

import enum
import errno as E
import functools
import os
from typing import Any, Mapping, Optional, Tuple, Union

import attrs

from ..errors import ConfigError
from .profile import parse_profile
from .rules import Action, SeccompRule, check_errno, check_syscall

__all__ = ["Seccomp", "DEFAULT_PROFILE", "DEFAULT", "SeccompOption", "seccomp_option"]

DEFAULT_PROFILE = os.path.join(os.path.dirname(os.path.realpath(__file__)), "data", "seccomp-default.json")


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
    def default(cls) -> Seccomp:
        """Docker's default profile (see ``sandboxlib/data/README.md`` for its version)."""
        return _default()

    @classmethod
    def from_json(cls, profile: Union[str, os.PathLike, Mapping[str, Any]]) -> Seccomp:
        """A policy from a Docker/OCI seccomp profile: a path to its JSON or the parsed dict.

        Raises:
            ConfigError: malformed JSON, unknown actions, operators, arches or
                syscall names; ``field`` names the file and the place, e.g.
                ``profile.json: syscalls[3].names[1]``.
        """
        return cls(**parse_profile(profile))

    def _with_rule(self, names: Tuple[str, ...], action: Action, errno: Optional[int], field: str) -> Seccomp:
        if not names:
            raise ConfigError(field, "name at least one syscall")
        checked = tuple(check_syscall(n, f"{field}[{i}]") for i, n in enumerate(names))
        rule = SeccompRule(names=checked, action=action, errno=errno, origin=f"{field}{list(checked)}")
        return attrs.evolve(self, rules=_without(self.rules, checked) + (rule,))

    def deny(self, *names: str, errno: int = E.EPERM) -> Seccomp:
        """A policy in which ``names`` fail with ``errno`` (whatever the rules said)."""
        return self._with_rule(names, Action.ERRNO, check_errno(errno, "seccomp.deny.errno"), "seccomp.deny")

    def kill(self, *names: str) -> Seccomp:
        """A policy in which ``names`` kill the process with SIGSYS."""
        return self._with_rule(names, Action.KILL_PROCESS, None, "seccomp.kill")

    def allow(self, *names: str) -> Seccomp:
        """A policy in which ``names`` are allowed, with any arguments."""
        return self._with_rule(names, Action.ALLOW, None, "seccomp.allow")


class _Default(enum.Enum):
    """The marker of "Docker's default policy" in signatures (None disables seccomp)."""

    DEFAULT = "default"


DEFAULT = _Default.DEFAULT
SeccompOption = Union[Seccomp, None, _Default]


def seccomp_option(value: SeccompOption) -> Optional[Seccomp]:
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
    rules = tuple(
        SeccompRule(
            names=names, action=Action.ERRNO, errno=E.EPERM, not_caps=frozenset({cap}), origin=f"init policy: {cap}"
        )
        for names, cap in _INIT_DENIED
    )
    return Seccomp(
        default_action=Action.ALLOW, architectures=_default().architectures, rules=rules, source="the init's policy"
    )


@functools.lru_cache(maxsize=1)
def _default() -> Seccomp:
    return Seccomp.from_json(DEFAULT_PROFILE)
