"""One mount operation of the PLAN, as the C side applies it."""

from __future__ import annotations

from typing import Optional

import attrs

from .binding import MountFlag as F
from .binding import MountKind as K

__all__ = ["MountOp"]


@attrs.frozen(kw_only=True, cache_hash=True)
class MountOp:
    """One op for the child.  ``source`` is a host path (or link text)."""

    kind: K
    target: str
    source: Optional[str] = None
    flags: F = F(0)
    data: Optional[str] = None
    field: Optional[str] = None  # the config field it came from, for errors

    @property
    def depth(self) -> int:
        return self.target.rstrip("/").count("/")
