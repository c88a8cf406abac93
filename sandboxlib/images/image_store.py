"""The image store with its importers and exporters: ``load``, ``save``,
``import_rootfs``, ``from_directory`` and unpacked layers, on top of the
content-addressed :class:`~sandboxlib.images.store.Store`."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from . import exporter, importer, layers
from .model import Image
from .store import Store

__all__ = ["ImageStore"]


class ImageStore(Store):
    """A content-addressed image store, safe for concurrent use by several processes.

    Args:
        path: the store's home directory (see :func:`default_home`).
    """

    def load(self, path: str) -> List[Image]:
        """Import every image of a ``docker save`` archive (legacy or Docker >= 25)
        or an OCI image layout (directory or tar), with the names it carries.

        Raises:
            ImageFormatError: the archive is truncated, corrupt or of an unknown kind.
            DigestMismatch: a blob or a layer's content is not what its digest says.
        """
        return importer.load(self, path)

    def load_carried(self, path: str) -> List[Tuple[Image, Tuple[str, ...]]]:
        """As :meth:`load`, each Image with the names the archive carried for it
        (an Image's ``references`` are all its names in the store; ``docker
        load`` reports only the archive's)."""
        return importer.load_carried(self, path)

    def import_rootfs(
        self,
        tar: str,
        ref: Optional[str] = None,
        *,
        config: Optional[dict] = None,
        changes: Optional[Sequence[str]] = None,
    ) -> Image:
        """An image of one layer from a root file system tarball (plain, gzip or
        zstd), like ``docker import``; ``config`` is its container config
        (``{"Cmd": [...], "Env": [...], ...}``: Docker's keys, or their
        lowercase forms; checked now, see images/imageconfig.py), and
        ``changes`` Dockerfile instructions applied after it, as ``docker
        import --change`` takes them (``['CMD ["python3"]', "ENV A=1",
        "WORKDIR /app"]``: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME,
        WORKDIR; see images/changes.py)."""
        return importer.import_rootfs(self, tar, ref, config, changes)

    def from_directory(self, path: str, ref: Optional[str] = None, *, config: Optional[dict] = None) -> Image:
        """An image of one layer from the tree under ``path``; ``config`` as
        for :meth:`import_rootfs`."""
        return importer.from_directory(self, path, ref, config)

    def unpacked(self, ref: str) -> List[str]:
        """The unpacked layer directories of an image, bottom first, owned
        as the caller's containers need them (unpacked on first use, unless a
        pull unpacked them)."""
        return layers.unpacked_layers(self, self.get(ref), self.caller_policy())

    def save(self, refs: Union[str, Sequence[str]], path: str) -> None:
        """Write the images to a tar that ``docker load`` and skopeo (as
        ``docker-archive:`` and ``oci-archive:``) read: a ``docker save``
        archive of Docker >= 25's kind (an OCI layout plus ``manifest.json``),
        layers uncompressed.  Names given as ``name:tag`` are kept; an image
        given by id or digest goes without names (as ``docker save ID``)."""
        exporter.save(self, [refs] if isinstance(refs, str) else list(refs), path)
