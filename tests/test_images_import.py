"""Importing images: what the real skopeo writes (docker-archive, oci-archive,
OCI layouts, zstd), Docker >= 25 archives, multi-platform indexes, root file
system tarballs and directories; and every kind of broken input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys

import pytest
import zstandard

from sandboxlib.errors import DigestMismatch, ImageFormatError, UnsupportedError
from sandboxlib.images import ImageStore

from .imagekit import (
    IMAGE_CONFIG,
    busybox_layers,
    image_blobs,
    layer_tar,
    skopeo,
    tar_directory,
    write_dir_image,
    write_oci_layout,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="session")
def archives(shared_dir, busybox_root):
    """The three-layer busybox image in every format, written by skopeo where it can."""
    top = shared_dir / "archives"
    top.mkdir()
    layers = busybox_layers(busybox_root)
    src = write_dir_image(str(top / "dir"), layers)
    found = {"layers": layers}
    for kind, dest in {
        "docker-archive": f"docker-archive:{top}/docker.tar:busybox:test",
        "oci-archive": f"oci-archive:{top}/oci.tar:busybox:test",
        "oci-dir": f"oci:{top}/oci:busybox:test",
    }.items():
        skopeo(f"dir:{src}", dest)
        found[kind] = dest.split(":")[1]
    skopeo("--dest-compress-format", "zstd", f"dir:{src}", f"oci:{top}/zstd:busybox:zstd")
    found["oci-zstd"] = f"{top}/zstd"
    found["docker25"] = _docker25(f"{top}/oci", str(top / "docker25"))
    for path in top.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return found


def _docker25(oci_dir: str, out_dir: str) -> str:
    """Docker >= 25's docker save: an OCI layout plus manifest.json, in a tar."""
    shutil.copytree(oci_dir, out_dir)
    with open(os.path.join(out_dir, "index.json")) as f:
        index = json.load(f)
    desc = index["manifests"][0]
    desc["annotations"] = {
        "io.containerd.image.name": "docker.io/library/busybox:25",
        "org.opencontainers.image.ref.name": "25",
    }
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out_dir, "blobs", "sha256", desc["digest"][7:])) as f:
        manifest = json.load(f)
    legacy = [
        {
            "Config": "blobs/sha256/" + manifest["config"]["digest"][7:],
            "RepoTags": ["busybox:25", "bb:25"],
            "Layers": ["blobs/sha256/" + layer["digest"][7:] for layer in manifest["layers"]],
        }
    ]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(legacy, f)
    return tar_directory(out_dir, out_dir + ".tar")


def _blob_state(store):
    return sorted(os.listdir(store.blobs.dir)), os.listdir(store.tmp)


def check_load_every_format(path, archives):
    store = ImageStore(path)
    found = {}
    for kind in ("docker-archive", "oci-archive", "oci-dir", "oci-zstd", "docker25"):
        (img,) = store.load(archives[kind])
        found[kind] = (
            img.id,
            img.references,
            [layer.media_type.rsplit(".", 1)[1] for layer in img.layers],
            [layer.diff_id for layer in img.layers],
            img.config,
        )
    return found


def test_load_every_format(runner, store_dir, archives):
    found = runner(check_load_every_format, store_dir, archives)
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in archives["layers"]]
    for kind, (_image_id, _, _, ids, config) in found.items():
        assert ids == diff_ids and config == IMAGE_CONFIG, kind
    assert len({image_id for image_id, *_ in found.values()}) == 1  # one config, byte for byte
    assert found["docker-archive"][1] == ("busybox:test",)
    assert found["oci-archive"][1] == found["oci-dir"][1] == ("busybox:test",)
    assert found["oci-zstd"][1] == ("busybox:zstd",) and found["oci-zstd"][2] == ["tar+zstd"] * 3
    assert found["oci-dir"][2] == ["tar+gzip"] * 3 and found["docker-archive"][2] == ["tar"] * 3
    # the same manifest as oci-dir's: its names add to that image's
    assert found["docker25"][1] == ("busybox:test", "busybox:25", "bb:25")


