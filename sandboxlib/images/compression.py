"""Layer compression: gzip, zstd (the ``zstandard`` package) or none, read as streams."""
from __future__ import annotations

import gzip
from typing import BinaryIO

from ..errors import ImageFormatError, UnsupportedError

__all__ = ["sniff", "decompressed"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> str:
    """'gzip', 'zstd' or 'none' from a blob's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def decompressed(stream: BinaryIO, kind: str) -> BinaryIO:
    """A stream of the uncompressed bytes of ``stream`` (compressed with ``kind``)."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if kind == "zstd":
        try:
            import zstandard  # an optional dependency: only images with zstd layers need it
        except ImportError:
            raise UnsupportedError("zstd-compressed image layers",
                                   "install the zstandard package: pip install 'sandboxlib[zstd]'") from None
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    if kind == "none":
        return stream
    raise ImageFormatError("layer", f"unknown compression {kind!r}")
