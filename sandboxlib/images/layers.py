"""Unpacked layers, kept once per (diff_id, id policy) under
``HOME/layers/KEY/HEX`` and shared by every image and container that uses them."""

from __future__ import annotations

import errno
import os
import tempfile
from typing import List, Sequence

from ..errors import UnsupportedError
from .compression import decompressed
from .model import LAYER_TYPES, Image, Layer
from .modes import PRIVATE
from .store import Store
from .unpack import IdPolicy, unpack, unpack_tar_file

__all__ = ["unpacked_layers", "layer_dir", "visible_layers"]


def layer_dir(store: Store, layer: Layer, policy: IdPolicy) -> str:
    return os.path.join(store.path, "layers", policy.key, layer.diff_id.split(":", 1)[1])


def unpacked_layers(store: Store, image: Image, policy: IdPolicy) -> List[str]:
    """The directories of ``image``'s layers, bottom first, unpacking those not there yet."""
    os.makedirs(os.path.join(store.path, "layers", policy.key), mode=PRIVATE, exist_ok=True)
    found = []
    for layer in image.layers:
        dest = layer_dir(store, layer, policy)
        if not os.path.isdir(dest):
            with store.writing():
                if not os.path.isdir(dest):
                    _unpack_layer(store, layer, dest, policy)
        found.append(dest)
    return found


def visible_layers(dirs: Sequence[str], policy: IdPolicy) -> List[str]:
    """The layers an overlay of ``dirs`` (bottom first) stacks.  A layer
    whose root is opaque (``.wh..wh..opq`` at its top) hides everything
    below it, but overlayfs ignores the opaque xattr on a lower layer's root
    directory: so the layers below it are left out of the stack."""
    for i in range(len(dirs) - 1, 0, -1):
        try:
            if os.getxattr(dirs[i], policy.opaque_xattr) == b"y":
                return list(dirs[i:])
        except OSError as err:
            if err.errno != errno.ENODATA:
                raise
    return list(dirs)


def _unpack_layer(store: Store, layer: Layer, dest: str, policy: IdPolicy) -> None:
    """Unpack into a temporary directory, give its files the owners the
    caller could not give them itself (a ``sub`` policy), rename into place.
    (The blob's digest and diff_id were checked when it entered the store.)"""
    work = tempfile.mkdtemp(prefix="layer-", dir=store.tmp)
    try:
        root = os.path.join(work, "root")
        os.mkdir(root, 0o755)
        kind, label = LAYER_TYPES[layer.media_type], f"layer {layer.digest}"
        if kind == "none":
            owners = unpack_tar_file(store.blobs.path(layer.digest), root, policy, label)
        else:
            with open(store.blobs.path(layer.digest), "rb") as blob:
                owners = unpack(decompressed(blob, kind), root, policy, label)
        if owners:
            helper = store.sub_id_files()
            if helper is None:
                raise UnsupportedError(
                    label,
                    "owners in subordinate id ranges need sandboxlib.ImageStore, "
                    "which applies them in a user namespace",
                )
            helper.chown(root, owners, policy)
        # sbx-init opens it before its id maps may exist (as "other"); the
        # container sees the root dir of its writable layer, not this one.
        # Other host users cannot: layers/KEY above it is the store's, 0700.
        os.chmod(root, 0o755)
        try:
            os.rename(root, dest)
        except OSError:  # another process unpacked it first
            if not os.path.isdir(dest):
                raise
    finally:
        store.remove_trees([work])
