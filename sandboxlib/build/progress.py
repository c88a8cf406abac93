"""What a build reports as it goes: each step (and whether the cache had
it), each ``RUN``'s output lines, warnings.  The library hands
:class:`BuildEvent` values to a callback; ``progress=True`` prints them on
stderr: a compact display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO, Union

import attrs

__all__ = ["BuildEvent", "Reporter", "reporter"]


@attrs.frozen(kw_only=True)
class BuildEvent:
    """``kind``: ``"step"`` (a step starts: ``stage``, ``step``/``total``,
    ``text``), ``"cached"`` (that step was in the cache), ``"output"``
    (a line a ``RUN`` printed, in ``text``; ``stream``: ``"stdout"`` or
    ``"stderr"``), ``"warning"``, ``"done"`` (``text``: the image id)."""

    kind: str
    text: str
    stage: str = ""
    step: int = 0
    total: int = 0
    stream: str = "stdout"


Reporter = Callable[[BuildEvent], None]


def _quiet(event: BuildEvent) -> None:
    pass


def _printer(stream: TextIO, terminal: bool) -> Reporter:
    counts = {"step": 0, "cached": 0}
    start = time.monotonic()

    def show(event: BuildEvent) -> None:
        counts[event.kind] = counts.get(event.kind, 0) + 1
        if event.kind == "step":
            where = f"[{event.stage} {event.step}/{event.total}]" if event.stage else f"[{event.step}/{event.total}]"
            line = f"\033[1m{where}\033[0m {event.text}" if terminal else f"{where} {event.text}"
        elif event.kind == "cached":
            line = "  \033[36mCACHED\033[0m" if terminal else "  CACHED"
        elif event.kind == "output":
            line = f"  \033[2m{event.text}\033[0m" if terminal else f"  {event.text}"
        elif event.kind == "warning":
            line = f"WARNING: {event.text}"
        else:
            took = time.monotonic() - start
            line = f"built {event.text} in {took:.2f} s ({counts['cached']} of {counts['step']} steps cached)"
        stream.write(line + "\n")
        stream.flush()

    return show


def reporter(progress: Union[bool, Reporter, None], stream: Optional[TextIO] = None) -> Reporter:
    """The reporter ``progress`` asks for: a callable as is, True -> stderr, False/None -> nothing."""
    if callable(progress):
        return progress
    if not progress:
        return _quiet
    stream = stream or sys.stderr
    return _printer(stream, stream.isatty())
