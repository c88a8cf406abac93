"""The build cache's entries in the image store: an index entry per built
step, annotated with the step's cache key (``sandboxlib.build.cache``
computes it).  They are untagged, so ``prune()`` removes them with the other
untagged images, and ``list()`` leaves them out (as ``docker images`` hides
intermediate images)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .model import OCI_MANIFEST

__all__ = ["BuildCache", "CACHE_ANNOTATION", "is_cache_entry"]

CACHE_ANNOTATION = "io.sandboxlib.build.cache-key"


def is_cache_entry(entry: dict) -> bool:
    return set(entry.get("annotations") or {}) == {CACHE_ANNOTATION}


class BuildCache:
    """Lookup and recording of built steps (a mixin of ``Store``)."""

    def cached_step(self: Any, key: str) -> Optional[str]:
        """The manifest digest a step of this cache key made, if it is still complete in the store."""
        for entry in self._read_index():
            if (entry.get("annotations") or {}).get(CACHE_ANNOTATION) == key:
                try:
                    image = self._image(entry["digest"], ())
                except (OSError, ValueError):
                    return None
                return entry["digest"] if all(self.blobs.has(layer.digest) for layer in image.layers) else None
        return None

    def record_step(self: Any, key: str, manifest_digest: str) -> None:
        """Point the cache key at a manifest whose blobs are all in place (inside ``writing()``)."""
        with self._index() as entries:
            entries[:] = [e for e in entries if (e.get("annotations") or {}).get(CACHE_ANNOTATION) != key]
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": self.blobs.size(manifest_digest),
                    "annotations": {CACHE_ANNOTATION: key},
                }
            )

    def cache_entries(self: Any) -> List[str]:
        """The cache keys the store holds."""
        return [e["annotations"][CACHE_ANNOTATION] for e in self._read_index() if is_cache_entry(e)]

    def prune_build_cache(self: Any) -> Tuple[List[str], int]:
        """Forget every built step, then collect what only they held:
        (the cache keys removed, bytes freed)."""
        with self._index() as entries:
            keys = [e["annotations"][CACHE_ANNOTATION] for e in entries if is_cache_entry(e)]
            entries[:] = [e for e in entries if not is_cache_entry(e)]
        return keys, self.collect()[2]
