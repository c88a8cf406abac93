"""What a pull reports as it goes: one :class:`Progress` per step of each layer."""
from __future__ import annotations

import enum

import attrs

__all__ = ["Phase", "Progress"]


class Phase(enum.Enum):
    """Where one blob of a pull is."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    DONE = "done"
    PRESENT = "already present"


@attrs.frozen(kw_only=True)
class Progress:
    """One progress report: ``digest`` (a layer blob) is in ``phase``, ``done`` of ``total`` bytes."""

    digest: str
    phase: Phase
    done: int
    total: int
