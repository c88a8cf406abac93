"""Importing images: ``docker save`` archives (the legacy ``manifest.json``
format and Docker >= 25's OCI layout in a tar), OCI image layouts (directory
or tar), root file system tarballs and directories.  Every blob is checked
against its digest and every layer against its config's diff_id, and that
it unpacks within the store's limits (``layercheck.py``), before an image is
referenced; a failed import references nothing and its blobs are collected."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

from ..errors import DigestMismatch, ImageFormatError
from . import reference
from .blobs import CHUNK
from .changes import apply_changes
from .compression import decompressed, is_corrupt_data, sniff
from .imageconfig import container_config
from .layercheck import LayerCheck
from .layers import diff_id_dir, new_layer, publish
from .model import (
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    load_json,
    parse_config,
    parse_manifest,
)
from .newimage import host_platform, new_config, write_manifest
from .sources import open_source, read_json_bytes
from .store import Store
from .unpack import IdPolicy, Owners, unpack

__all__ = ["load", "import_rootfs", "from_directory", "transaction", "store_layer", "check_layer", "write_manifest_raw"]

LAYER_MEDIA = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


@contextlib.contextmanager
def transaction(store: Store):
    """Blobs written inside are collected again if the import fails."""
    try:
        with store.writing():
            yield
    except BaseException:
        store.collect()
        raise


class _Wrap:
    """Turns a truncated or corrupt archive's low-level errors into ImageFormatError."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        # Only errors of reading the input: a full disk is an OSError of its own.
        if err is not None and is_corrupt_data(err):
            raise ImageFormatError(self.label, f"truncated or corrupt: {err}") from err
        return False


# -- layers ---------------------------------------------------------------------------
Unpacking = Optional[Tuple[str, IdPolicy]]  # (an empty directory, the id policy) or None


def diff_id_of(
    stream: BinaryIO, kind: str, check: LayerCheck, source: str, into: Unpacking = None
) -> Tuple[str, Owners]:
    """The sha256 of the uncompressed tar, checking that it is one that
    unpacks (``check`` sees every header before its data is read); with
    ``into`` (an empty directory, an id policy), unpacked there by the
    hostile-input extractor in the same pass.  Returns (diff_id, the owners
    still to apply: see :class:`IdPolicy`)."""
    hasher = _Hashing(decompressed(stream, kind))
    owners: Owners = {}
    with _Wrap(source):
        if into is None:
            with tarfile.open(fileobj=hasher, mode="r|", bufsize=1 << 20) as tar:
                for member in tar:
                    check.entry(member)
        else:
            owners = unpack(hasher, *into, source, before=check.entry)
        while hasher.read(CHUNK):
            pass
    return "sha256:" + hasher.hash.hexdigest(), owners


class _Hashing(io.RawIOBase):
    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.hash = stream, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.hash.update(data)
        return data


@contextlib.contextmanager
def _unpacking(store: Store, diff_id: Optional[str], policy: Optional[IdPolicy]) -> Iterator[Unpacking]:
    """Where to unpack the layer in the pass that checks it, or None: no
    ``policy``, or the layer is unpacked for it already."""
    if policy is None or (diff_id is not None and os.path.isdir(diff_id_dir(store, diff_id, policy))):
        yield None
        return
    with new_layer(store) as root:
        yield root, policy


def _publish(store: Store, into: Unpacking, owners: Owners, diff_id: str, source: str) -> None:
    if into is not None:
        publish(store, into[0], owners, diff_id_dir(store, diff_id, into[1]), into[1], source)