def test_multi_platform_index_picks_the_host(tmp_path, archives):
    manifest, blobs = image_blobs([layer_tar({"host": b"yes\n"})])
    decoy_manifest = "sha256:" + "d" * 64  # never read: not this platform
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    from sandboxlib.images.newimage import host_platform

    inner = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": decoy_manifest,
                "size": 10,
                "platform": {"os": "linux", "architecture": "s390x"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": host_platform()[1]},
            },
        ],
    }
    inner_data = json.dumps(inner).encode()
    blobs.update({manifest_digest: manifest, "sha256:" + hashlib.sha256(inner_data).hexdigest(): inner_data})
    layout = write_oci_layout(
        str(tmp_path / "multi"),
        blobs,
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_INDEX,
                    "digest": "sha256:" + hashlib.sha256(inner_data).hexdigest(),
                    "size": len(inner_data),
                    "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
                }
            ],
        },
    )
    store = ImageStore(str(tmp_path / "store"))
    (img,) = store.load(layout)
    assert img.digest == manifest_digest and img.references == ("multi:1",)
    inner["manifests"].pop()
    inner_data = json.dumps(inner).encode()
    layout = write_oci_layout(
        str(tmp_path / "other"),
        {"sha256:" + hashlib.sha256(inner_data).hexdigest(): inner_data},
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_INDEX,
                    "size": len(inner_data),
                    "digest": "sha256:" + hashlib.sha256(inner_data).hexdigest(),
                }
            ],
        },
    )
    with pytest.raises(ImageFormatError, match="no manifest for linux/"):
        store.load(layout)


def check_import_rootfs(path, tar_dir):
    store = ImageStore(path)
    found = {}
    for name in ("plain.tar", "gz.tar.gz", "zst.tar.zst"):
        img = store.import_rootfs(os.path.join(tar_dir, name), f"imp:{name.split('.')[0]}", config={"Cmd": ["/bin/sh"]})
        found[name] = (img.layers[0].diff_id, img.layers[0].media_type, img.config, img.references)
    img = store.from_directory(os.path.join(tar_dir, "tree"), "fromdir:1")
    found["tree"] = img.layers[0].diff_id != found["plain.tar"][0] and len(img.layers) == 1
    return found


def test_import_rootfs_and_from_directory(runner, store_dir, shared_dir):
    tar_dir = shared_dir / f"rootfs-{runner.mode}"
    tar_dir.mkdir()
    plain = layer_tar({"bin/": "dir/", "bin/x": b"x"})
    (tar_dir / "plain.tar").write_bytes(plain)
    (tar_dir / "gz.tar.gz").write_bytes(gzip.compress(plain))
    (tar_dir / "zst.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    (tar_dir / "tree" / "etc").mkdir(parents=True)
    (tar_dir / "tree" / "etc" / "hostname").write_text("box\n")
    try:
        found = runner(check_import_rootfs, store_dir, str(tar_dir))
    finally:
        shutil.rmtree(tar_dir)
    diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
    assert {v[0] for k, v in found.items() if k != "tree"} == {diff_id}
    assert [found[k][1].rsplit(".", 1)[1] for k in ("plain.tar", "gz.tar.gz", "zst.tar.zst")] == [
        "tar",
        "tar+gzip",
        "tar+zstd",
    ]
    assert found["gz.tar.gz"][2] == {"Cmd": ["/bin/sh"]} and found["gz.tar.gz"][3] == ("imp:gz",)
    assert found["tree"] is True


def check_zstd_layer_without_zstandard(path, tar_file):
    store = ImageStore(path)
    saved = sys.modules.pop("zstandard", None)
    sys.modules["zstandard"] = None  # what an install without the [zstd] extra finds: import fails
    try:
        with pytest.raises(UnsupportedError, match=r"zstd-compressed image layers.*sandboxlib\[zstd\]"):
            store.import_rootfs(tar_file, "imp:zst")
    finally:
        del sys.modules["zstandard"]
        if saved is not None:
            sys.modules["zstandard"] = saved
    return _blob_state(store), store.list()


def test_zstd_layer_without_the_zstd_extra(runner, store_dir, shared_dir):
    """zstandard is an optional dependency: without it, a zstd layer is refused
    naming the extra to install, and nothing is left in the store."""
    tar_file = shared_dir / f"zst-{runner.mode}.tar.zst"
    tar_file.write_bytes(zstandard.ZstdCompressor().compress(layer_tar({"x": b"x"})))
    try:
        (blobs, tmp), images = runner(check_zstd_layer_without_zstandard, store_dir, str(tar_file))
    finally:
        tar_file.unlink()
    assert tmp == [] and images == []


# -- broken input ------------------------------------------------------------------------
def _fails(store, path, error, match):
    before = _blob_state(store)
    with pytest.raises(error, match=match):
        store.load(path)
    assert _blob_state(store) == before, "a failed import left blobs or temporary files"


def test_truncated_and_garbage_archives(tmp_path, archives):
    store = ImageStore(str(tmp_path / "store"))
    store.load(archives["oci-dir"])
    data = open(archives["docker-archive"], "rb").read()
    for cut in (len(data) // 2, len(data) - 3000, 700):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        _fails(store, str(tmp_path / "cut.tar"), ImageFormatError, "cut.tar")
    (tmp_path / "garbage.tar").write_bytes(b"not a tar at all" * 100)
    _fails(store, str(tmp_path / "garbage.tar"), ImageFormatError, "not a readable tar")
    (tmp_path / "empty.tar").write_bytes(layer_tar({"hello": b"x"}))
    _fails(store, str(tmp_path / "empty.tar"), ImageFormatError, "neither a docker save archive")


def test_wrong_digests_and_missing_blobs(tmp_path, archives):
    store = ImageStore(str(tmp_path / "store"))
    layers = [layer_tar({"a": b"a"}), layer_tar({"b": b"b"})]
    manifest, blobs = image_blobs(layers)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}]}
    layer_digest = json.loads(manifest)["layers"][1]["digest"]
    tampered = dict(blobs, **{digest: manifest, layer_digest: gzip.compress(b"other bytes")})
    _fails(store, write_oci_layout(str(tmp_path / "tampered"), tampered, index), DigestMismatch, layer_digest)
    missing = {d: b for d, b in blobs.items() if d != layer_digest}
    missing[digest] = manifest
    _fails(store, write_oci_layout(str(tmp_path / "missing"), missing, index), ImageFormatError, "missing")
    # the config's diff_ids lie: caught on the uncompressed content
    manifest, blobs = image_blobs(layers, diff_ids=["sha256:" + "1" * 64, "sha256:" + "2" * 64])
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs[digest] = manifest
    index["manifests"][0].update(digest=digest, size=len(manifest))
    _fails(store, write_oci_layout(str(tmp_path / "diffid"), blobs, index), DigestMismatch, "diff_id")
    assert store.list() == []


