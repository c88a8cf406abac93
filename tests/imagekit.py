"""Test images made by the tests themselves: layer tars built in memory,
images written straight into a store."""
from __future__ import annotations

import io
import os
import tarfile
from typing import Dict, Optional, Sequence, Union

from sandboxlib.images import ImageStore
from sandboxlib.images import build

Entry = Union[bytes, str, tarfile.TarInfo]


def layer_tar(entries: Dict[str, Entry]) -> bytes:
    """A tar: name -> file bytes, 'dir/' (a directory), '->target' (a symlink) or a TarInfo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in entries.items():
            if isinstance(value, tarfile.TarInfo):
                tar.addfile(value, io.BytesIO(b"\0" * value.size) if value.isreg() else None)
            elif isinstance(value, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(value), 0o755
                tar.addfile(info, io.BytesIO(value))
            elif value == "dir/":
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, value[2:]
                tar.addfile(info)
    return buf.getvalue()


def add_image(store: ImageStore, layers: Sequence[bytes], names: Sequence[str] = (),
              config: Optional[dict] = None):
    """Write an image of plain layers into ``store``; returns the Image."""
    with store.writing():
        stored = [build.add_plain_layer(store, io.BytesIO(data)) + ("application/vnd.oci.image.layer.v1.tar",)
                  for data in layers]
        manifest = build.write_manifest(store, build.new_config([d for d, _, _ in stored], config), stored)
        return store.add(manifest, tuple(names))


def tree(path: str) -> Dict[str, str]:
    """relative path -> 'dir', 'link:TARGET' or the file's text, for comparing roots."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                found[rel] = "link:" + os.readlink(full)
            elif os.path.isdir(full):
                found[rel] = "dir"
            else:
                with open(full, "rb") as f:
                    found[rel] = f.read().decode(errors="replace")
    return found
