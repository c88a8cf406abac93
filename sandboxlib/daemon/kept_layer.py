"""A container's writable layer, kept from its create to its remove as
Docker keeps it: each run mounts it again (a restarted container keeps its
file changes), and a stopped container's files are reached through a short
idle container on it (``filesystems.py``).

The layer is ``containers/ID`` in the image store with a lease ``leases/ID``
the daemon holds while the container exists: the store's sweep (at the next
image container's start, and the daemon's own start) removes the layers of a
SIGKILLed daemon, whose leases lapsed with it."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from ..images.modes import PRIVATE
from ..runtime import ImageStore

__all__ = ["KeptLayer", "sweep_kept_layers"]


class KeptLayer:
    """The writable layer directory of one container and its lease."""

    def __init__(self, store_path: str, container_id: str) -> None:
        self.store = ImageStore(store_path)
        self.name = container_id
        top = os.path.join(self.store.path, "containers")
        os.makedirs(top, mode=PRIVATE, exist_ok=True)
        self.path = os.path.join(top, container_id)
        self._lease: Optional[int] = self.store.lease(container_id, ())  # before the directory exists

    def size(self) -> int:
        """Bytes of the files written in the layer (Docker's SizeRw), as far as we
        may read its directories (rootless: not into your sub-ids' private ones)."""
        total = 0
        for top, _, files in os.walk(self.path, onerror=lambda _: None):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, name)).st_size
        return total

    def release(self) -> None:
        """Remove the directory, then the lease (what cannot be removed now, the sweep removes later)."""
        if self._lease is None:
            return
        self.store.remove_trees([self.path])
        self.store.release(self.name, self._lease)
        self._lease = None


def sweep_kept_layers(store_path: str) -> None:
    """The layers whose lease lapsed (a SIGKILLed daemon's): removed."""
    with contextlib.suppress(OSError):
        ImageStore(store_path).sweep_writable()
