"""Compile a :class:`~sandboxlib.security.seccomp.Seccomp` policy for one container
into the classic BPF its commands install (in the host process, cached).

Docker's rule selection: a rule applies when the container has all of its
``includes.caps`` and none of its ``excludes.caps``, and when the host's
architecture and kernel match.  libseccomp compiles the rules for every ABI
of the policy (x86_64, and the i386 ``int 0x80`` and x32 routes), except
what our prologue (``seccomp_prologue``) decides in fewer instructions:
syscalls allowed without conditions (as ranges), those newer than Debian's
libseccomp knows, and runc's ``ENOSYS`` for syscalls newer than any we know.
"""

from __future__ import annotations

import errno as E
import functools
import os
import struct
from typing import Dict, FrozenSet, Optional, Tuple

import attrs

from ..errors import ConfigError
from ..native import binding
from .profile import _kernel_version, native_arch
from .prologue import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_BIT, AbiPlan, assemble
from .rules import NEWER_SYSCALLS, Action, SeccompRule
from .seccomp import Seccomp

__all__ = ["compile_policy", "clone3_split"]

MAX_KNOWN_SYSCALL = max(n for pair in NEWER_SYSCALLS.values() for n in pair if n is not None)
BPF_MAX_INSNS = 4096


def action_word(action: Action, errno: Optional[int]) -> int:
    return action.value | ((errno or 0) & 0xFFFF if action in (Action.ERRNO, Action.TRACE) else 0)


def _applies(rule: SeccompRule, caps: FrozenSet[str]) -> bool:
    arch = native_arch()[1]
    kernel = _kernel_version(os.uname().release)
    if rule.not_arches and arch in rule.not_arches or rule.not_caps & caps:
        return False
    if rule.not_min_kernel and kernel >= _kernel_version(rule.not_min_kernel):
        return False
    if rule.arches and arch not in rule.arches or not rule.caps <= caps:
        return False
    return not (rule.min_kernel and kernel < _kernel_version(rule.min_kernel))


# Multiplexed on i386 (socketcall, ipc): libseccomp also rewrites their
# rules for the multiplexer, so they never take the fast path.
_MULTIPLEXED = frozenset(
    "socket bind connect listen accept accept4 getsockname getpeername socketpair send recv sendto "
    "recvfrom shutdown setsockopt getsockopt sendmsg recvmsg recvmmsg sendmmsg semop semget semctl "
    "semtimedop msgsnd msgrcv msgget msgctl shmat shmdt shmget shmctl".split()
)


def _split(policy: Seccomp, caps: FrozenSet[str]):
    """(default word, libseccomp rules, their origins, {newer syscall: word},
    names every applicable rule allows unconditionally)."""
    default = action_word(policy.default_action, policy.default_errno)
    entries = []  # (name, word, conds, origin)
    for rule in policy.rules:
        if _applies(rule, caps):
            word = action_word(rule.action, rule.errno)
            conds = [(a.index, int(a.op), a.value, a.value_two) for a in rule.args]
            entries += [(name, word, conds, rule.origin) for name in rule.names]
    plain = {name for name, word, conds, _ in entries if word == Action.ALLOW.value and not conds}
    other = {name for name, word, conds, _ in entries if word != Action.ALLOW.value or conds}
    fast = plain - other - _MULTIPLEXED - set(NEWER_SYSCALLS) if default != Action.ALLOW.value else set()
    rules, origins, newer, seen = [], [], {}, set()
    for name, word, conds, origin in entries:
        key = (name, word, tuple(conds))
        if key in seen:  # an exact repeat (podman's profile has some): libseccomp would refuse it
            continue
        seen.add(key)
        if name in NEWER_SYSCALLS:
            if conds:
                raise ConfigError(origin, f"conditions on {name!r} need a newer libseccomp")
            newer[name] = word
        elif word != default and name not in fast:  # libseccomp refuses a rule that repeats the default
            rules.append((binding.seccomp_syscall(name), word, conds))
            origins.append(f"{origin} ({name})")
    return default, rules, origins, newer, fast


