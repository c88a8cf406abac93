"""What an image is: manifest and config parsed into frozen values, and the
media types we read and write."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

import attrs

from ..errors import ImageFormatError
from .reference import _DIGEST

__all__ = [
    "Layer",
    "Image",
    "MANIFEST_TYPES",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "OCI_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "parse_manifest",
    "parse_config",
    "load_json",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# media type -> compression of the layer blob
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


@attrs.frozen(kw_only=True)
class Layer:
    """One layer: its blob (``digest``, ``size``, ``media_type``) and the
    digest of its uncompressed tar (``diff_id``)."""

    digest: str
    diff_id: str
    size: int
    media_type: str


@attrs.frozen(kw_only=True, eq=False)
class Image:
    """An image in a store.

    Attributes:
        digest: the manifest's digest (what ``name@sha256:...`` names).
        id: the config's digest (Docker's image id).
        references: the ``name:tag`` references that point to it.
        layers: its layers, bottom first.
        config: the container config of the image (``Entrypoint``, ``Cmd``,
            ``Env``, ``WorkingDir``, ``User``, ...), as in its config blob.
        architecture, os, created: from the config blob.
        size: the bytes of its blobs (manifest, config, layers).
        repo_digests: ``name@sha256:...`` of the registry manifests (or indexes)
            it was pulled from or pushed to, as Docker's ``RepoDigests``.
    """

    digest: str
    id: str
    references: Tuple[str, ...]
    layers: Tuple[Layer, ...]
    config: Dict[str, Any]
    architecture: str
    os: str
    created: Optional[str]
    size: int
    repo_digests: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        layers = f"{len(self.layers)} layer{'s' if len(self.layers) != 1 else ''}"
        return f"<sandboxlib.Image {self.id[7:19]} {list(self.references)} {layers}, {self.size} bytes>"


def load_json(data: bytes, source: str) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageFormatError(source, f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ImageFormatError(source, "a JSON object was expected")
    return value


def _descriptor(value: Any, source: str) -> Tuple[str, int, str]:
    if not isinstance(value, dict):
        raise ImageFormatError(source, "descriptor is not an object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageFormatError(source, f"unsupported or invalid digest {digest!r} (sha256 only)")
    if not isinstance(size, int) or size < 0:
        raise ImageFormatError(source, f"invalid size {size!r}")
    return digest, size, media_type


def parse_manifest(data: bytes, source: str) -> Tuple[Tuple[str, int], Tuple[Tuple[str, int, str], ...]]:
    """(config (digest, size), layers ((digest, size, media type), ...)) of an image manifest."""
    manifest = load_json(data, source)
    media_type = manifest.get("mediaType", OCI_MANIFEST)
    if media_type not in MANIFEST_TYPES or manifest.get("schemaVersion") != 2:
        raise ImageFormatError(
            source, f"unsupported manifest (mediaType {media_type!r}, schemaVersion {manifest.get('schemaVersion')!r})"
        )
    config = _descriptor(manifest.get("config"), f"{source} config")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageFormatError(source, "manifest has no layers list")
    parsed = tuple(_descriptor(layer, f"{source} layers[{i}]") for i, layer in enumerate(layers))
    for i, (_, _, layer_type) in enumerate(parsed):
        if layer_type not in LAYER_TYPES:
            raise ImageFormatError(source, f"layers[{i}]: unsupported layer media type {layer_type!r}")
    return config[:2], parsed


def parse_config(data: bytes, source: str) -> dict:
    """The image config, checked for what running it needs."""
    config = load_json(data, source)
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageFormatError(source, "config has no rootfs.diff_ids")
    for diff_id in rootfs["diff_ids"]:
        if not isinstance(diff_id, str) or not _DIGEST.fullmatch(diff_id):
            raise ImageFormatError(source, f"invalid diff_id {diff_id!r}")
    if config.get("config") is not None and not isinstance(config.get("config"), dict):
        raise ImageFormatError(source, "config.config is not an object")
    return config
