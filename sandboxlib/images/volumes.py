"""Named volumes: directories in the store that containers mount and that outlive them."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .modes import PRIVATE

log = logging.getLogger("sandboxlib")

__all__ = ["Volumes"]


class Volumes:
    """The named volumes of a :class:`~sandboxlib.images.store.Store` (a part of it)."""

    path: str
    tmp: str

    remove_trees: Callable[[Sequence[str]], List[str]]  # the store's

    def volume(
        self, name: str, owner: Tuple[int, int] = (-1, -1), *, labels: Optional[Mapping[str, str]] = None
    ) -> str:
        """The directory of the named volume ``name`` (made, owned by
        ``owner``, on first use).  Volumes are never collected.  ``labels``
        (Docker's volume labels) are kept beside it, not in it: the directory is
        what containers see."""
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
        if labels:
            self._write_labels(name, dict(labels))
        return path

    def _labels_path(self, name: str) -> str:
        return os.path.join(self.path, "volume-labels", name + ".json")

    def _write_labels(self, name: str, labels: Dict[str, str]) -> None:
        path = self._labels_path(name)
        os.makedirs(os.path.dirname(path), mode=PRIVATE, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="labels-", dir=self.tmp)
        with os.fdopen(fd, "w") as f:
            json.dump(labels, f)
        os.rename(tmp, path)

    def volume_labels(self, name: str) -> Dict[str, str]:
        """The labels the volume ``name`` was made with ({} if none)."""
        try:
            with open(self._labels_path(name)) as f:
                return dict(json.load(f))
        except FileNotFoundError:
            return {}

    def volumes(self) -> List[str]:
        """The names of the named volumes."""
        top = os.path.join(self.path, "volumes")
        return sorted(os.listdir(top)) if os.path.isdir(top) else []

    def remove_volume(self, name: str) -> None:
        """Remove a named volume and its files (ConfigError if there is none)."""
        path = os.path.join(self.path, "volumes", name)
        if "/" in name or name in ("", ".", "..") or not os.path.isdir(path):
            raise ConfigError("name", f"no volume {name!r} in the store")
        try:
            os.unlink(self._labels_path(name))
        except FileNotFoundError:
            pass
        if self.remove_trees([path]):
            raise PermissionError(errno.EACCES, "files of other users are left in the volume", path)