def test_a_full_disk_leaves_no_half_written_state(tmp_path, archives):
    """Root only: the store on a 1 MB tmpfs (made and removed here)."""
    import errno
    import subprocess

    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "sbx-test-small", str(home)], check=True)
    try:
        store = ImageStore(str(home))
        store.import_rootfs(_small_tar(tmp_path), "small:1")
        before = _blob_state(store), store.list()[0].digest
        with pytest.raises(OSError) as err:
            store.load(archives["docker-archive"])
        assert err.value.errno == errno.ENOSPC and "image store" in str(err.value)
        assert (_blob_state(store), store.list()[0].digest) == before
        assert [i.references for i in store.list()] == [("small:1",)]
    finally:
        subprocess.run(["umount", str(home)], check=True)


def _small_tar(tmp_path) -> str:
    path = tmp_path / "small.tar"
    path.write_bytes(layer_tar({"etc/": "dir/", "etc/hostname": b"small\n"}))
    return str(path)


@pytest.mark.parametrize("isal", ["isal", "no isal"])
def test_corrupt_compressed_rootfs(tmp_path, monkeypatch, isal):
    """The same refusals with ISA-L's gzip reader (the [fast] extra) and without it."""
    if isal == "no isal":
        monkeypatch.setitem(sys.modules, "isal", None)  # its import fails: the gzip module reads
    store = ImageStore(str(tmp_path / "store"))
    good = gzip.compress(layer_tar({"f": b"x" * 5000}))
    for name, data in {
        "bad.tar.gz": b"\x1f\x8b\x08\x00" + b"garbage" * 50,
        "cut.tar.gz": good[: len(good) // 2],
        "bad.tar.zst": b"\x28\xb5\x2f\xfd" + b"garbage" * 50,
        "notatar": b"plain text\n" * 100,
    }.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageFormatError, match="truncated or corrupt"):
            store.import_rootfs(str(tmp_path / name), "x:1")
    assert store.list() == [] and _blob_state(store) == ([], [])
    (tmp_path / "good.tar.gz").write_bytes(good)
    assert store.import_rootfs(str(tmp_path / "good.tar.gz"), "x:1").layers[0].diff_id == _sha(
        layer_tar({"f": b"x" * 5000})
    )