I386_SOCKETCALL, SYS_SOCKET = 102, 1


def _abi_plans(
    arches: Tuple[str, ...], newer: Dict[str, int], fast, stub: bool, no_x32: bool, socketcall_word: Optional[int]
):
    """The prologue's plan for x86_64, x32 and i386 (absent: not in the filter)."""

    def plan(token: int, column: int, bit: int = 0, stub_above: Optional[int] = None) -> AbiPlan:
        allowed = [n for n in (binding.seccomp_syscall_arch(token, name) for name in fast) if n >= 0]
        exact = {}
        for name, word in newer.items():
            nr = NEWER_SYSCALLS[name][column]
            if nr is not None:
                if word == Action.ALLOW.value:
                    allowed.append(nr | bit)
                else:
                    exact[nr | bit] = word
        return AbiPlan(allowed, exact, stub_above)

    above = MAX_KNOWN_SYSCALL if stub else None
    plans = {}
    if "x86_64" in arches:
        plans["x86_64"] = plan(AUDIT_ARCH_X86_64, 0, stub_above=above)
    if no_x32:
        plans["x32"] = AbiPlan(enosys_all=True)
    elif "x32" in arches:
        plans["x32"] = plan(binding.seccomp_arch("x32"), 1, X32_BIT)
    if "x86" in arches:
        plans["x86"] = plan(AUDIT_ARCH_I386, 1, stub_above=above)
        if socketcall_word is not None:
            plans["x86"].by_arg0[I386_SOCKETCALL] = (SYS_SOCKET, socketcall_word)
    return plans


def _compile(
    policy: Seccomp, caps: FrozenSet[str], names: Tuple[str, ...], no_x32: bool, use_fast_path: bool
) -> Optional[bytes]:
    """Prologue + libseccomp's program; None if the prologue does not fit."""
    default, rules, origins, newer, fast = _split(policy, caps)
    if not use_fast_path:  # libseccomp gets those rules too
        rules = rules + [(binding.seccomp_syscall(n), Action.ALLOW.value, []) for n in sorted(fast)]
        origins = origins + [f"{policy.source or 'seccomp'} ({n})" for n in sorted(fast)]
        fast = set()
    stub = policy.default_action not in (Action.ALLOW, Action.LOG)
    # socket filtered by its arguments: its i386 socketcall route gets the default action.
    socket_by_args = any(r.args for r in policy.rules if "socket" in r.names and _applies(r, caps))
    socketcall_word = default if socket_by_args and default != Action.ALLOW.value else None
    plans = _abi_plans(names, newer, fast, stub, no_x32, socketcall_word)
    prologue: Optional[bytes] = b""
    if plans and (fast or newer or stub or no_x32 or socketcall_word is not None):
        prologue = assemble(
            plans.get("x86_64"), plans.get("x32"), plans.get("x86"), action_word(Action.ERRNO, E.ENOSYS)
        )
        if prologue is None:
            return None
    arches = [binding.seccomp_arch(a) for a in names]
    try:
        program = binding.compile_seccomp(default, Action.KILL_PROCESS.value, arches, rules)
    except OSError as err:
        where = origins[err.rule] if 0 <= err.rule < len(origins) else (policy.source or "seccomp")
        raise ConfigError(where, f"libseccomp refused the rule: {err.strerror}") from None
    return prologue + program


