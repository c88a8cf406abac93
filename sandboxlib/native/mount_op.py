"""One mount operation of the PLAN, as the C side applies it."""

from __future__ import annotations

from typing import NamedTuple, Optional

from .binding import MountFlag as F
from .binding import MountKind as K

__all__ = ["MountOp"]


class MountOp(NamedTuple):
    """One op for the child.  ``source`` is a host path (or link text).

    A record the layout's and the OCI spec's code made from checked options
    (a NamedTuple: an attrs class is ~0.5 ms to define in every short-lived
    program that imports it, the OCI runtime's create)."""

    kind: K
    target: str
    source: Optional[str] = None
    flags: F = F(0)
    data: Optional[str] = None
    field: Optional[str] = None  # the config field it came from, for errors

    @property
    def depth(self) -> int:
        return self.target.rstrip("/").count("/")
