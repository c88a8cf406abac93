"""Where an import reads from: a directory or a tar archive (plain or
compressed), addressed by relative names that never leave it."""

from __future__ import annotations

import os
import posixpath
import tarfile
from typing import BinaryIO, Dict

from ..errors import ImageFormatError

__all__ = ["open_source", "DirSource", "TarSource", "MAX_JSON"]

MAX_JSON = 16 << 20  # manifests, configs and indexes are small; refuse memory bombs


def _clean(name: str) -> str:
    name = posixpath.normpath("/" + name).lstrip("/")
    return name


class DirSource:
    """Files of a directory; a name that is or passes through a symlink is refused."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self.label = path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def _path(self, name: str) -> str:
        full = os.path.join(self.path, _clean(name))
        if os.path.realpath(full) != full:
            raise ImageFormatError(f"{self.label}/{name}", "is a symlink or under one")
        return full

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise ImageFormatError(self.label, f"{name} is missing") from None

    def close(self) -> None:
        pass


class TarSource:
    """Regular-file members of a tar archive (any compression tarfile reads)."""

    def __init__(self, path: str) -> None:
        self.label = path
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members: Dict[str, tarfile.TarInfo] = {_clean(m.name): m for m in self.tar.getmembers() if m.isreg()}
        except (tarfile.TarError, EOFError, OSError) as err:
            if isinstance(err, (FileNotFoundError, PermissionError)):
                raise
            raise ImageFormatError(path, f"not a readable tar archive: {err}") from None

    def exists(self, name: str) -> bool:
        return _clean(name) in self.members

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(_clean(name))
        if member is None:
            raise ImageFormatError(self.label, f"{name} is missing from the archive")
        return self.tar.extractfile(member)

    def close(self) -> None:
        self.tar.close()


def open_source(path: str):
    if os.path.isdir(path):
        return DirSource(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    return TarSource(path)


def read_json_bytes(source, name: str) -> bytes:
    with source.open(name) as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ImageFormatError(f"{source.label}/{name}", f"larger than {MAX_JSON} bytes")
    return data