@functools.lru_cache(maxsize=64)
def compile_policy(policy: Seccomp, caps: FrozenSet[str]) -> bytes:
    """The filter for a container whose commands have ``caps`` (names without
    ``CAP_``): compiled once per (policy, capability set) in this process."""
    names = policy.architectures or (native_arch()[0],)
    # Without x32 in the kernel, its third of the filter is dead weight; the
    # prologue answers x32 syscalls as the kernel would (ENOSYS).
    no_x32 = "x32" in names and binding.x32_missing()
    if no_x32:
        names = tuple(a for a in names if a != "x32")
    x86 = bool({"x86_64", "x86"} & set(names))
    program = _compile(policy, caps, names, no_x32, use_fast_path=x86)
    if program is None:  # the fast path's jumps did not fit: libseccomp does it all
        program = _compile(policy, caps, names, no_x32, use_fast_path=False)
    if program is None or len(program) // 8 > BPF_MAX_INSNS:
        raise ConfigError(
            policy.source or "seccomp", f"the filter does not fit the kernel's {BPF_MAX_INSNS} instructions"
        )
    return program


@functools.lru_cache(maxsize=64)
def clone3_split(policy: Seccomp, caps: FrozenSet[str]) -> Tuple[bytes, bytes]:
    """The container's filter in two parts that together decide every syscall
    as it does: the policy with ``clone3`` allowed (the filter of the
    launcher that forks commands into cgroups of their own with
    ``clone3(CLONE_INTO_CGROUP)``) and a small filter that answers ``clone3``
    as the policy does and allows the rest (each such command loads it:
    ~0.03 ms, the whole policy ~0.25 ms; hand-made where it can be, see
    ``_clone3_only``).  The kernel applies the strictest
    answer of a process's filters, and allowing is the least strict.
    (b"", b"") when the policy allows ``clone3`` anyway (the launcher then
    has the policy itself)."""
    whole = compile_policy(policy, caps)
    opened = compile_policy(policy.allow("clone3"), caps)
    if opened == whole:
        return b"", b""
    rules = tuple(attrs.evolve(r, names=("clone3",)) for r in policy.rules if "clone3" in r.names)
    if not any(_applies(r, caps) for r in rules):  # the default decides it
        rules += (
            SeccompRule(
                names=("clone3",),
                action=policy.default_action,
                errno=policy.default_errno if policy.default_action == Action.ERRNO else None,
                origin=f"{policy.source or 'seccomp'} (its default, for clone3)",
            ),
        )
    only = Seccomp(default_action=Action.ALLOW, architectures=policy.architectures, rules=rules, source=policy.source)
    return opened, _clone3_only(only, caps) or compile_policy(only, caps)


_LD_ABS, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data


def _clone3_only(only: Seccomp, caps: FrozenSet[str]) -> Optional[bytes]:
    """``only`` (clone3's answer, the rest allowed) in the fewest instructions
    when that answer is one action without conditions and clone3 has one
    number on the filter's ABIs (x32 absent or not in the kernel):
    load nr, compare, load arch, compare per ABI, return.  libseccomp's
    program for it is 28 instructions; the kernel's load of a filter (its
    checks, the JIT, the emulation for every syscall number that builds
    its cache) grows with it, and each command in a cgroup of its own loads
    this one: ~12 us less per command.  None: libseccomp compiles it."""
    applying = [r for r in only.rules if _applies(r, caps)]
    words = {action_word(r.action, r.errno) for r in applying}
    names = only.architectures or (native_arch()[0],)
    if len(words) != 1 or any(r.args for r in applying) or ("x32" in names and not binding.x32_missing()):
        return None
    tokens = [binding.seccomp_arch(a) for a in names if a != "x32"]
    numbers = {binding.seccomp_syscall_arch(t, "clone3") for t in tokens}
    if len(numbers) != 1 or min(numbers) < 0:
        return None
    k = len(tokens)
    program = [(_LD_ABS, 0, 0, _NR), (_JEQ, 0, k + 1, numbers.pop()), (_LD_ABS, 0, 0, _ARCH)]
    program += [(_JEQ, k - i, 0, token) for i, token in enumerate(tokens)]  # (a match jumps to the answer)
    program += [(_RET, 0, 0, Action.ALLOW.value), (_RET, 0, 0, words.pop())]
    return b"".join(struct.pack("<HBBI", *insn) for insn in program)
