"""The image store: references, tags, removal, collection, crash safety and
several processes at once (root and rootless)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError, DigestMismatch, ImageFormatError, ImageNotFound
from sandboxlib.images import ImageStore, default_home
from sandboxlib.images.store import REF_ANNOTATION

from . import rootless
from .imagekit import add_image, layer_tar

BASE = layer_tar({"etc/": "dir/", "etc/base": b"base\n"})
APP = layer_tar({"app/": "dir/", "app/main": b"main\n"})


def _blob_count(store: ImageStore) -> int:
    return len(os.listdir(store.blobs.dir))


def check_references(path):
    store = ImageStore(path)
    img = add_image(store, [BASE, APP], ["app:1", "registry.local:5000/team/app"])
    found = {
        "tag": store.get("app:1").digest,
        "latest": store.get("registry.local:5000/team/app").digest,
        "explicit latest": store.get("registry.local:5000/team/app:latest").digest,
        "digest": store.get(img.digest).digest,
        "name@digest": store.get(f"app@{img.digest}").digest,
        "id": store.get(img.id).digest,
    }
    errors = {}
    for ref in ("app:2", "other@" + img.digest, "sha256:" + "0" * 64):
        try:
            store.get(ref)
        except ImageNotFound as err:
            errors[ref] = str(err)
    with open(os.path.join(path, "images", "index.json")) as f:
        index = json.load(f)
    names = sorted(e["annotations"][REF_ANNOTATION] for e in index["manifests"])
    return (
        img.digest,
        img.id,
        found,
        errors,
        names,
        [layer.diff_id for layer in img.layers],
        os.path.exists(os.path.join(path, "images", "oci-layout")),
    )


def test_references(runner, store_dir):
    digest, image_id, found, errors, names, diff_ids, has_layout = runner(check_references, store_dir)
    assert set(found.values()) == {digest}
    assert sorted(errors) == sorted(["app:2", "other@" + digest, "sha256:" + "0" * 64])
    assert "no image 'app:2' in the store" == errors["app:2"]
    assert names == ["app:1", "registry.local:5000/team/app:latest"]
    assert len(diff_ids) == 2 and image_id != digest and has_layout


def test_bad_references_name_the_field(tmp_path):
    store = ImageStore(str(tmp_path))
    for ref in ("UPPER:1", "a b", "", "x@sha256:123", "name:bad tag"):
        with pytest.raises(ConfigError) as err:
            store.get(ref)
        assert err.value.field == "reference"
    add_image(store, [BASE], ["a:1"])
    with pytest.raises(ConfigError) as err:
        store.tag("a:1", "b@sha256:" + "1" * 64)
    assert err.value.field == "target"


def check_tag_remove_collect(path):
    store = ImageStore(path)
    base = add_image(store, [BASE], ["base:1"])
    app = add_image(store, [BASE, APP], ["app:1"])
    steps = {"blobs": _blob_count(store)}  # 3 layers' worth: BASE shared, 2 configs, 2 manifests
    store.tag("app:1", "app:stable")
    store.tag("base:1", "app:stable")  # a tag moves to its new image
    steps["stable"] = store.get("app:stable").digest == base.digest
    steps["removed"] = store.remove("app:1")  # the last name of app: its blobs go
    steps["after app"] = _blob_count(store)
    steps["base layer kept"] = store.blobs.has(base.layers[0].digest)
    steps["app layer gone"] = not store.blobs.has(app.layers[1].digest)
    steps["refs"] = sorted(r for img in store.list() for r in img.references)
    steps["by id"] = store.remove(base.id)
    steps["empty"] = (store.list(), _blob_count(store))
    return steps


def test_tag_remove_and_reference_counted_collection(runner, store_dir):
    steps = runner(check_tag_remove_collect, store_dir)
    assert steps["blobs"] == 6
    assert steps["stable"] and steps["removed"] == ["app:1"]
    assert steps["after app"] == 3 and steps["base layer kept"] and steps["app layer gone"]
    assert steps["refs"] == ["app:stable", "base:1"]
    assert sorted(steps["by id"]) == ["app:stable", "base:1"]
    assert steps["empty"] == ([], 0)


def test_untagged_images_and_prune(tmp_path):
    store = ImageStore(str(tmp_path))
    kept = add_image(store, [BASE], ["kept:1"])
    loose = add_image(store, [APP])
    assert loose.references == () and {i.digest for i in store.list()} == {kept.digest, loose.digest}
    with open(os.path.join(store.tmp, "blob-debris"), "wb") as f:
        f.write(b"a crashed writer left this")
    with store.writing():
        store.blobs.put_bytes(b"orphan")
    report = store.prune()
    assert report.images == (loose.digest,) and report.blobs == 4 and report.bytes_freed > 0
    assert os.listdir(store.tmp) == [] and [i.digest for i in store.list()] == [kept.digest]
    assert store.prune().blobs == 0


def test_tagging_twice_is_tagging_once(tmp_path):
    store = ImageStore(str(tmp_path))
    image = add_image(store, [BASE], ["app:1"])
    store.tag("app:1", "app:stable")
    again = store.tag("app:1", "app:stable")
    store.tag("app:stable", "app:1")
    assert sorted(again.references) == ["app:1", "app:stable"]
    assert [sorted(i.references) for i in store.list()] == [["app:1", "app:stable"]]
    assert len(store._read_index()) == 2
    assert repr(again) == f"<sandboxlib.Image {image.id[7:19]} {list(again.references)} 1 layer, {image.size} bytes>"
    assert store.remove("app:stable") == ["app:stable"]
    assert [i.references for i in store.list()] == [("app:1",)] and store.get("app:1").digest == image.digest


def test_digest_mismatch_keeps_nothing(tmp_path):
    store = ImageStore(str(tmp_path))
    with store.writing(), pytest.raises(DigestMismatch) as err:
        store.blobs.put_bytes(b"data", "sha256:" + "1" * 64, source="layer x")
    assert err.value.expected == "sha256:" + "1" * 64 and "layer x" in str(err.value)
    assert _blob_count(store) == 0 and os.listdir(store.tmp) == []


def test_corrupt_or_missing_blob_is_reported(tmp_path):
    store = ImageStore(str(tmp_path))
    img = add_image(store, [BASE], ["a:1"])
    with open(store.blobs.path(img.id), "ab") as f:
        f.write(b" ")
    with pytest.raises(DigestMismatch):
        store.get("a:1")
    os.unlink(store.blobs.path(img.id))
    with pytest.raises(ImageFormatError, match="missing"):
        store.get("a:1")


def test_default_home(monkeypatch, runner, tmp_path):
    monkeypatch.setenv("SANDBOXLIB_HOME", str(tmp_path))
    assert default_home() == str(tmp_path)
    monkeypatch.delenv("SANDBOXLIB_HOME")
    home = runner(default_home)
    if runner.rootless:
        assert home == os.path.join(runner.worker.user.pw_dir, ".local", "share", "sandboxlib")
    else:
        assert home == "/var/lib/sandboxlib"


def test_exported_names():
    # sandboxlib's store is the images package's plus the sandbox that handles files of sub-ids
    assert issubclass(sb.ImageStore, ImageStore) and issubclass(sb.ImageNotFound, LookupError)
    assert issubclass(DigestMismatch, ImageFormatError) and issubclass(ImageFormatError, ValueError)


# -- several processes, crashes ------------------------------------------------------
WRITER = """
import sys
sys.path.insert(0, {repo!r})
from sandboxlib.images import ImageStore
from tests.imagekit import add_image, layer_tar
store = ImageStore({path!r})
i = 0
while {forever} or i < {count}:
    data = layer_tar({{"f": ("%s-%d" % ({name!r}, i)).encode()}})
    add_image(store, [data], ["%s:%d" % ({name!r}, i)])
    if i % 3 == 2:
        store.remove("%s:%d" % ({name!r}, i - 1))
    i += 1