# -- ambiguous and tampered documents ---------------------------------------------------
def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layout_of(tmp_path, name, blobs, documents, top):
    """An OCI layout of ``blobs`` plus the JSON ``documents`` (stored as blobs), whose index.json names
    ``top`` = (media type, document)."""
    blobs = dict(blobs)
    for doc in documents:
        blobs[_sha(doc)] = doc
    media_type, doc = top
    return write_oci_layout(
        str(tmp_path / name),
        blobs,
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": media_type,
                    "digest": _sha(doc),
                    "size": len(doc),
                    "annotations": {"org.opencontainers.image.ref.name": name + ":1"},
                }
            ],
        },
    )


def test_ambiguous_documents_are_refused(tmp_path):
    """CVE-2021-41190: a document two clients could read as different things (an index with layers,
    a manifest with manifests, a mediaType that is not its descriptor's) is refused."""
    manifest, blobs = image_blobs([layer_tar({"f": b"x"})])
    entry = {"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest)}
    index_with_layers = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry], "layers": json.loads(manifest)["layers"]}
    ).encode()
    manifest_with_manifests = json.dumps(dict(json.loads(manifest), manifests=[entry])).encode()
    docker_typed = json.dumps(dict(json.loads(manifest), mediaType=DOCKER_MANIFEST)).encode()
    store = ImageStore(str(tmp_path / "store"))
    cases = {
        "indexlayers": ([manifest, index_with_layers], (OCI_INDEX, index_with_layers), "carries 'layers'"),
        "manifestmanifests": (
            [manifest_with_manifests],
            (OCI_MANIFEST, manifest_with_manifests),
            "carries 'manifests'",
        ),
        "mediatype": ([docker_typed], (OCI_MANIFEST, docker_typed), "not its descriptor's"),
    }
    for name, (documents, top, match) in cases.items():
        _fails(store, _layout_of(tmp_path, name, blobs, documents, top), ImageFormatError, match)
    top_with_layers = _layout_of(tmp_path, "top", blobs, [manifest], (OCI_MANIFEST, manifest))
    with open(os.path.join(top_with_layers, "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(top_with_layers, "index.json"), "w") as f:
        json.dump(dict(index, layers=json.loads(manifest)["layers"]), f)
    _fails(store, top_with_layers, ImageFormatError, "index.json.*carries 'layers'")
    assert store.list() == []
    (img,) = store.load(_layout_of(tmp_path, "fine", blobs, [manifest], (OCI_MANIFEST, manifest)))
    assert img.references == ("fine:1",)


def test_a_tampered_nested_index_is_a_digest_mismatch(tmp_path):
    """index.json -> an index -> an index -> the manifest; the inner index edited under its own name."""
    manifest, blobs = image_blobs([layer_tar({"f": b"x"})])
    inner = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest)}],
        }
    ).encode()
    outer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "digest": _sha(inner), "size": len(inner)}],
        }
    ).encode()
    layout = _layout_of(tmp_path, "nested", blobs, [manifest, inner, outer], (OCI_INDEX, outer))
    store = ImageStore(str(tmp_path / "store"))
    (img,) = store.load(layout)
    assert img.digest == _sha(manifest)
    store.remove(img.digest)
    decoy_manifest, decoy_blobs = image_blobs([layer_tar({"decoy": b"y"})])
    write_oci_layout(
        layout,
        dict(decoy_blobs, **{_sha(decoy_manifest): decoy_manifest}),
        json.load(open(os.path.join(layout, "index.json"))),
    )
    tampered = json.loads(inner)
    tampered["manifests"][0].update(digest=_sha(decoy_manifest), size=len(decoy_manifest))
    with open(os.path.join(layout, "blobs", "sha256", _sha(inner)[7:]), "wb") as f:
        f.write(json.dumps(tampered).encode())
    _fails(store, layout, DigestMismatch, _sha(inner))
    assert store.list() == []


def test_a_tampered_docker_save_config_is_a_digest_mismatch(tmp_path, archives):
    """A legacy ``docker save`` archive names its config by the config's digest: an edited Cmd under
    the same file name is refused."""
    import tarfile

    with tarfile.open(archives["docker-archive"]) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    (entry,) = json.loads(next(data for m, data in members if m.name == "manifest.json"))
    out = str(tmp_path / "tampered.tar")
    with tarfile.open(out, "w") as tar:
        for member, data in members:
            if member.name == entry["Config"]:
                config = json.loads(data)
                config["config"]["Cmd"] = ["sh", "-c", "echo tampered"]
                data = json.dumps(config).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    store = ImageStore(str(tmp_path / "store"))
    _fails(store, out, DigestMismatch, "Config")
    assert store.list() == []
    (img,) = store.load(archives["docker-archive"])
    assert img.config["Cmd"] == IMAGE_CONFIG["Cmd"]
