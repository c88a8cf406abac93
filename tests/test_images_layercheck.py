"""The check of a layer when it enters the store (root and rootless): a
layer the unpacker would refuse is refused at load, with the unpacker's own
message, and leaves nothing behind; the store's layer limits refuse a
decompression bomb from its headers."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import tarfile
import tempfile

import pytest

from sandboxlib.errors import ConfigError, ImageFormatError
from sandboxlib.images import ImageStore, LayerLimits
from sandboxlib.images.unpack import IdPolicy, unpack

from .imagekit import image_blobs, write_oci_layout
from .test_images_unpack import SHIFT, _e, _tar, hostile_cases, sandbox_dirs  # noqa: F401 (a fixture)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def more_cases():
    """Layers the unpacker refuses (or, rootless, may refuse) beyond the escapes."""
    lnk, chr_, d = tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE
    return {
        "empty whiteout name": [_e(".wh.")],
        "whiteout name dot": [_e("a", d), _e("a/.wh..")],
        "entry under a file": [_e("f"), _e("f/g")],
        "entry under a whiteout": [_e(".wh.w"), _e("w/g")],
        "hard link to a directory": [_e("d", d), _e("h", lnk, "d")],
        "hard link to nothing": [_e("h", lnk, "missing")],
        "hard link to the root": [_e("h", lnk, "./")],
        "hard link to itself": [_e("h"), _e("h", lnk, "h")],
        "hard link to a replaced dir's file": [_e("d", d), _e("d/f"), _e("d"), _e("h", lnk, "d/f")],
        "hard link to a device": [_e("dev", chr_, dev=(1, 3)), _e("h", lnk, "dev")],  # rootless: none made
        "unsupported type": [_e("v", b"V")],
        "long name": [_e("x" * 256)],
        "long symlink target": [_e("s", tarfile.SYMTYPE, "x" * 4096)],
        # unpacked fine: a check that refuses them is wrong
        "fine: whiteout of a dir, as a dir": [_e("d", d), _e("d/f"), _e(".wh.d", d)],
        "fine: hard link to a whiteout": [_e("a"), _e(".wh.a"), _e("h", lnk, "a")],
        "fine: dir over a file, then below it": [_e("f"), _e("f", d), _e("f/g"), _e("h", lnk, "f/g")],
        "fine: opaque root and dirs": [_e(".wh..wh..opq"), _e("d/.wh..wh..opq"), _e("d/x")],
        "fine: dir made by a file below it": [_e("a/b/c"), _e("h", lnk, "/a/b/c"), _e("a", d)],
    }


def _outcome(call):
    try:
        call()
        return "ok"
    except ImageFormatError as err:
        return err.detail


def check_load_matches_unpack(path, parent, outside):
    """For every case: (what import_rootfs says, what unpack says); the store's state after all."""
    store = ImageStore(path)
    found = {}
    for case, entries in {**hostile_cases(outside), **more_cases()}.items():
        layer = os.path.join(parent, "layer.tar")
        with open(layer, "wb") as f:
            f.write(_tar(*entries))
        on_load = _outcome(functools.partial(store.import_rootfs, layer, "case:1"))
        dest = tempfile.mkdtemp(dir=parent)
        on_unpack = _outcome(
            functools.partial(unpack, io.BytesIO(_tar(*entries)), dest, IdPolicy.for_caller(SHIFT), "l")
        )
        found[case] = on_load, on_unpack
        store.remove("case:1") if on_load == "ok" else None
    return found, store.list(), os.listdir(store.blobs.dir), os.listdir(store.tmp)


def test_import_refuses_what_unpacking_refuses(runner, store_dir, sandbox_dirs):
    found, images, blobs, tmp = runner(check_load_matches_unpack, store_dir, *sandbox_dirs)
    for case, (on_load, on_unpack) in found.items():
        assert on_load == on_unpack, case
        assert (on_load == "ok") == (
            case.startswith("fine:") or (case == "hard link to a device" and not runner.rootless)
        ), case
    assert found["empty whiteout name"][0] == "entry '.wh.' has an invalid whiteout name"
    assert (images, blobs, tmp) == ([], [], [])


