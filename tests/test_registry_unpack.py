"""A pull unpacks each layer while it streams in (issue 11): right after
``pull()`` the layers are in ``layers/KEY`` for the id policy of the caller's
default containers (root: the default shift; rootless: its sub-id policy,
owners applied), exactly as a lazy unpack at the first start makes them, and
the first start uses them as they are; a hostile layer is refused with
nothing published."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile

import pytest

import sandboxlib as sb
from sandboxlib.errors import ImageFormatError

from .imagekit import add_image, busybox_layers, layer_tar
from .test_registry import CONFIG, EXPECTED, registry  # noqa: F401 (fixture)


def _owned_layer() -> bytes:
    """Files of other owners than root (rootless: they land in the sub-id range) and a setgid dir."""
    entries = {}
    for name, uid, mode, kind in (
        ("home/", 1000, 0o2775, tarfile.DIRTYPE),
        ("home/user.txt", 1000, 0o640, tarfile.REGTYPE),
        ("home/daemon.txt", 2, 0o600, tarfile.REGTYPE),
    ):
        info = tarfile.TarInfo(name.rstrip("/"))
        info.type, info.uid, info.gid, info.mode, info.mtime = kind, uid, uid, mode, 1_600_000_000
        info.size = 5 if kind == tarfile.REGTYPE else 0
        entries[name] = info
    return layer_tar(entries)


@pytest.fixture(scope="module")
def owned_image(registry, shared_dir, busybox_root):
    """Busybox's three layers and one of owned files, pushed as HOST/unpack/app:1."""
    path = shared_dir / "registry-unpack-src"
    store = sb.ImageStore(str(path))
    add_image(store, busybox_layers(busybox_root) + [_owned_layer()], ["app:1"], config=CONFIG)
    ref = f"{registry.host}/unpack/app:1"
    store.push("app:1", ref)
    yield ref
    shutil.rmtree(path, ignore_errors=True)


def _tree_stat(root: str) -> dict:
    """relative path -> what an unpack decides (type and mode, owners, size, mtime, link target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == root else dirnames + filenames:
            full = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(full)
            link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
            made_now = stat.S_ISDIR(st.st_mode) or stat.S_ISCHR(st.st_mode)  # (whiteouts: when made)
            mtime = None if made_now else st.st_mtime_ns
            found[os.path.relpath(full, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, mtime, link)
    return found


def _differences(pulled: list, lazy: list) -> list:
    """(layer, path, pulled, lazy) where the two unpacks differ."""
    if len(pulled) != len(lazy):
        return [("layers", len(pulled), len(lazy))]
    return [
        (i, name, a.get(name), b.get(name))
        for i, (a, b) in enumerate(zip(pulled, lazy))
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return st.st_ino, st.st_ctime_ns


def check_pull_unpacks(path: str, ref: str):
    store = sb.ImageStore(os.path.join(path, "pulled"))
    image = store.pull(ref)
    policy = store.caller_policy()
    dirs = [os.path.join(store.path, "layers", policy.key, layer.diff_id[7:]) for layer in image.layers]
    after_pull = [os.path.isdir(d) and _identity(d) for d in dirs]
    trees = [_tree_stat(d) for d in dirs if os.path.isdir(d)]
    tmp_after_pull = os.listdir(store.tmp)
    result = sb.run(None, image=ref, image_store=store.path)
    after_run = [_identity(d) for d in dirs]
    # The same image reaching another store by load(): unpacked lazily, at its first use.
    archive = os.path.join(path, "image.tar")
    store.save(ref, archive)
    lazy = sb.ImageStore(os.path.join(path, "loaded"))
    lazy.load(archive)
    lazy_trees = [_tree_stat(d) for d in lazy.unpacked(ref)]
    owned = trees[-1].get("home/user.txt") if trees else None
    return (
        policy.key,
        after_pull,
        after_run,
        tmp_after_pull,
        result.exit_code,
        result.stdout,
        _differences(trees, lazy_trees),
        owned,
        os.geteuid(),
    )


def test_pull_unpacks_what_the_first_start_uses(runner, store_dir, owned_image):
    key, after_pull, after_run, tmp, code, out, differences, owned, uid = runner(
        check_pull_unpacks, store_dir, owned_image
    )
    assert all(after_pull), f"layers/{key}: a layer was not unpacked by the pull: {after_pull}"
    assert after_run == after_pull  # the first start found them and did not unpack again
    assert [name for name in tmp if name.startswith("layer-")] == []
    assert (code, out) == (0, EXPECTED)
    assert differences == []  # owners, modes, times: as the first start unpacks them
    if runner.rootless:
        assert key.startswith("sub-") and owned[1] != uid  # uid 1000 in the caller's sub-id range
    else:
        assert key == "shift-1000000000" and owned[1:3] == (1_000_001_000, 1_000_001_000)


def _hostile_layer() -> bytes:
    """Some files, then a name under a symlink that leaves the layer (refused mid-unpack)."""
    return layer_tar({"data/": "dir/", "data/big": b"x" * (1 << 20), "escape": "->/etc", "escape/passwd": b"pwned\n"})


def check_hostile_pull(path: str, ref: str):
    store = sb.ImageStore(os.path.join(path, "store"))
    try:
        store.pull(ref)
    except ImageFormatError as err:
        refused = str(err)
    else:
        refused = None
    layers = os.path.join(store.path, "layers")
    published = [name for key in os.listdir(layers) for name in os.listdir(os.path.join(layers, key))]
    return refused, store.list(), published, os.listdir(store.tmp), os.listdir(store.blobs.dir)


def test_hostile_layer_is_refused_with_nothing_published(runner, store_dir, registry, shared_dir, busybox_root):
    src = sb.ImageStore(str(shared_dir / f"registry-hostile-{runner.mode}"))
    add_image(src, busybox_layers(busybox_root)[:1] + [_hostile_layer()], ["bad:1"], config=CONFIG)
    ref = f"{registry.host}/hostile/{runner.mode}:1"
    src.push("bad:1", ref)
    refused, images, published, tmp, blobs = runner(check_hostile_pull, store_dir, ref)
    assert refused is not None and "escape/passwd" in refused and "not a directory" in refused
    assert (images, published, tmp, blobs) == ([], [], [], [])
