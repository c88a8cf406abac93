"""Pushing an image: each blob (layers and the config) is asked for with
``HEAD`` first and, when the registry lacks it, mounted from another
repository of the registry the image is known in (``?mount=&from=``), else
uploaded (monolithic, or in chunks when large), the missing ones
UPLOADS_PER_REGISTRY at a time (Docker's ``max-concurrent-uploads`` is 5); the manifest goes last,
byte for byte as the store keeps it, so its digest is the image's digest."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple

from ..errors import ConfigError, RegistryDataError
from ..images import ImageStore
from ..images.model import OCI_MANIFEST, load_json
from .client import Repository
from .names import resolve

__all__ = ["push", "UPLOADS_PER_REGISTRY"]

UPLOADS_PER_REGISTRY = 4  # blobs uploaded at once to one registry


def push(store: ImageStore, src: str, dest: Optional[str] = None) -> str:
    """Push ``src`` to ``dest``; see :meth:`sandboxlib.ImageStore.push`."""
    image = store.get(src)
    if dest is None:
        if src in image.references or f"{src}:latest" in image.references:
            dest = src
        elif image.references:
            dest = image.references[0]
        else:
            raise ConfigError("dest", f"the image {src!r} has no name: say where to push it")
    remote = resolve(dest, "dest")
    if remote.digest is not None and remote.digest != image.digest:
        raise ConfigError("dest", f"{dest!r} names the digest {remote.digest}, the image's is {image.digest}")
    manifest = store.blobs.read(image.digest)
    media_type = load_json(manifest, f"manifest {image.digest}").get("mediaType") or OCI_MANIFEST
    mount_from = _other_repositories(image, remote)
    with Repository(remote, push=True) as repo:
        blobs = [(layer.digest, layer.size) for layer in image.layers]
        blobs.append((image.id, store.blobs.size(image.id)))

        # HEADs one after another: the first answers the registry's 401 (a token fetched
        # once, not by every upload thread at once), and they cost a round trip each
        missing = [(digest, size) for digest, size in blobs if not repo.has_blob(digest)]

        def put(blob: Tuple[str, int]) -> None:
            digest, size = blob
            with open(store.blobs.path(digest), "rb") as f:
                repo.upload_blob(digest, f, size, mount_from)

        if missing:
            workers = min(UPLOADS_PER_REGISTRY, len(missing))
            with ThreadPoolExecutor(workers, thread_name_prefix="sandboxlib-push") as pool:
                list(pool.map(put, missing))  # every upload ends before this returns; the first failure is raised
        announced = repo.put_manifest(remote.tag or image.digest, manifest, media_type)
    if announced is not None and announced != image.digest:
        raise repo.error(
            201, f"the registry stored the manifest as {announced}, its digest is {image.digest}", RegistryDataError
        )
    with store.writing():
        store.add(image.digest, (), (remote.repo_digest(image.digest),))
    return image.digest


def _other_repositories(image, remote) -> Tuple[str, ...]:
    """Repositories of the same registry the image came from or went to (its
    names and repo digests): the registry can mount its blobs from there."""
    found = []
    for name in image.repo_digests + image.references:
        with contextlib.suppress(ConfigError):
            other = resolve(name)
            if other.registry == remote.registry and other.repository != remote.repository:
                found.append(other.repository)
    return tuple(dict.fromkeys(found))
