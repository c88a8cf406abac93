"""Named volumes: directories in the store that containers mount and that outlive them."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from typing import Callable, List, Sequence, Tuple

from ..errors import ConfigError
from .modes import PRIVATE

log = logging.getLogger("sandboxlib")

__all__ = ["Volumes"]


class Volumes:
    """The named volumes of a :class:`~sandboxlib.images.store.Store` (a part of it)."""

    path: str
    tmp: str

    remove_trees: Callable[[Sequence[str]], List[str]]  # the store's

    def volume(self, name: str, owner: Tuple[int, int] = (-1, -1)) -> str:
        """The directory of the named volume ``name`` (made, owned by
        ``owner``, on first use).  Volumes are never collected."""
        top = os.path.join(self.path, "volumes")
        os.makedirs(top, mode=PRIVATE, exist_ok=True)
        path = os.path.join(top, name)
        if not os.path.isdir(path):
            tmp = tempfile.mkdtemp(prefix="volume-", dir=self.tmp)
            os.chmod(tmp, 0o755)
            os.chown(tmp, *owner)
            try:
                os.rename(tmp, path)
            except OSError:  # made by someone else meanwhile
                os.rmdir(tmp)
        return path

    def volumes(self) -> List[str]:
        """The names of the named volumes."""
        top = os.path.join(self.path, "volumes")
        return sorted(os.listdir(top)) if os.path.isdir(top) else []

    def remove_volume(self, name: str) -> None:
        """Remove a named volume and its files (ConfigError if there is none)."""
        path = os.path.join(self.path, "volumes", name)
        if "/" in name or name in ("", ".", "..") or not os.path.isdir(path):
            raise ConfigError("name", f"no volume {name!r} in the store")
        if self.remove_trees([path]):
            raise PermissionError(errno.EACCES, "files of other users are left in the volume", path)
