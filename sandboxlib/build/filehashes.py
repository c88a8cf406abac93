"""The sha256 of context files, remembered by their stat (device, inode,
size, mtime and ctime in ns), as BuildKit's content hash cache: a file
whose stat is unchanged is not read again for the cache key; a ``touch``
changes its stat, so it is read again, and its digest (so the key) stays.
Kept in ``<store>/build-hashes.json``, a memo only: losing it costs a
re-read, never a wrong hit (the ctime cannot be set back)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import BinaryIO, Callable, Dict

__all__ = ["FileHashes", "MAX_ENTRIES"]

MAX_ENTRIES = 200_000  # the files of a few large contexts
CHUNK = 1 << 20


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class FileHashes:
    def __init__(self, store_path: str, tmp: str) -> None:
        self.path, self.tmp = os.path.join(store_path, "build-hashes.json"), tmp
        self.used: Dict[str, str] = {}
        try:
            with open(self.path, "rb") as f:
                known = json.load(f)
            self.known: Dict[str, str] = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            self.known = {}

    def digest(self, st: os.stat_result, open_file: Callable[[], BinaryIO]) -> str:
        """The file's sha256 (hex); ``st`` is its stat, taken before it is opened."""
        key = _stat_key(st)
        found = self.known.get(key) or self.used.get(key)
        if found is None:
            content = hashlib.sha256()
            with open_file() as f:
                if _stat_key(os.fstat(f.fileno())) != key:
                    key = ""  # changed meanwhile: hashed, not remembered
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    content.update(chunk)
            found = content.hexdigest()
        if key:
            self.used[key] = found
        return found

    def save(self) -> None:
        """Keep what this build used, then older entries, up to MAX_ENTRIES (inside the store's ``writing()``)."""
        if not self.used or all(self.known.get(k) == v for k, v in self.used.items()):
            return
        merged = dict(self.used)
        for key, value in self.known.items():
            if len(merged) >= MAX_ENTRIES:
                break
            merged.setdefault(key, value)
        fd, tmp = tempfile.mkstemp(prefix="hashes-", dir=self.tmp)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
