"""An image's file tree read from its layers' tar headers, without
unpacking anything: what a ``COPY`` needs to know of the image it writes
into (does the destination exist, is it a directory, where do its symlinks
lead, the attributes of parent directories, ``/etc/passwd`` for
``--chown``) and the files ``COPY --from`` takes from another stage."""

from __future__ import annotations

import posixpath
import tarfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import attrs

from ..images import ImageStore, Layer
from ..images.compression import decompressed, sniff

__all__ = ["Node", "ImageView", "layer_nodes"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@attrs.frozen(kw_only=True)
class Node:
    """One entry: its tar header and the layer (blob digest) it comes from."""

    info: tarfile.TarInfo
    layer: str

    @property
    def is_dir(self) -> bool:
        return self.info.isdir()


def _clean(name: str) -> str:
    """A tar name or an absolute path as the view's key: no leading ``/`` or ``./`` ('' is the root)."""
    path = posixpath.normpath("/" + name)
    return "" if path == "/" else path.lstrip("/")


def layer_nodes(store: ImageStore, layer: Layer) -> List[tarfile.TarInfo]:
    """The headers of a layer, in order (whiteouts included)."""
    path = store.blobs.path(layer.digest)
    with open(path, "rb") as f:
        kind = sniff(f.read(6))
        f.seek(0)
        if kind == "none":  # seekable: the data is skipped, not read
            with tarfile.open(fileobj=f, mode="r:") as tar:
                return tar.getmembers()
        with tarfile.open(fileobj=decompressed(f, kind), mode="r|") as tar:
            return list(tar)


class ImageView:
    """The merged tree of ``layers`` (bottom first), whiteouts applied."""

    def __init__(self, store: ImageStore, layers: Sequence[Layer], headers: Dict[str, List[tarfile.TarInfo]]) -> None:
        self.store = store
        self.nodes: Dict[str, Node] = {}
        for layer in layers:
            if layer.digest not in headers:
                headers[layer.digest] = layer_nodes(store, layer)
            self._apply(layer.digest, headers[layer.digest])

    def _apply(self, digest: str, members: List[tarfile.TarInfo]) -> None:
        below = dict(self.nodes)
        for info in members:
            name = _clean(info.name)
            parent, base = posixpath.split(name)
            if base == OPAQUE:
                for key in [k for k in below if k.startswith(parent + "/" if parent else "")]:
                    if key != parent and self.nodes.get(key) is below[key]:
                        del self.nodes[key]
            elif base.startswith(WHITEOUT):
                self._remove(posixpath.join(parent, base[len(WHITEOUT) :]), whiteout=True)
            elif name:
                if not info.isdir():
                    self._remove(name)
                self.nodes[name] = Node(info=info, layer=digest)

    def _remove(self, name: str, whiteout: bool = False) -> None:
        gone = self.nodes.pop(name, None)
        if not whiteout and (gone is None or not gone.is_dir):
            return  # a file replaced: nothing below it (a whiteout scans: a layer may omit parents)
        prefix = name + "/"
        for key in [k for k in self.nodes if k.startswith(prefix)]:
            del self.nodes[key]

    # -- lookups --------------------------------------------------------------------
    def resolve(self, path: str, follow_last: bool = True) -> str:
        """``path`` with the image's symlinks followed inside its root (as the
        kernel would in a container): the key of what it names, existing or not."""
        parts = [p for p in _clean(path).split("/") if p]
        done: List[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                done = done[:-1]
                continue
            node = self.nodes.get("/".join(done + [part]))
            if node is not None and node.info.issym() and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise OSError(40, "Too many levels of symbolic links", path)
                target = node.info.linkname
                parts = [p for p in target.split("/") if p and p != "."] + parts
                if target.startswith("/"):
                    done = []
                continue
            if part != ".":
                done.append(part)
        return "/".join(done)

    def get(self, path: str) -> Optional[Node]:
        return self.nodes.get(_clean(path))

    def is_dir(self, path: str) -> bool:
        node = self.nodes.get(self.resolve(path))
        return node is not None and node.is_dir or self.resolve(path) == ""

    def below(self, path: str) -> Iterator[Tuple[str, Node]]:
        """(path relative to ``path``, node) of every entry below the directory ``path``, parents first."""
        prefix = _clean(path)
        prefix = prefix + "/" if prefix else ""
        for key in sorted(self.nodes):
            if key.startswith(prefix):
                yield key[len(prefix) :], self.nodes[key]

    def read(self, node: Node) -> bytes:
        """A regular file's (or hard link's) bytes, from its layer."""
        info = node.info
        if info.islnk():
            target = self.nodes.get(_clean(info.linkname))
            if target is None:
                raise FileNotFoundError(2, "hard link target missing in the image", info.linkname)
            return self.read(target)
        path = self.store.blobs.path(node.layer)
        with open(path, "rb") as f:
            kind = sniff(f.read(6))
            f.seek(0)
            if kind == "none":
                f.seek(info.offset_data)
                return f.read(info.size)
            with tarfile.open(fileobj=decompressed(f, kind), mode="r|") as tar:
                for member in tar:
                    if member.name == info.name and member.offset == info.offset:
                        data = tar.extractfile(member)
                        return data.read() if data else b""
        raise FileNotFoundError(2, "not found in its layer", info.name)

    def read_path(self, path: str) -> Optional[bytes]:
        node = self.nodes.get(self.resolve(path))
        return self.read(node) if node is not None and (node.info.isreg() or node.info.islnk()) else None
