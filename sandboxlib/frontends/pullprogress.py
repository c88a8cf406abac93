"""What ``sandboxlib pull`` shows while it pulls: on a terminal, a bar per
layer drawn by ``tqdm`` (the ``progress`` extra: ``pip install
'sandboxlib[progress]'``); otherwise (output to a file or a pipe, or tqdm
missing) one plain line per layer and phase, never one per chunk."""

from __future__ import annotations

import abc
from typing import TextIO

from ..registry import Phase, Progress

__all__ = ["for_stream"]


def for_stream(out: TextIO) -> Display:
    """Bars when ``out`` is a terminal and tqdm is installed, else plain lines."""
    if out.isatty():
        try:
            import tqdm  # noqa: F401 (the optional extra)
        except ImportError:
            pass
        else:
            return Bars(out)
    return Lines(out)


class Display(abc.ABC):
    """A progress callback (``display(event)``) with a ``close()`` for the end."""

    @abc.abstractmethod
    def __call__(self, event: Progress) -> None:
        """Show one step of one layer."""

    def close(self) -> None:  # noqa: B027 (most displays have nothing to close)
        """The pull ended: finish what is drawn."""


class Lines(Display):
    """``DIGEST12: phase`` once per layer and phase."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.seen = out, {}

    def __call__(self, event: Progress) -> None:
        phase = event.phase.value
        if self.seen.get(event.digest) != phase:
            self.seen[event.digest] = phase
            print(f"{event.digest[7:19]}: {phase}", file=self.out, flush=True)


class Bars(Display):
    """One tqdm bar per layer, in the order the layers are first reported."""

    def __init__(self, out: TextIO) -> None:
        from tqdm import tqdm

        self.out, self.new_bar, self.bars = out, tqdm, {}  # type: Dict[str, object]

    def __call__(self, event: Progress) -> None:
        bar = self.bars.get(event.digest)
        if bar is None:
            bar = self.bars[event.digest] = self.new_bar(
                total=event.total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                position=len(self.bars),
                leave=True,
                file=self.out,
                dynamic_ncols=True,
                bar_format="{desc} {bar} {n_fmt}/{total_fmt} {rate_fmt}",
            )
        bar.set_description_str(f"{event.digest[7:19]}: {event.phase.value:<15}", refresh=False)
        bar.update(event.done - bar.n)
        if event.phase in (Phase.DONE, Phase.PRESENT):
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
