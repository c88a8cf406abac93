"""What a pull reports as it goes: one :class:`Progress` per step of each
layer, always from the thread that called ``pull`` (downloads run in
worker threads; their reports are handed over)."""

from __future__ import annotations

import enum

import attrs

__all__ = ["Phase", "Progress"]


class Phase(enum.Enum):
    """Where one layer of a pull is.  A layer is checked (decompressed, its
    tar headers followed as the unpacker would, its diff_id computed) while
    it downloads, and unpacked in the same pass for the caller's default
    containers: there is no unpacking pass after it.

    WAITING: queued for a download slot, or for another process's download of
    the same blob; DOWNLOADING: bytes ``done`` of ``total`` arrived (and were
    checked); VERIFYING: all arrived, the digest, size and diff_id are
    compared; CHECKING: the blob was in the store already (an interrupted pull
    or another process's) and is checked before use; DONE: stored and checked;
    PRESENT: the store had the layer: nothing fetched."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    CHECKING = "checking"
    DONE = "done"
    PRESENT = "already present"


@attrs.frozen(kw_only=True)
class Progress:
    """One progress report: ``digest`` (a layer blob) is in ``phase``, ``done`` of ``total`` bytes."""

    digest: str
    phase: Phase
    done: int
    total: int
