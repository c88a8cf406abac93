"""What a container takes from the image store: its image's layers (pulled as
the ``pull`` option says, leased until it closes), its writable layer on
disk, and its named volumes."""

from __future__ import annotations

import os
from typing import Optional, cast

import attrs

from .. import registry
from ..config import ContainerConfig, Mount, MountKind, Pull, WritableLayer
from ..errors import ImageNotFound, RegistryError
from ..images import ImageStore, reference
from ..images.unpack import IdPolicy
from ..posix import forkclosed
from ..posix.releases import Releases
from ..rootfs import imageroot, writable
from ..rootfs.idmap import IdMaps
from ..rootfs.imageroot import ImageRoot

__all__ = ["ImageRoots"]


class ImageRoots:
    """The image-store side of :class:`~sandboxlib.runtime.lifecycle.ContainerLifecycle` (a part of it)."""

    config: ContainerConfig
    id: str
    _maps: Optional[IdMaps]
    _store: Optional[ImageStore]
    _image: Optional[ImageRoot]
    _upper: Optional[str]
    _upper_kept: bool  # the caller's writable_dir: never removed here
    _resources: Releases

    def _with_volumes(self) -> ContainerConfig:
        """The config with named volumes as binds of their store directories."""
        if not any(m.kind is MountKind.VOLUME for m in self.config.mounts):
            return self.config
        store = self._store or self._image_store()
        owner = self._id_policy().owner(0, 0)
        idmapped = self._maps is not None and os.geteuid() == 0
        mounts = [
            _volume_bind(store, m, owner, idmapped) if m.kind is MountKind.VOLUME else m for m in self.config.mounts
        ]
        return attrs.evolve(self.config, mounts=mounts, env=dict(self.config.env))

    def _prepare_image(self) -> tuple:
        """An image root's layer dirs, leased from the store until close()."""
        if self.config.image is None:
            return ()
        store = self._image_store()
        self._pull_image(store)
        self._image, lease = imageroot.prepare(self.config, self._maps, self.id, store)
        self._store = store
        self._resources.callback(store.release, self.id, lease)
        if self.config.writable_layer is WritableLayer.DISK and not self.config.read_only:
            writable.sweep(store)  # what dead owners left in this store
            owner = self._id_policy().owner(0, 0)
            if self.config.writable_dir is not None:  # (the caller's: it stays)
                self._upper, held = writable.kept(self.config.writable_dir, owner)
                self._resources.callback(forkclosed.close_fd, held)  # (its flock: after the overlay's unmount)
                self._upper_kept = True
            else:
                self._upper = writable.make(store, self.id, owner)
                self._resources.callback(writable.release, store, self._upper)
        return self._image.layers

    def _pull_image(self, store: ImageStore) -> None:
        """Pull the image as the ``pull`` option says (a reference by image id is never pulled)."""
        ref, policy = cast(str, self.config.image), self.config.pull
        parsed = reference.parse(ref, "image")
        if policy is not Pull.ALWAYS:
            try:
                store.get(ref)
                return
            except ImageNotFound:
                if policy is Pull.NEVER:
                    raise ImageNotFound(ref, "pull='never' (--pull never): it is not pulled") from None
                if parsed.name is None:
                    raise  # an image id or digest: no registry to ask
        registry.resolve(ref, "image")  # a reference that cannot be pulled names the option
        try:
            registry.pull(store, ref)
        except RegistryError as err:  # (the registry's own error is the cause)
            raise ImageNotFound(ref, f"not in the store, and not pulled: {err}") from err

    def _image_store(self) -> ImageStore:
        """The store of the container's image and volumes (a subclass gives one that can work on
        files of a rootless caller's sub-ids)."""
        return ImageStore(self.config.image_store)

    def _id_policy(self) -> IdPolicy:
        """Who owns the files of the container's image layers and volumes."""
        return imageroot.id_policy(self.config, self._maps)


def _volume_bind(store: ImageStore, mount: Mount, owner: tuple, idmapped: bool) -> Mount:
    """The bind of a named volume's directory (made on first use).  An idmapped one
    belongs to the host's root, whom the idmapped mount shows as the container's
    root; a plain one to the container root's host id.  A volume made plainly (by a
    library container, or by a root daemon before it idmapped volumes) holds the
    container's shifted ids, which an idmapped mount would show as nobody's (its
    root could not write there): asked idmapped, it is bound plainly, as it was made."""
    path = store.volume(cast(str, mount.source), (0, 0) if mount.idmap and idmapped else owner)  # (source: its name)
    idmap = mount.idmap and not (idmapped and os.stat(path).st_uid != 0)
    return Mount.bind(path, mount.target, read_only=mount.read_only, idmap=idmap)