def store_layer(
    store: Store,
    stream: BinaryIO,
    *,
    digest: Optional[str],
    size: Optional[int],
    media_type: Optional[str],
    diff_id: Optional[str],
    source: str,
    unpack_for: Optional[IdPolicy] = None,
) -> Tuple[str, int, str, str]:
    """Store a layer blob, verify digest and diff_id, and that it unpacks
    within the store's limits; returns (digest, size, media type, diff_id).

    One pass: the bytes go to the blob file and its hash as the layer check
    (decompressor, tar headers, diff_id) consumes them; with ``unpack_for``
    (an id policy), the extractor unpacks the layer as the check passes each
    entry, and the layer dir (``layers/KEY/HEX``) is published once the blob
    is in place and its digest and diff_id are right.  When the check fails
    the rest is still read for the digest: a blob that is not what it claims
    is a DigestMismatch, whatever its content."""
    check = LayerCheck(source, store.layer_limits, devices=IdPolicy.for_caller().privileged)
    with _unpacking(store, diff_id, unpack_for) as into:
        with store.blobs.writer(digest, size=size, source=source) as blob:
            tee = _Tee(stream, blob.write)
            try:
                with _Wrap(source):
                    kind = sniff(tee.peek(4))
                    actual, owners = diff_id_of(tee, kind, check, source, into)
                tee.drain()
            except (ImageFormatError, DigestMismatch):
                tee.drain()
                blob.verify(digest, size)
                raise
            if diff_id is not None and actual != diff_id:
                blob.verify(digest, size)
                raise DigestMismatch(f"{source} (uncompressed, the config's diff_id)", diff_id, actual)
        _publish(store, into, owners, actual, source)
    return blob.digest, blob.written, truthful_media_type(media_type, kind), actual


def truthful_media_type(claimed: Optional[str], kind: str) -> str:
    """The layer's media type as claimed, unless its compression is not the blob's
    (Docker 20.10 pushes a layer it pulled uncompressed as ``...tar.gzip``; Docker
    and containerd read layers by their magic bytes): then the OCI type of ``kind``."""
    if claimed is not None and LAYER_TYPES.get(claimed) == kind:
        return claimed
    return LAYER_MEDIA[kind]


class _Tee(io.RawIOBase):
    """Reads ``stream`` and hands every byte read to ``sink`` too."""

    def __init__(self, stream: BinaryIO, sink) -> None:
        self.stream, self.sink, self.head = stream, sink, b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer at the end), read again by the next reads."""
        while len(self.head) < size:
            data = self.stream.read(size - len(self.head))
            if not data:
                break
            self.sink(data)
            self.head += data
        return self.head[:size]

    def read(self, size: int = -1) -> bytes:
        if self.head:
            cut = len(self.head) if size is None or size < 0 else size
            data, self.head = self.head[:cut], self.head[cut:]
            return data
        data = self.stream.read(size)
        if data:
            self.sink(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read what the check left (trailing bytes count for the digest)."""
        self.head = b""
        while self.read(CHUNK):
            pass


def check_layer(
    store: Store,
    digest: str,
    *,
    media_type: Optional[str],
    diff_id: Optional[str],
    source: str,
    unpack_for: Optional[IdPolicy] = None,
) -> Tuple[str, str]:
    """Check that a layer blob in the store matches ``diff_id`` and unpacks
    within the store's limits (``unpack_for``: and unpack it in that pass,
    as :func:`store_layer` does); returns (media type, diff_id)."""
    check = LayerCheck(source, store.layer_limits, devices=IdPolicy.for_caller().privileged)
    with _unpacking(store, diff_id, unpack_for) as into:
        with open(store.blobs.path(digest), "rb") as f, _Wrap(source):
            kind = sniff(f.read(4))
            f.seek(0)
            actual, owners = diff_id_of(f, kind, check, source, into)
        if diff_id is not None and actual != diff_id:
            raise DigestMismatch(f"{source} (uncompressed, the config's diff_id)", diff_id, actual)
        _publish(store, into, owners, actual, source)
    return truthful_media_type(media_type, kind), actual


# -- OCI layouts ------------------------------------------------------------------------
def _platform_ok(entry: dict) -> bool:
    platform = entry.get("platform")
    if not platform:
        return True
    os_name, arch = host_platform()
    return platform.get("os") == os_name and platform.get("architecture") == arch


def _unambiguous(document: dict, media_type: str, label: str) -> None:
    """Refuse a document that reads as an index and as a manifest, or whose own
    ``mediaType`` is not its descriptor's: the OCI image-spec's answer to
    CVE-2021-41190 (one document that two clients take for different images)."""
    own = document.get("mediaType")
    if own is not None and own != media_type:
        raise ImageFormatError(label, f"its mediaType {own!r} is not its descriptor's {media_type!r}")
    kind, extra = ("an index", ("layers", "config")) if media_type in INDEX_TYPES else ("a manifest", ("manifests",))
    for key in extra:
        if key in document:
            raise ImageFormatError(label, f"{kind} that also carries {key!r} is ambiguous (CVE-2021-41190)")


