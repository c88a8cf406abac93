"""Registries: pull and push images over the OCI distribution API (Docker
Registry HTTP API v2), with references resolved as Docker resolves them.
The HTTP client (httpx, and with it ssl) is imported only when a registry
is used, not by ``import sandboxlib``."""
from __future__ import annotations

from typing import Callable, Optional

from ..images import Image, ImageStore
from .names import RemoteReference, resolve
from .progress import Phase, Progress

__all__ = ["RemoteReference", "resolve", "pull", "push", "Phase", "Progress"]


def pull(store: ImageStore, ref: str, *, platform: Optional[str] = None,
         progress: Optional[Callable[[Progress], None]] = None) -> Image:
    """Pull ``ref`` into ``store`` (see :meth:`sandboxlib.ImageStore.pull`)."""
    from .pulling import pull as pull_image
    return pull_image(store, ref, platform=platform, progress=progress)


def push(store: ImageStore, src: str, dest: Optional[str] = None) -> str:
    """Push ``src`` from ``store`` to ``dest`` (see :meth:`sandboxlib.ImageStore.push`)."""
    from .pushing import push as push_image
    return push_image(store, src, dest)
