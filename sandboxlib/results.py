"""How a command ended: its :class:`Result` and :class:`Verdict` (public vocabulary)."""

from __future__ import annotations

import enum
import signal as signal_module
from typing import Dict, Optional, Tuple, Union

import attrs

from .errors import CommandFailed

__all__ = ["Result", "Verdict", "verdict_of", "decoded"]


class Verdict(enum.Enum):
    """Why a command ended, most specific first."""

    EXITED = "exited"  #: it exited by itself (``exit_code`` says how)
    SIGNALED = "signaled"  #: a signal killed it (``signal`` says which)
    TIMEOUT = "timeout"  #: its timeout expired and it was killed
    OOM = "oom"  #: the container's memory limit: the OOM killer acted
    PIDS_LIMIT = "pids_limit"  #: the container's pids limit refused a fork, and it failed
    SECCOMP = "seccomp"  #: SIGSYS: a system call the seccomp policy kills on
    FSIZE = "fsize"  #: SIGXFSZ: it wrote past the ``fsize`` rlimit
    CPU_TIME = "cpu_time"  #: SIGXCPU: it used up the ``cpu`` rlimit


_SIGNAL_VERDICTS: Dict[int, Verdict] = {
    signal_module.SIGSYS: Verdict.SECCOMP,
    signal_module.SIGXFSZ: Verdict.FSIZE,
    signal_module.SIGXCPU: Verdict.CPU_TIME,
}


def verdict_of(
    *, exit_code: int, sig: Optional[int], timed_out: bool, oom_killed: bool, pids_limit_hit: bool
) -> Verdict:
    """The verdict of a command that ended; the container's events (an OOM
    kill, a fork refused by the pids limit) decide it only when it failed."""
    if timed_out:
        return Verdict.TIMEOUT
    failed = exit_code != 0
    if oom_killed and failed:
        return Verdict.OOM
    if sig in _SIGNAL_VERDICTS:
        return _SIGNAL_VERDICTS[sig]
    if pids_limit_hit and failed:
        return Verdict.PIDS_LIMIT
    return Verdict.SIGNALED if sig else Verdict.EXITED


def _short(data, limit: int = 60) -> str:
    """The repr of captured output, cut after ``limit`` characters."""
    if data is None or len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} {'bytes' if isinstance(data, bytes) else 'characters'})"


@attrs.frozen(kw_only=True, repr=False)
class Result:
    """How a command ended.

    Attributes:
        argv: the command.
        exit_code: its exit status; ``128 + N`` when killed by signal N (as a shell reports it).
        signal: the signal that killed it, or None.
        timed_out: it was killed because its timeout expired.
        stdout, stderr: captured output (bytes; str with ``text=True``), or None when not captured.
        duration: seconds from start to exit.
        verdict: why it ended (:class:`Verdict`).
        oom_killed: the OOM killer killed a process of the container while it ran
            (its memory limit; known where the container has a cgroup with one).
        pids_limit_hit: the container's pids limit refused a fork while it ran,
            whatever the exit (a program may survive ``EAGAIN`` from ``fork``);
            the verdict is ``PIDS_LIMIT`` only when it also failed.  Known where
            the container has a pids limit (its cgroup's ``pids.events``); in a
            ``Container`` it counts every fork refused in the container while
            the command ran, by any of its commands.
    """

    argv: Tuple[str, ...]
    exit_code: int
    signal: Optional[signal_module.Signals]
    timed_out: bool
    stdout: Union[bytes, str, None]
    stderr: Union[bytes, str, None]
    duration: float
    verdict: Verdict = Verdict.EXITED
    oom_killed: bool = False
    pids_limit_hit: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def __repr__(self) -> str:
        how = f"exit_code={self.exit_code}" + (f" signal={self.signal.name}" if self.signal else "")
        return (
            f"<sandboxlib.Result {self.verdict.value} {how} argv={list(self.argv)!r} "
            f"stdout={_short(self.stdout)} stderr={_short(self.stderr)} duration={self.duration:.3f}>"
        )

    def check_returncode(self) -> None:
        """Raise :class:`~sandboxlib.CommandFailed` (a ``subprocess.CalledProcessError``
        too, with the output) unless the command exited with 0 in time."""
        if not self.ok:
            raise CommandFailed(self.argv, self.exit_code, self.stdout, self.stderr, self.verdict)


def decoded(result: Result, encoding: str, errors: str) -> Result:
    """``result`` with its captured output decoded to str (``text=True``)."""

    def text(data):
        return data.decode(encoding, errors) if isinstance(data, bytes) else data

    return attrs.evolve(result, stdout=text(result.stdout), stderr=text(result.stderr))
