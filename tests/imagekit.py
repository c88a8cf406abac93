"""Test images made by the tests themselves: layer tars built in memory,
images written straight into a store."""

from __future__ import annotations

import io
import os
import tarfile
from typing import Dict, Optional, Sequence, Union

from sandboxlib.images import ImageStore, newimage

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


def add_image(store: ImageStore, layers: Sequence[bytes], names: Sequence[str] = (), config: Optional[dict] = None):
    """Write an image of plain layers into ``store``; returns the Image."""
    with store.writing():
        stored = [
            newimage.add_plain_layer(store, io.BytesIO(data)) + ("application/vnd.oci.image.layer.v1.tar",)
            for data in layers
        ]
        manifest = newimage.write_manifest(store, newimage.new_config([d for d, _, _ in stored], config), stored)
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


# -- a multi-layer busybox image, in skopeo's dir: format and what skopeo makes of it --
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
IMAGE_CONFIG = {
    "Cmd": ["sh", "-c", "cat /app/new.txt; echo $GREETING"],
    "Env": ["PATH=/bin", "GREETING=hi"],
    "WorkingDir": "/app",
}


def _dir_tar(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return buf.getvalue()


def busybox_layers(busybox_rootfs: str) -> list:
    """Three layers: busybox; files to delete later; whiteouts (a file, a
    directory, an opaque directory) and new files."""
    base = _dir_tar(busybox_rootfs)
    second = layer_tar(
        {
            "app/": "dir/",
            "app/old.txt": b"old\n",
            "app/sub/": "dir/",
            "app/sub/x": b"x\n",
            "etc/old": b"gone\n",
            "etc/motd": b"motd 2\n",
            "scratch/": "dir/",
            "scratch/f": b"f\n",
        }
    )
    third = layer_tar(
        {
            "app/": "dir/",
            "app/.wh..wh..opq": b"",
            "app/new.txt": b"new\n",
            "etc/.wh.old": b"",
            ".wh.scratch": b"",
            "etc/motd": b"motd 3\n",
        }
    )
    return [base, second, third]


def image_blobs(
    layers: Sequence[bytes],
    config: Optional[dict] = None,
    compress: bool = True,
    diff_ids: Optional[list] = None,
    architecture: Optional[str] = None,
):
    """(manifest bytes, {digest: bytes}) of an OCI image of ``layers`` (for the host's
    architecture, or ``architecture``)."""
    import gzip
    import hashlib
    import json

    blobs = {}

    def put(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    diff_ids = diff_ids or ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    stored = [put(gzip.compress(data, mtime=0) if compress else data) for data in layers]
    cfg = {
        "architecture": architecture or newimage.host_platform()[1],
        "os": "linux",
        "config": dict(config or IMAGE_CONFIG),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(cfg).encode())},
        "layers": [
            {"mediaType": LAYER_GZIP if compress else "application/vnd.oci.image.layer.v1.tar", **b} for b in stored
        ],
    }
    return json.dumps(manifest).encode(), blobs


def write_dir_image(path: str, layers: Sequence[bytes], config: Optional[dict] = None) -> str:
    """skopeo's ``dir:`` layout of an OCI image: manifest.json, version, blobs named by hex."""
    manifest, blobs = image_blobs(layers, config)
    os.makedirs(path, exist_ok=True)
    for digest, data in blobs.items():
        with open(os.path.join(path, digest[7:]), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "manifest.json"), "wb") as f:
        f.write(manifest)
    with open(os.path.join(path, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")
    return path


def write_oci_layout(path: str, blobs: dict, index: dict) -> str:
    """An OCI image layout directory of ``blobs`` with ``index`` as index.json."""
    import json

    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for digest, data in blobs.items():
        with open(os.path.join(path, "blobs", "sha256", digest[7:]), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    return path


def tar_directory(path: str, out: str) -> str:
    with tarfile.open(out, "w") as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return out


def skopeo(*args: str) -> None:
    import subprocess

    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", *args], check=True, capture_output=True)