def check_load_names_layer_and_entry(path, parent):
    layer = _tar(_e("target", size=3), _e("h", tarfile.LNKTYPE, "/../etc/passwd"))
    manifest, blobs = image_blobs([layer])
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    layout = write_oci_layout(
        os.path.join(parent, "layout"),
        dict(blobs, **{digest: manifest}),
        {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}]},
    )
    store = ImageStore(path)
    try:
        store.load(layout)
    except ImageFormatError as err:
        return str(err), err.source, [i.digest for i in store.list()], os.listdir(store.blobs.dir), manifest
    return None


def test_load_refuses_a_hostile_layer_naming_it(runner, store_dir, sandbox_dirs):
    """load(), not the first run, refuses the image, naming the layer's digest and the entry."""
    import json

    text, source, images, blobs, manifest = runner(check_load_names_layer_and_entry, store_dir, sandbox_dirs[0])
    layer_digest = json.loads(manifest)["layers"][0]["digest"]
    assert (
        source.endswith(f"layer {layer_digest}")
        and "hard link 'h': target '/../etc/passwd' has a '..' component" in text
    )
    assert (images, blobs) == ([], [])


# -- limits -------------------------------------------------------------------------
def _bomb(path, size: int) -> int:
    """A gzip layer of one file of ``size`` zero bytes, written in pieces; returns its bytes on disk."""
    info = _e("zeros", size=size)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
        out.write(info.tobuf(tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
        out.write(bytes(1024))
    return os.path.getsize(path)


def check_limits(path, parent):
    store = ImageStore(path, layer_limits=LayerLimits(max_bytes=1 << 20, max_entries=1000))
    found = {}
    bomb = os.path.join(parent, "bomb.tar.gz")
    found["bomb size"] = _bomb(bomb, 256 << 20)
    for name, layer in {"bytes": bomb, "entries": os.path.join(parent, "many.tar")}.items():
        if name == "entries":
            with open(layer, "wb") as f:
                f.write(_tar(*[_e(f"f{i}") for i in range(1001)]))
        try:
            store.import_rootfs(layer, "big:1")
            found[name] = None
        except ImageFormatError as err:
            found[name] = str(err)
    found["state"] = (
        store.list(),
        os.listdir(store.blobs.dir),
        os.listdir(store.tmp),
        os.listdir(os.path.join(store.path, "layers")),
    )
    with open(os.path.join(parent, "fits.tar"), "wb") as f:
        f.write(_tar(*[_e(f"f{i}", size=1000) for i in range(1000)]))  # at the limits, not over
    found["fits"] = store.import_rootfs(os.path.join(parent, "fits.tar"), "fits:1").references
    return found


def test_layer_limits_refuse_a_decompression_bomb(runner, store_dir, sandbox_dirs):
    found = runner(check_limits, store_dir, sandbox_dirs[0])
    assert found["bomb size"] < 300_000  # 256 MiB of zeros, small on disk
    assert "bomb.tar.gz: more than 1,048,576 bytes of files (at entry 'zeros')" in found["bytes"]
    assert "many.tar: more than 1,000 entries (at entry 'f1000')" in found["entries"]
    for text in found["bytes"], found["entries"]:
        assert "raise it with ImageStore(path, layer_limits=sandboxlib.images.LayerLimits(max_" in text
    assert found["state"] == ([], [], [], [])
    assert found["fits"] == ("fits:1",)


def test_layer_limits_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="layer_limits.max_bytes: expected a positive integer, got 0"):
        LayerLimits(max_bytes=0)
    with pytest.raises(ConfigError, match="layer_limits.max_entries: expected a positive integer, got True"):
        LayerLimits(max_entries=True)
    with pytest.raises(ConfigError, match="layer_limits: expected a LayerLimits, got dict"):
        ImageStore(str(tmp_path), layer_limits={"max_bytes": 1})
    assert LayerLimits() == LayerLimits(max_bytes=64 << 30, max_entries=2_000_000)
