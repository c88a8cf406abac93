"""Compile a :class:`~sandboxlib.seccomp.Seccomp` policy for one container
into the classic BPF its commands install (in the host process, cached).

Docker's rule selection: a rule applies when the container has all of its
``includes.caps`` and none of its ``excludes.caps``, and when the host's
architecture and kernel match.  libseccomp compiles the rules for every ABI
of the policy (x86_64, and the i386 ``int 0x80`` and x32 routes).  A short
prologue of our own handles what Debian's libseccomp is too old to know:
syscalls newer than its table (by number), and, as runc does, ``ENOSYS``
for syscalls newer than any we know, so that libc falls back instead of
seeing ``EPERM``.
"""
from __future__ import annotations

import errno as E
import functools
import os
import struct
from typing import Dict, FrozenSet, List, Optional, Tuple

from . import _lowlevel
from .errors import ConfigError
from .seccomp import NEWER_SYSCALLS, Action, Seccomp, SeccompRule
from .seccomp_profile import _kernel_version, native_arch

__all__ = ["compile_policy"]

AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
X32_BIT = 0x40000000
MAX_KNOWN_SYSCALL = max(n for pair in NEWER_SYSCALLS.values() for n in pair if n is not None)
_INSN = struct.Struct("=HBBI")  # struct sock_filter
BPF_LD_W_ABS, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JA, BPF_RET = 0x20, 0x15, 0x35, 0x25, 0x05, 0x06
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


def _split(policy: Seccomp, caps: FrozenSet[str]):
    """(libseccomp rules with their origins, {newer syscall: action word})."""
    default = action_word(policy.default_action, policy.default_errno)
    rules, origins, newer = [], [], {}
    for rule in policy.rules:
        if not _applies(rule, caps):
            continue
        word = action_word(rule.action, rule.errno)
        conds = [(a.index, int(a.op), a.value, a.value_two) for a in rule.args]
        for name in rule.names:
            if name in NEWER_SYSCALLS:
                if conds:
                    raise ConfigError(rule.origin, f"conditions on {name!r} need a newer libseccomp")
                newer[name] = word
            elif word != default:  # libseccomp refuses a rule that repeats the default
                rules.append((_lowlevel.seccomp_syscall(name), word, conds))
                origins.append(f"{rule.origin} ({name})")
    return default, rules, origins, newer


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return _INSN.pack(code, jt, jf, k & 0xFFFFFFFF)


def _table(entries: List[Tuple[int, int]], stub: bool) -> List[bytes]:
    """nr == N -> return its action; with ``stub``, nr > the newest known -> ENOSYS."""
    out = []
    for nr, word in entries:
        out += [_insn(BPF_JEQ, nr, 0, 1), _insn(BPF_RET, word)]
    if stub:
        out += [_insn(BPF_JGT, MAX_KNOWN_SYSCALL, 0, 1), _insn(BPF_RET, action_word(Action.ERRNO, E.ENOSYS))]
    return out


def _prologue(arches: Tuple[str, ...], newer: Dict[str, int], stub: bool, no_x32: bool) -> bytes:
    """Checks run before libseccomp's program, which reloads what it needs.
    ``no_x32``: the kernel has no x32 ABI; its syscalls get the kernel's own ENOSYS."""
    if "x86_64" not in arches and "x86" not in arches or not (newer or stub or no_x32):
        return b""
    x64 = [(NEWER_SYSCALLS[n][0], w) for n, w in newer.items() if NEWER_SYSCALLS[n][0] is not None]
    i386 = [(NEWER_SYSCALLS[n][1], w) for n, w in newer.items() if NEWER_SYSCALLS[n][1] is not None]
    x32 = [(nr | X32_BIT, w) for n, w in newer.items() for nr in [NEWER_SYSCALLS[n][1]] if nr is not None]
    blocks = []  # (arch token, body); each body ends by jumping to libseccomp's program
    if "x86_64" in arches:
        x32_body = _table(x32, False) if "x32" in arches else []
        if no_x32:
            x32_body = [_insn(BPF_RET, action_word(Action.ERRNO, E.ENOSYS))]
        main = _table(x64, stub)
        # x32 numbers have X32_BIT: they skip the x86_64 table (and its stub).
        body = [_insn(BPF_LD_W_ABS, 0), _insn(BPF_JGE, X32_BIT, len(main) + 1, 0)] + main
        body += [None] + x32_body  # None: the jump to the end, patched below
        blocks.append((AUDIT_ARCH_X86_64, body))
    if "x86" in arches:
        blocks.append((AUDIT_ARCH_I386, [_insn(BPF_LD_W_ABS, 0)] + _table(i386, stub)))
    head = [_insn(BPF_LD_W_ABS, 4)]
    # Dispatch: one jeq per arch, then a jump past everything.
    dispatch_len = len(blocks) + 1
    offset, tests = 0, []
    for i, (token, body) in enumerate(blocks):
        tests.append(_insn(BPF_JEQ, token, dispatch_len - i - 1 + offset, 0))
        offset += len(body) + 1
    program = head + tests + [None]
    for token, body in blocks:
        program += body + [None]
    total = len(program)
    return b"".join(_insn(BPF_JA, total - i - 1) if insn is None else insn for i, insn in enumerate(program))


@functools.lru_cache(maxsize=64)
def compile_policy(policy: Seccomp, caps: FrozenSet[str]) -> bytes:
    """The filter for a container whose commands have ``caps`` (names without
    ``CAP_``): compiled once per (policy, capability set) in this process."""
    default, rules, origins, newer = _split(policy, caps)
    names = policy.architectures or (native_arch()[0],)
    # Without x32 in the kernel, its third of the filter is dead weight: the
    # install (JIT and the kernel's action cache) costs about 0.1 ms per 500
    # instructions.  The prologue answers x32 syscalls as the kernel would.
    no_x32 = "x32" in names and _lowlevel.x32_missing()
    if no_x32:
        names = tuple(a for a in names if a != "x32")
    arches = [_lowlevel.seccomp_arch(a) for a in names]
    try:
        program = _lowlevel.compile_seccomp(default, Action.KILL_PROCESS.value, arches, rules)
    except OSError as err:
        where = origins[err.rule] if 0 <= err.rule < len(origins) else (policy.source or "seccomp")
        raise ConfigError(where, f"libseccomp refused the rule: {err.strerror}") from None
    stub = policy.default_action not in (Action.ALLOW, Action.LOG)
    program = _prologue(names, newer, stub, no_x32) + program
    if len(program) // _INSN.size > BPF_MAX_INSNS:
        raise ConfigError(policy.source or "seccomp", f"the filter has {len(program) // _INSN.size} "
                                                      f"instructions; the kernel takes {BPF_MAX_INSNS}")
    return program
