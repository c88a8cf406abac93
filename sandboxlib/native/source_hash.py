"""The hash of csrc/ that a build embeds and the binding compares: one
function for both (csrc/build_native.py loads this file by its path)."""

from __future__ import annotations

import hashlib
import pathlib

__all__ = ["source_hash"]


def source_hash(directory: pathlib.Path) -> str:
    """Hash of csrc/ (C sources, headers, cdef): what a build was made from."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix in {".c", ".h", ".cdef"}:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
