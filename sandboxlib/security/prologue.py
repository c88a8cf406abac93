"""The classic BPF we put in front of libseccomp's program (x86 only).

Per ABI (x86_64, x32, i386):

* a fast path: the syscalls every applicable rule allows without
  conditions, as a binary search over ranges of numbers.  The kernel JITs
  a filter and emulates it for every syscall number at each install, so
  its length is what a command pays for: Docker's ~300 allowed syscalls
  per ABI are ~30-60 ranges, but ~450 instructions per ABI in libseccomp's
  tree, which then only gets the rest (conditions, other actions);
* syscalls newer than Debian's libseccomp knows, by number;
* ``ENOSYS`` above the newest syscall we know when the default is to
  refuse (runc's fix: libc then falls back instead of failing);
* ``ENOSYS`` for x32 when the kernel has no x32 ABI (what it says anyway);
* i386 ``socketcall(SYS_SOCKET, args)`` refused when the policy filters
  ``socket`` by its arguments: through socketcall they sit in memory where
  no filter can see them (libseccomp's rewrite then compares the pointer,
  and Docker's profile lets ``AF_VSOCK`` through that way).

Anything not decided here falls through to libseccomp's program, which
starts by loading what it needs itself.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["AbiPlan", "assemble", "ranges", "AUDIT_ARCH_X86_64", "AUDIT_ARCH_I386", "X32_BIT"]

AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
X32_BIT = 0x40000000
RET_ALLOW = 0x7FFF0000
_INSN = struct.Struct("=HBBI")  # struct sock_filter
LD_ABS, JEQ, JGE, JGT, JA, RET = 0x20, 0x15, 0x35, 0x25, 0x05, 0x06
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data (ARG0: its low 32 bits)


class _Label:
    """A jump target, placed with ``_Asm.place``."""


class _Asm:
    """A list of instructions with symbolic forward jumps."""

    def __init__(self) -> None:
        self.code: list = []
        self.labels: Dict[_Label, int] = {}

    def op(self, code: int, k: int = 0, jt=0, jf=0) -> None:
        self.code.append((code, k, jt, jf))

    def place(self, label: _Label) -> None:
        self.labels[label] = len(self.code)

    def assemble(self) -> Optional[bytes]:
        """The bytes, or None if a conditional jump is out of reach (255)."""
        out = []
        for i, (code, k, jt, jf) in enumerate(self.code):
            if code == JA and isinstance(k, _Label):
                k = self.labels[k] - i - 1
            jt, jf = (self.labels[j] - i - 1 if isinstance(j, _Label) else j for j in (jt, jf))
            if not (0 <= jt <= 255 and 0 <= jf <= 255 and k >= 0):
                return None
            out.append(_INSN.pack(code, jt, jf, k & 0xFFFFFFFF))
        return b"".join(out)


def ranges(numbers: Sequence[int]) -> List[Tuple[int, int]]:
    """Sorted numbers -> [(first, last)] runs of consecutive numbers."""
    runs: List[List[int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(a, b) for a, b in runs]


def _search(asm: _Asm, runs: List[Tuple[int, int]], allow: _Label, out: _Label) -> None:
    """nr (in the accumulator) in one of ``runs`` -> allow, else -> out."""
    if len(runs) <= 3:
        for lo, hi in runs:
            above = _Label()
            asm.op(JGT, hi, above, 0)
            asm.op(JGE, lo, allow, out)
            asm.place(above)
        asm.op(JA, out)
        return
    mid = len(runs) // 2
    right = _Label()
    asm.op(JGE, runs[mid][0], right, 0)
    _search(asm, runs[:mid], allow, out)
    asm.place(right)
    _search(asm, runs[mid:], allow, out)


class AbiPlan:
    """What the prologue decides for one ABI.

    Attributes:
        allowed: syscall numbers always allowed.
        exact: {number: action word} (syscalls newer than libseccomp).
        enosys_above: answer ENOSYS above this number (None: no).
        enosys_all: answer ENOSYS to everything (an ABI the kernel lacks).
        by_arg0: {number: (first argument, action word)}, decided before
            anything else (i386 ``socketcall(SYS_SOCKET, ...)``).
    """

    def __init__(
        self, allowed=(), exact=None, enosys_above: Optional[int] = None, enosys_all: bool = False, by_arg0=None
    ) -> None:
        self.allowed = tuple(allowed)
        self.exact = dict(exact or {})
        self.enosys_above = enosys_above
        self.enosys_all = enosys_all
        self.by_arg0 = dict(by_arg0 or {})


def _abi(asm: _Asm, plan: Optional[AbiPlan], enosys: int, end: _Label) -> None:
    """The code for one ABI, the number in the accumulator; ends with a jump to ``end``."""
    if plan is None:
        asm.op(JA, end)
        return
    if plan.enosys_all:
        asm.op(RET, enosys)
        return
    for nr, (arg0, word) in sorted(plan.by_arg0.items()):
        asm.op(JEQ, nr, 0, 4)
        asm.op(LD_ABS, ARG0)
        asm.op(JEQ, arg0, 0, 1)
        asm.op(RET, word)
        asm.op(LD_ABS, NR)
    allow, rest = _Label(), _Label()
    if plan.allowed:
        _search(asm, ranges(plan.allowed), allow, rest)
    asm.place(rest)
    for nr, word in sorted(plan.exact.items()):
        asm.op(JEQ, nr, 0, 1)
        asm.op(RET, word)
    if plan.enosys_above is not None:
        asm.op(JGT, plan.enosys_above, 0, 1)
        asm.op(RET, enosys)
    asm.op(JA, end)
    asm.place(allow)
    asm.op(RET, RET_ALLOW)


def assemble(
    x86_64: Optional[AbiPlan], x32: Optional[AbiPlan], i386: Optional[AbiPlan], enosys: int
) -> Optional[bytes]:
    """The prologue (b"" when there is nothing to do), or None when it does
    not fit classic BPF's 8-bit jumps (the caller then goes without it)."""
    if x86_64 is None and x32 is None and i386 is None:
        return b""
    asm, end = _Asm(), _Label()
    blocks = [(AUDIT_ARCH_X86_64, _Label()), (AUDIT_ARCH_I386, _Label())]
    asm.op(LD_ABS, ARCH)
    for token, label in blocks:
        asm.op(JEQ, token, 0, 1)
        asm.op(JA, label)
    asm.op(JA, end)
    asm.place(blocks[0][1])
    x32_label = _Label()
    asm.op(LD_ABS, NR)
    asm.op(JGE, X32_BIT, 0, 1)
    asm.op(JA, x32_label)
    _abi(asm, x86_64, enosys, end)
    asm.place(x32_label)
    _abi(asm, x32, enosys, end)
    asm.place(blocks[1][1])
    asm.op(LD_ABS, NR)
    _abi(asm, i386, enosys, end)
    asm.place(end)
    return asm.assemble()
