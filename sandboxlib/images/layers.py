"""Unpacked layers, kept once per (diff_id, id policy) under
``HOME/layers/KEY/HEX`` and shared by every image and container that uses them."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import Iterator, List, Sequence

from ..errors import UnsupportedError
from .compression import decompressed
from .model import LAYER_TYPES, Image, Layer
from .modes import PRIVATE
from .store import Store
from .unpack import IdPolicy, Owners, unpack, unpack_tar_file

__all__ = ["unpacked_layers", "layer_dir", "diff_id_dir", "visible_layers", "new_layer", "publish"]


def layer_dir(store: Store, layer: Layer, policy: IdPolicy) -> str:
    return diff_id_dir(store, layer.diff_id, policy)


def diff_id_dir(store: Store, diff_id: str, policy: IdPolicy) -> str:
    """Where the layer ``diff_id`` is unpacked for ``policy``: ``layers/KEY/HEX``."""
    return os.path.join(store.path, "layers", policy.key, diff_id.split(":", 1)[1])


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
    """Unpack the layer's blob (its digest and diff_id were checked when it
    entered the store) and publish it at ``dest``."""
    kind, label = LAYER_TYPES[layer.media_type], f"layer {layer.digest}"
    with new_layer(store) as root:
        if kind == "none":
            owners = unpack_tar_file(store.blobs.path(layer.digest), root, policy, label)
        else:
            with open(store.blobs.path(layer.digest), "rb") as blob:
                owners = unpack(decompressed(blob, kind), root, policy, label)
        publish(store, root, owners, dest, policy, label)


@contextlib.contextmanager
def new_layer(store: Store) -> Iterator[str]:
    """An empty directory under tmp/ to unpack a layer into (then
    :func:`publish`); what is left of it is removed when the block ends.
    Use inside ``store.writing()``: a collection removes all of tmp/."""
    work = tempfile.mkdtemp(prefix="layer-", dir=store.tmp)
    try:
        root = os.path.join(work, "root")
        os.mkdir(root, 0o755)
        yield root
    finally:
        store.remove_trees([work])


def publish(store: Store, root: str, owners: Owners, dest: str, policy: IdPolicy, label: str) -> None:
    """Give the files of the unpacked ``root`` the owners the caller could not
    give them itself (a ``sub`` policy), then rename it to ``dest`` (unless
    another process did first): a layer dir is never seen incomplete."""
    if owners:
        helper = store.sub_id_files()
        if helper is None:
            raise UnsupportedError(
                label,
                "owners in subordinate id ranges need sandboxlib.ImageStore, which applies them in a user namespace",
            )
        helper.chown(root, owners, policy)
    # sbx-init opens it before its id maps may exist (as "other"); the
    # container sees the root dir of its writable layer, not this one.
    # Other host users cannot: layers/KEY above it is the store's, 0700.
    os.chmod(root, 0o755)
    os.makedirs(os.path.dirname(dest), mode=PRIVATE, exist_ok=True)
    try:
        os.rename(root, dest)
    except OSError:  # another process unpacked it first
        if not os.path.isdir(dest):
            raise
