"""Content-addressed blobs (``blobs/sha256/HEX``) written crash-safely: into
a temporary file on the same file system, hashed on the way, flushed, then
renamed into place.  A blob is either complete under its name or absent."""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from typing import BinaryIO, Iterator, Optional, Tuple

from ..errors import DigestMismatch, ImageFormatError
from ..posix.io import write_all

__all__ = ["Blobs", "sha256_digest", "fsync_dir"]

CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Blobs:
    """The blob directory of one store; ``tmp`` is on the same file system."""

    def __init__(self, root: str, tmp: str) -> None:
        self.dir = os.path.join(root, "blobs", "sha256")
        self.tmp = tmp

    def path(self, digest: str) -> str:
        return os.path.join(self.dir, digest.split(":", 1)[1])

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        return os.stat(self.path(digest)).st_size

    def read(self, digest: str) -> bytes:
        """A blob's bytes, checked against its digest (small JSON blobs only)."""
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageFormatError(digest, "blob is missing from the store") from None
        if sha256_digest(data) != digest:
            raise DigestMismatch(f"blob {digest}", digest, sha256_digest(data))
        return data

    def digests(self) -> Iterator[str]:
        for name in os.listdir(self.dir):
            yield "sha256:" + name

    def delete(self, digest: str) -> int:
        """Remove a blob; returns the bytes freed."""
        try:
            size = self.size(digest)
            os.unlink(self.path(digest))
            return size
        except FileNotFoundError:
            return 0

    def put_bytes(self, data: bytes, expected: Optional[str] = None, source: str = "") -> str:
        import io
        return self.put_stream(io.BytesIO(data), expected, source=source)[0]

    def put_stream(self, stream: BinaryIO, expected: Optional[str] = None, *,
                   size: Optional[int] = None, source: str = "") -> Tuple[str, int]:
        """Copy ``stream`` into the store; returns (digest, size).  Raises
        DigestMismatch (and keeps nothing) when it does not hash to ``expected``."""
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        try:
            try:
                digest, written = _copy_hashed(stream, fd)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT):  # name the store, not just the errno
                    raise OSError(err.errno, f"{err.strerror}: writing {source or 'a blob'} into the image store",
                                  self.tmp) from None
                raise
            if expected is not None and digest != expected:
                raise DigestMismatch(source or "blob", expected, digest)
            if size is not None and written != size:
                raise ImageFormatError(source or str(expected), f"{written} bytes, descriptor says {size}")
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path(digest))
            tmp = ""
            return digest, written
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp:
                os.unlink(tmp)


def _copy_hashed(stream: BinaryIO, fd: int) -> Tuple[str, int]:
    h = hashlib.sha256()
    written = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
        write_all(fd, chunk)
        written += len(chunk)
    return "sha256:" + h.hexdigest(), written