"""


def _writer(path, name, count=0):
    repo = rootless.import_path()
    code = WRITER.format(repo=repo, path=path, name=name, count=count, forever=not count)
    return subprocess.Popen([sys.executable, "-c", code])


def _consistent(store: ImageStore) -> None:
    for img in store.list():  # every manifest, config and layer present and intact
        for layer in img.layers:
            assert store.blobs.has(layer.digest)


def test_several_processes_at_once(tmp_path):
    store = ImageStore(str(tmp_path))
    writers = [_writer(str(tmp_path), name, count=12) for name in ("a", "b", "c")]
    for _ in range(5):
        store.prune()
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    refs = sorted(r for img in store.list() for r in img.references)
    expected = sorted(f"{n}:{i}" for n in "abc" for i in range(12) if not (i % 3 == 1 and i < 11))
    assert refs == expected
    _consistent(store)


def test_a_crash_at_any_point_leaves_the_store_consistent(tmp_path):
    store = ImageStore(str(tmp_path))
    for round_ in range(4):
        writer = _writer(str(tmp_path), f"w{round_}")
        time.sleep(0.4 + 0.13 * round_)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        _consistent(store)
    store.prune()
    live = (
        {img.digest for img in store.list()}
        | {img.id for img in store.list()}
        | {layer.digest for img in store.list() for layer in img.layers}
    )
    assert set(store.blobs.digests()) == live and os.listdir(store.tmp) == []
