"""``sandboxlib run -t``: the command on a pseudo-terminal of its container,
wired to the caller's terminal.

The caller's terminal goes into raw mode (every key, ^C included, reaches
the container's terminal, whose line discipline sends SIGINT to the
foreground job there), its window size and changes (SIGWINCH) go to the
container's terminal, and its mode is restored on every way out: the
command's end, an error, SIGTERM/SIGHUP/SIGQUIT.  The signal handlers are
the CLI's own (a program's), installed for the loop only."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from ..config import ContainerConfig, check_timeout
from ..errors import ConfigError
from ..runtime import Container, Process

__all__ = ["run_on_terminal"]

_CHUNK = 1 << 16
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _window_size(fd: int) -> Tuple[int, int]:
    size = os.get_terminal_size(fd)
    return (size.lines or 24, size.columns or 80)


class _Ended(Exception):
    """A signal that ends the CLI (raised from its handler)."""

    def __init__(self, sig: int) -> None:
        super().__init__(sig)
        self.sig = sig


@contextlib.contextmanager
def _raw_terminal(fd: int, process: Process) -> Iterator[None]:
    """Raw mode on ``fd`` and the window size forwarded; all undone on the way out."""
    saved_mode = termios.tcgetattr(fd)

    def resized(_sig, _frame) -> None:
        with contextlib.suppress(OSError, ValueError):
            process.resize(*_window_size(fd))

    def ended(sig, _frame) -> None:
        raise _Ended(sig)

    saved = {sig: signal.signal(sig, ended) for sig in _ENDING_SIGNALS}
    saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resized)
    try:
        tty.setraw(fd, termios.TCSANOW)
        resized(signal.SIGWINCH, None)  # a change between the start and now
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved_mode)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _pump(process: Process, interactive: bool, deadline: Optional[float]) -> bool:
    """Copy our stdin to the terminal and its output to our stdout until
    the terminal ends; False when the deadline came first."""
    master = process.terminal
    assert master is not None  # started with a terminal
    reading = [master.fileno()] + ([sys.stdin.fileno()] if interactive else [])
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        ready, _, _ = select.select(reading, [], [], left)
        if sys.stdin.fileno() in ready:
            data = os.read(sys.stdin.fileno(), _CHUNK)
            if data:
                process.write(data)
            else:
                reading.remove(sys.stdin.fileno())  # our input ended; the command goes on
        if master.fileno() in ready:
            data = process.read(_CHUNK)
            if not data:
                return True
            view = memoryview(data)
            while view:
                view = view[os.write(sys.stdout.fileno(), view) :]


def run_on_terminal(
    cmd: Sequence[str], options: Dict[str, Any], *, interactive: bool, timeout: Optional[float]
) -> Tuple[int, bool]:
    """Run ``cmd`` as the main command of a fresh container on a terminal
    wired to ours: (its exit status as a shell reports it, timed out)."""
    if not os.isatty(sys.stdin.fileno()):
        raise ConfigError("tty", "the input is not a terminal (-t needs one; -i alone passes stdin without)")
    timeout = check_timeout(timeout)
    box = Container(ContainerConfig(**options))
    try:
        size = _window_size(sys.stdin.fileno())
        process = box._start_with_main(list(cmd), stdin=None, stdout=None, stderr=None, tty=size)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with _raw_terminal(sys.stdin.fileno(), process):
                finished = _pump(process, interactive, deadline)
        except _Ended as end:
            return 128 + end.sig, False
        if not finished:
            return 0, True
        code = process.wait()
        return (128 - code if code < 0 else code), False
    finally:
        box.close()
