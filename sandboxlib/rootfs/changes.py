"""``docker diff``: what a container's writable layer (its overlay upper
dir) changed in its image's layers, as Docker lists it: ``(path, kind)``,
kind 0 modified (there in the image too; a directory something below
changed), 1 added, 2 deleted (an overlay whiteout)."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tarfile
from typing import BinaryIO, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..images.trees import walk

__all__ = ["MODIFIED", "ADDED", "DELETED", "changes", "upper_names", "layer_tar_names"]

MODIFIED, ADDED, DELETED = 0, 1, 2
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"


def upper_names(upper_fd: int) -> Iterator[Tuple[str, bool]]:
    """(path, deleted) of every entry of an upper dir (PermissionError: what the caller may not read)."""
    for entry in walk(upper_fd, sort=True):
        if not entry.leaving:
            yield entry.path, stat.S_ISCHR(entry.st.st_mode) and entry.st.st_rdev == 0


def layer_tar_names(f: BinaryIO) -> Iterator[Tuple[str, bool]]:
    """The same from the upper dir as an OCI layer tar (``.wh.`` entries: deleted)."""
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            parent, base = posixpath.split(member.name.strip("/").removeprefix("./"))
            if base == OPAQUE:
                continue  # (its directory is an entry of its own)
            if base.startswith(WHITEOUT):
                yield posixpath.join(parent, base[len(WHITEOUT) :]), True
            elif base:
                yield posixpath.join(parent, base), False


def changes(names: Iterable[Tuple[str, bool]], lower: Sequence[str]) -> List[Tuple[str, int]]:
    """Docker's change list of an upper dir's ``names`` over the ``lower`` layer dirs (bottom first)."""
    found = {}
    for path, deleted in names:
        kind = DELETED if deleted else MODIFIED if _in_lower(path, lower) else ADDED
        found["/" + path] = kind
    return sorted(found.items())


def _in_lower(path: str, lower: Sequence[str]) -> bool:
    for layer in reversed(lower):
        there = _in_layer(layer, path.split("/"))
        if there is not None:
            return there
    return False


def _in_layer(layer: str, parts: List[str]) -> Optional[bool]:
    """Whether the layer has the path (True), hides it (False: a whiteout, an opaque
    directory or a file above it) or says nothing of it (None: the layers below do)."""
    directory, hidden_below = layer, False
    for i, part in enumerate(parts):
        target = os.path.join(directory, part)
        hidden_below = hidden_below or (directory != layer and _opaque(directory))
        try:
            st = os.lstat(target)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                return None
            return False if hidden_below else None
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return False
        if i == len(parts) - 1:
            return True
        if not stat.S_ISDIR(st.st_mode):
            return False
        directory = target
    return None


def _opaque(directory: str) -> bool:
    for name in OPAQUE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(directory, name, follow_symlinks=False) == b"y":
                return True
    return False