def _manifests(source, descriptor: dict, label: str, depth: int = 0) -> List[dict]:
    """Image manifest descriptors under ``descriptor``, the host's platform only."""
    media_type = descriptor.get("mediaType", "")
    if media_type in MANIFEST_TYPES:
        return [descriptor]
    if media_type not in INDEX_TYPES or depth > 4:
        raise ImageFormatError(label, f"unsupported manifest media type {media_type!r}")
    index = load_json(_blob(source, descriptor), label)
    _unambiguous(index, media_type, label)
    chosen = [m for m in index.get("manifests") or [] if _platform_ok(m)]
    if not chosen:
        os_name, arch = host_platform()
        raise ImageFormatError(label, f"the index has no manifest for {os_name}/{arch}")
    return [found for m in chosen[:1] for found in _manifests(source, m, label, depth + 1)]


def _blob(source, descriptor: dict) -> bytes:
    digest = descriptor["digest"]
    data = read_json_bytes(source, "blobs/" + digest.replace(":", "/"))
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise DigestMismatch(f"{source.label} blob {digest}", digest, actual)
    return data


def _load_oci(store: Store, source, names_by_config: dict):
    index = load_json(read_json_bytes(source, "index.json"), f"{source.label}/index.json")
    _unambiguous(index, OCI_INDEX, f"{source.label}/index.json")
    images = []
    for i, entry in enumerate(index.get("manifests") or []):
        if not isinstance(entry, dict) or not _platform_ok(entry):
            continue
        label = f"{source.label}/index.json manifests[{i}]"
        annotations = entry.get("annotations") or {}
        names = [n for n in (annotations.get(k) for k in NAME_ANNOTATIONS) if n and ":" in n][:1]
        for descriptor in _manifests(source, entry, label):
            manifest, config = _copy_oci_image(store, source, descriptor, label)
            images.append((manifest, names + names_by_config.get(config, [])))
    if not images:
        raise ImageFormatError(source.label, "the layout names no image")
    return images


def _copy_oci_image(store: Store, source, descriptor: dict, label: str) -> str:
    manifest = _blob(source, descriptor)
    _unambiguous(load_json(manifest, label), descriptor["mediaType"], label)
    (config_digest, _), layers = parse_manifest(manifest, label)
    config_data = _blob(source, {"digest": config_digest})
    diff_ids = parse_config(config_data, f"{label} config")["rootfs"]["diff_ids"]
    if len(diff_ids) != len(layers):
        raise ImageFormatError(label, f"{len(layers)} layers but {len(diff_ids)} diff_ids")
    for (digest, size, media_type), diff_id in zip(layers, diff_ids):
        with source.open("blobs/" + digest.replace(":", "/")) as f:
            store_layer(
                store,
                f,
                digest=digest,
                size=size,
                media_type=media_type,
                diff_id=diff_id,
                source=f"{source.label} layer {digest}",
            )
    store.blobs.put_bytes(config_data, config_digest)
    return store.blobs.put_bytes(manifest, descriptor["digest"]), config_digest


