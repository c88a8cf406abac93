"""Content-addressed blobs (``blobs/sha256/HEX``) written crash-safely: into
a temporary file on the same file system, hashed on the way, flushed, then
renamed into place.  A blob is either complete under its name or absent."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from typing import BinaryIO, Iterator, Optional, Tuple

from ..errors import DigestMismatch, ImageFormatError
from ..posix.io import write_all

__all__ = ["Blobs", "BlobWriter", "sha256_digest", "fsync_dir"]

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

    def put_stream(
        self, stream: BinaryIO, expected: Optional[str] = None, *, size: Optional[int] = None, source: str = ""
    ) -> Tuple[str, int]:
        """Copy ``stream`` into the store; returns (digest, size).  Raises
        DigestMismatch (and keeps nothing) when it does not hash to ``expected``."""
        with self.writer(expected, size=size, source=source) as blob:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                blob.write(chunk)
        return blob.digest, blob.written

    @contextlib.contextmanager
    def writer(
        self, expected: Optional[str] = None, *, size: Optional[int] = None, source: str = ""
    ) -> Iterator[BlobWriter]:
        """A blob written piece by piece (``write``) and hashed on the way: when the
        block ends without error it is checked against ``expected`` and ``size`` and
        renamed into place; otherwise (or when it does not match) nothing is kept."""
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        blob = BlobWriter(fd, source, self.tmp)
        try:
            yield blob
            blob.verify(expected, size)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path(blob.digest))
            tmp = ""
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp:
                os.unlink(tmp)


class BlobWriter:
    """The open temporary file of a blob being written (see :meth:`Blobs.writer`)."""

    def __init__(self, fd: int, source: str, where: str) -> None:
        self.fd, self.source, self.where = fd, source, where
        self.hash, self.written = hashlib.sha256(), 0

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        try:
            write_all(self.fd, data)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):  # name the store, not just the errno
                raise OSError(
                    err.errno, f"{err.strerror}: writing {self.source or 'a blob'} into the image store", self.where
                ) from None
            raise
        self.written += len(data)

    def verify(self, expected: Optional[str], size: Optional[int]) -> None:
        """DigestMismatch or ImageFormatError (the size) unless the bytes written are ``expected``."""
        if expected is not None and self.digest != expected:
            raise DigestMismatch(self.source or "blob", expected, self.digest)
        if size is not None and self.written != size:
            raise ImageFormatError(self.source or str(expected), f"{self.written} bytes, descriptor says {size}")
