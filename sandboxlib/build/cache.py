"""Cache keys of build steps, as BuildKit keys them: the parent step's key,
the instruction after substitution, the build arguments it sees, and for
``COPY``/``ADD`` a hash of the sources' contents, modes, owners and link
targets (never their mtimes: a ``touch`` changes nothing).  The store keeps
what each key made (``images/buildcache.py``)."""

from __future__ import annotations

import hashlib
import json
import stat
from typing import Mapping, Optional, Tuple

__all__ = ["base_key", "step_key", "SourcesHash"]

VERSION = "sandboxlib.build/1"  # bumped when a step's result changes for the same inputs


def base_key(manifest_digest: Optional[str]) -> str:
    """The key of a stage's start: its base image (by manifest), or scratch."""
    return _digest(["FROM", manifest_digest or "scratch"])


def step_key(parent: str, instruction: str, args: Mapping[str, str], content: str = "") -> str:
    return _digest([parent, instruction, sorted(args.items()), content])


def _digest(parts) -> str:
    data = json.dumps([VERSION, parts], separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SourcesHash:
    """The content hash of the files a COPY writes: per entry its destination
    path, type, permission bits, owner, link target and bytes."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def add(self, path: str, mode: int, owner: Tuple[int, int], link: str = "", content: str = "") -> None:
        """One entry; ``content``: the sha256 (hex) of a regular file's bytes."""
        entry = json.dumps([path, stat.S_IFMT(mode), stat.S_IMODE(mode), owner, link, content]).encode()
        self.hash.update(len(entry).to_bytes(4, "big") + entry)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()
