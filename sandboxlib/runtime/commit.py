"""``Container.commit``: the container's writable layer (its overlay upper
dir, which the init keeps open at ``SBX_FD_UPPER``) becomes a new layer on
top of its image's, with OCI whiteouts for what was deleted."""

from __future__ import annotations

import datetime
import json
import tarfile
import tempfile
from typing import Mapping, Optional, Tuple

from ..images import Image, ImageStore
from ..images.imageconfig import KEYS, container_config
from ..images.importer import store_layer
from ..images.newimage import write_manifest
from ..images.unpack import IdPolicy
from ..rootfs.idmap import IdMaps
from .subids import SandboxSubIdFiles
from .subids_worker import add_tree

__all__ = ["commit", "store_upper", "layer_tar", "CHANGES", "PLAIN"]

PLAIN = "application/vnd.oci.image.layer.v1.tar"
# the image config keys a commit may change (images/imageconfig.py: Docker's spelling, lowercase aliases)
CHANGES = KEYS


def layer_tar(f, upper_fd: int, policy: IdPolicy, maps: Optional[IdMaps]) -> None:
    """Write the upper dir as a layer tar into the file ``f``.  What the
    caller may not read (files of the container's other users, rootless;
    mode-000 directories) a short sandbox with the container's maps reads."""
    try:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            add_tree(tar, upper_fd, "", policy.container_ids)
        return
    except PermissionError:
        if maps is None:
            raise
    f.seek(0)
    f.truncate()
    f.flush()
    SandboxSubIdFiles().tar(upper_fd, f.fileno(), maps)


def store_upper(store: ImageStore, upper_fd: int, policy: IdPolicy, maps: Optional[IdMaps]) -> Tuple[str, int, str]:
    """The upper dir as a stored plain layer (inside ``store.writing()``): (digest, size, diff_id)."""
    with tempfile.TemporaryFile(dir=store.tmp) as f:
        layer_tar(f, upper_fd, policy, maps)
        f.seek(0)
        # checked as a loaded layer is: an image that can never run (a file named ".wh."
        # say) is refused now, not at its first start
        digest, size, _, diff_id = store_layer(
            store, f, digest=None, size=None, media_type=PLAIN, diff_id=None, source="the container's writable layer"
        )
    return digest, size, diff_id


def commit(
    store: ImageStore,
    image: Image,
    upper_fd: int,
    policy: IdPolicy,
    maps: Optional[IdMaps],
    ref: Optional[str],
    changes: Optional[Mapping[str, object]],
) -> Image:
    """A new image: ``image`` plus the upper dir as a layer, config ``changes`` applied."""
    updates = container_config(changes, "changes")
    names = (ref,) if ref else ()
    try:
        with store.writing():
            digest, size, diff_id = store_upper(store, upper_fd, policy, maps)
            config = json.loads(store.blobs.read(image.id))
            config["rootfs"]["diff_ids"].append(diff_id)
            config["config"] = dict(config.get("config") or {}, **updates)
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            config["created"] = now
            config["history"] = list(config.get("history") or []) + [
                {"created": now, "created_by": "sandboxlib commit"}
            ]
            layers = [(layer.digest, layer.size, layer.media_type) for layer in image.layers] + [(digest, size, PLAIN)]
            return store.add(write_manifest(store, config, layers), names)
    except BaseException:
        store.collect()
        raise
