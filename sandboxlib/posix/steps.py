"""Work that waits, written once for both fronts.

A *steps* generator does the work and yields each time it must wait: an fd
it needs readable, or an :class:`Offload` (long work of its own, such as an
image's unpack, which an event loop runs in a thread).  The sync front runs
it here (:func:`run_steps`: ``poll``); the asyncio front awaits the same
steps (``sandboxlib.aio.loop``).  Whatever ends a wait (Ctrl-C, a
cancellation) is thrown into the generator, whose cleanup then runs."""

from __future__ import annotations

import os
import select
import subprocess
from typing import Any, Callable, Generator, List, Optional, Sequence, Union

from .interrupts import sigint_deferred

__all__ = ["Offload", "Steps", "Wait", "run_steps", "read_to_end", "run_program"]


class Offload:
    """Work a steps generator hands its driver: run ``fn()`` and send back its value."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


Wait = Union[int, Offload]
Steps = Generator[Wait, Any, Any]


def run_steps(steps: Steps) -> Any:
    """Run ``steps`` in this thread: poll each fd, run each offload; returns their value."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            need = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value
        value = error = None
        try:
            if isinstance(need, Offload):
                value = need.fn()
            else:
                poller = select.poll()
                poller.register(need, select.POLLIN)
                poller.poll()
        except BaseException as err:  # noqa: BLE001 - thrown in: the steps clean up, then raise it
            error = err


def read_to_end(fd: int) -> Generator[int, None, bytes]:
    """Steps: read ``fd`` (a pipe) until every writer closed it.  It is left non-blocking."""
    os.set_blocking(fd, False)
    chunks: List[bytes] = []
    while True:
        yield fd
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def run_program(args: Sequence[str]) -> Generator[int, None, subprocess.CompletedProcess]:
    """Steps: run a short program (stdin /dev/null, stdout and stderr captured together)."""
    proc: Optional[subprocess.Popen] = None
    try:
        with sigint_deferred():  # (Ctrl-C before the assignment would lose the process)
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None  # PIPE
        output = yield from read_to_end(proc.stdout.fileno())
        code = proc.wait()  # (its stdout's EOF: it is exiting)
    except BaseException:
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
    return subprocess.CompletedProcess(args, code, output)
