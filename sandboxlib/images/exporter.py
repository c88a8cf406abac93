"""``store.save``: one tar that is both a ``docker save`` archive
(``manifest.json``, read by ``docker load`` and skopeo's ``docker-archive:``)
and an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``, read by
``oci-archive:``), as Docker >= 25 writes it.  Layers are written
uncompressed (the legacy format wants tars), so the manifest is rewritten:
its digest differs from the stored one, the image id does not."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from typing import List, Sequence, Tuple

from .compression import decompressed
from .model import LAYER_TYPES, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Image
from .store import Store

__all__ = ["save"]

PLAIN = "application/vnd.oci.image.layer.v1.tar"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_layer(store: Store, tar: tarfile.TarFile, layer, written: set) -> None:
    name = "blobs/sha256/" + layer.diff_id[7:]
    if name in written:
        return
    written.add(name)
    kind = LAYER_TYPES[layer.media_type]
    if kind == "none":
        tar.add(store.blobs.path(layer.digest), arcname=name)
        return
    with tempfile.TemporaryFile(dir=store.tmp) as plain:
        with open(store.blobs.path(layer.digest), "rb") as blob:
            shutil.copyfileobj(decompressed(blob, kind), plain, 1 << 20)
        info = tarfile.TarInfo(name)
        info.size, info.mode = plain.tell(), 0o644
        plain.seek(0)
        tar.addfile(info, plain)


def _image_entries(
    store: Store, tar: tarfile.TarFile, image: Image, names: Sequence[str], written: set
) -> Tuple[List[dict], dict]:
    config = store.blobs.read(image.id)
    if "blobs/sha256/" + image.id[7:] not in written:
        _add_bytes(tar, "blobs/sha256/" + image.id[7:], config)
        written.add("blobs/sha256/" + image.id[7:])
    for layer in image.layers:
        _add_layer(store, tar, layer, written)
    sizes = {layer.diff_id: _plain_size(store, layer) for layer in image.layers}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(config)},
            "layers": [
                {"mediaType": PLAIN, "digest": layer.diff_id, "size": sizes[layer.diff_id]} for layer in image.layers
            ],
        },
        sort_keys=True,
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    if "blobs/sha256/" + digest[7:] not in written:
        _add_bytes(tar, "blobs/sha256/" + digest[7:], manifest)
        written.add("blobs/sha256/" + digest[7:])
    descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}
    index = [
        dict(descriptor, annotations={"io.containerd.image.name": n, "org.opencontainers.image.ref.name": n})
        for n in names
    ] or [descriptor]
    legacy = {
        "Config": "blobs/sha256/" + image.id[7:],
        "RepoTags": list(names),
        "Layers": ["blobs/sha256/" + layer.diff_id[7:] for layer in image.layers],
    }
    return index, legacy


def _plain_size(store: Store, layer) -> int:
    if LAYER_TYPES[layer.media_type] == "none":
        return store.blobs.size(layer.digest)
    with open(store.blobs.path(layer.digest), "rb") as blob:
        stream = decompressed(blob, LAYER_TYPES[layer.media_type])
        size = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                return size
            size += len(chunk)


def save(store: Store, refs: Sequence[str], path: str) -> None:
    """Write the images ``refs`` name (with those names) to the tar ``path``,
    atomically: a partial archive never appears under ``path``."""
    chosen = []
    for ref in refs:  # by name:tag: that name; by digest or id: none (as Docker's)
        image = store.get(ref)
        chosen.append((image, [_tagged(ref)] if _tagged(ref) else []))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".save-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            written: set = set()
            index, legacy = [], []
            for image, names in chosen:
                entries, entry = _image_entries(store, tar, image, names, written)
                index += entries
                legacy.append(entry)
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(
                tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}).encode()
            )
            _add_bytes(tar, "manifest.json", json.dumps(legacy).encode())
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _tagged(ref: str) -> str:
    from .reference import parse

    parsed = parse(ref)
    return str(parsed) if parsed.name and parsed.tag else ""