# -- docker save (legacy) ------------------------------------------------------------
_CONFIG_NAME = re.compile(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?")


def _load_docker(store: Store, source) -> list:
    entries = json.loads(read_json_bytes(source, "manifest.json") or b"null")
    if not isinstance(entries, list) or not entries:
        raise ImageFormatError(f"{source.label}/manifest.json", "a non-empty list was expected")
    images = []
    for i, entry in enumerate(entries):
        label = f"{source.label}/manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
            raise ImageFormatError(label, "an entry with Config and Layers was expected")
        config_data = read_json_bytes(source, str(entry.get("Config")))
        config_digest = "sha256:" + hashlib.sha256(config_data).hexdigest()
        named = _CONFIG_NAME.fullmatch(str(entry.get("Config")))
        if named and "sha256:" + named.group(1) != config_digest:
            raise DigestMismatch(f"{label} Config", "sha256:" + named.group(1), config_digest)
        diff_ids = parse_config(config_data, f"{label} Config")["rootfs"]["diff_ids"]
        if len(diff_ids) != len(entry["Layers"]):
            raise ImageFormatError(label, f"{len(entry['Layers'])} layers but {len(diff_ids)} diff_ids")
        layers = []
        for name, diff_id in zip(entry["Layers"], diff_ids):
            with source.open(str(name)) as f:
                layers.append(
                    store_layer(
                        store,
                        f,
                        digest=None,
                        size=None,
                        media_type=None,
                        diff_id=diff_id,
                        source=f"{source.label} layer {name}",
                    )[:3]
                )
        images.append((write_manifest_raw(store, config_data, layers), list(entry.get("RepoTags") or [])))
    return images


def write_manifest_raw(store: Store, config_data: bytes, layers) -> str:
    """A manifest for a config kept byte for byte (so the image id stays Docker's)."""
    config_digest = store.blobs.put_bytes(config_data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
        "layers": [{"mediaType": t, "digest": d, "size": s} for d, s, t in layers],
    }
    return store.blobs.put_bytes(json.dumps(manifest, sort_keys=True).encode())


def _docker_names(source) -> dict:
    """config digest -> RepoTags of a Docker >= 25 archive's manifest.json (none elsewhere)."""
    if not source.exists("manifest.json"):
        return {}
    entries = load_json(b'{"m": %s}' % read_json_bytes(source, "manifest.json"), source.label)["m"]
    found = {}
    for entry in entries if isinstance(entries, list) else []:
        named = isinstance(entry, dict) and _CONFIG_NAME.fullmatch(str(entry.get("Config")))
        if named:
            found["sha256:" + named.group(1)] = list(entry.get("RepoTags") or [])
    return found


# -- the entry points ------------------------------------------------------------------
def load(store: Store, path: str) -> list:
    """Import every image of an archive or layout; returns the Images."""
    return [image for image, _ in load_carried(store, path)]


def load_carried(store: Store, path: str) -> list:
    """As :func:`load`, each Image with the names the archive carried for it."""
    source = open_source(path)
    try:
        with transaction(store), _Wrap(path):
            if source.exists("index.json") and source.exists("oci-layout"):
                found = _load_oci(store, source, _docker_names(source))
            elif source.exists("manifest.json"):
                found = _load_docker(store, source)
            else:
                raise ImageFormatError(
                    path,
                    "neither a docker save archive (manifest.json) nor an OCI image layout (oci-layout, index.json)",
                )
            return [
                (store.add(digest, tuple(dict.fromkeys(names))), tuple(dict.fromkeys(names))) for digest, names in found
            ]
    finally:
        source.close()


def import_rootfs(
    store: Store,
    tar_path: str,
    ref: Optional[str],
    config: Optional[dict] = None,
    changes: Optional[Sequence[str]] = None,
):
    """One image of one layer: a root file system tarball (plain, gzip or zstd);
    ``config``, then the Dockerfile instructions of ``changes``, its container config."""
    config = apply_changes(container_config(config, "config"), changes)
    names = (str(reference.parse(ref, "ref")),) if ref else ()
    with transaction(store), open(tar_path, "rb") as f:
        layer = store_layer(store, f, digest=None, size=None, media_type=None, diff_id=None, source=tar_path)
        manifest = write_manifest(store, new_config([layer[3]], config), [layer[:3]])
        return store.add(manifest, names)


def from_directory(store: Store, path: str, ref: Optional[str], config: Optional[dict] = None):
    """One image of one layer: the tree under ``path`` (ids kept; the
    caller's own ids become 0 when rootless: it is the container's root)."""
    if not os.path.isdir(path):
        raise NotADirectoryError(20, "Not a directory", path)
    config = container_config(config, "config")
    names = (str(reference.parse(ref, "ref")),) if ref else ()
    with transaction(store):
        with tempfile.TemporaryFile(dir=store.tmp) as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(path, arcname=".", filter=_owner_filter())
            f.seek(0)
            layer = store_layer(store, f, digest=None, size=None, media_type=None, diff_id=None, source=path)
        manifest = write_manifest(store, new_config([layer[3]], config), [layer[:3]])
        return store.add(manifest, names)


def _owner_filter():
    uid, gid = os.geteuid(), os.getegid()

    def strip(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        info.uname = info.gname = ""
        if uid != 0:
            info.uid = 0 if info.uid == uid else info.uid
            info.gid = 0 if info.gid == gid else info.gid
        return info

    return strip
