"""Trees a container controls, however deep or wide (root and rootless):
teardown, the sweep after a dead owner, commit, get_archive, the sub-id
worker's chown, tar and empty, and prune all walk them iteratively
(``sandboxlib.images.trees``), never following a symlink."""

from __future__ import annotations

import ast
import errno
import io
import logging
import os
import shutil
import tarfile
import tempfile

import pytest

import sandboxlib as sb
from sandboxlib.images import trees
from sandboxlib.rootfs import writable
from sandboxlib.runtime import subids_worker

from .conftest import Runner, expire_sweep_stamp
from .test_images_run import _store
from .test_writable import _containers

DEPTH = 10 * 1001  # levels below the top: 10 chains of d/x/x/.../x (1,000 x), nested
# Each path a command names stays below PATH_MAX: chains made with mkdir -p and nested with mv.
CHAIN = "p=x && for i in $(seq 999); do p=$p/x; done"
MAKE_DEEP = (
    "mkdir -p {top} && cd {top} && %s && mkdir -p d/$p && echo deep > d/$p/f && ln -s / d/$p/up && "
    "for i in $(seq 9); do mkdir -p n/$p && mv d n/$p/d && mv n d || exit 1; done && chmod {mode} {top}" % CHAIN
)
READ_DEEP = "cd {top} && %s && for i in $(seq 10); do cd -P d/$p || exit 1; done && cat f && ls -l up" % CHAIN


def _chain(top_fd: int, depth: int) -> int:
    """Make x/x/.../x (``depth`` levels) below ``top_fd``; returns the deepest's fd."""
    fd = os.dup(top_fd)
    for _ in range(depth):
        os.mkdir("x", dir_fd=fd)
        deeper = os.open("x", trees.DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def _dead_owners_deep_layer(store) -> str:
    """containers/ID as a SIGKILLed owner leaves it (no lease), with a deep tree in upper/."""
    path = store.writable_dir("d" * 64, (os.geteuid(), os.getegid()))
    upper = os.open(os.path.join(path, "upper"), trees.DIR_FLAGS)
    try:
        os.close(_chain(upper, DEPTH))
    finally:
        os.close(upper)
    return path


def _archive_depth(data: bytes) -> tuple:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        deepest = max(members, key=lambda m: m.name.count("/"))
        return len(members), deepest.name.count("/"), tar.extractfile(deepest).read()


def _layer_depth(store, image) -> tuple:
    """(entries, deepest level, the deepest file) of the image's top layer blob."""
    with open(store.blobs.path(image.layers[-1].digest), "rb") as f:
        return _archive_depth(f.read())


def _dead_deep_layer(store) -> str:
    """An unpacked layer no image references (as a crash or a removal leaves it), deep."""
    key = os.path.join(store.path, "layers", "user-0")
    os.makedirs(key, exist_ok=True)
    path = os.path.join(key, "0" * 64)
    os.mkdir(path)
    top = os.open(path, trees.DIR_FLAGS)
    os.close(_chain(top, DEPTH))
    os.close(top)
    return path


def check_deep_trees(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    _dead_owners_deep_layer(store)
    swept = sb.run(["true"], image="bb:1", image_store=store.path).exit_code, _containers(store)
    made = sb.run(["sh", "-c", MAKE_DEEP.format(top="/w", mode="755")], image="bb:1", image_store=store.path)
    after_teardown = made.exit_code, made.stderr, _containers(store)
    with sb.Container(image="bb:1", image_store=store.path) as c:
        as_root = c.run(["sh", "-c", MAKE_DEEP.format(top="/w", mode="755")])
        # a sub-id's files rootless, in a directory closed to the caller: the worker's tar and empty
        as_app = c.run(["sh", "-c", MAKE_DEEP.format(top="/tmp/a", mode="700")], user="app")
        archive = _archive_depth(c.get_archive("/w"))
        image = c.commit("bb:deep")
    after_close = _containers(store)
    layer = _layer_depth(store, image)
    dead_layer = _dead_deep_layer(store)
    store.prune()
    return (
        swept,
        after_teardown,
        (as_root.exit_code, as_app.exit_code),
        archive,
        layer,
        after_close,
        os.path.exists(dead_layer),
        _containers(store),
    )


@pytest.mark.timeout(300)  # 10,000 levels through six walks: ~50 s on a loaded 2-core VM
def test_deep_trees(runner, store_dir, busybox_root):
    (swept, after_teardown, made, archive, layer, after_close, dead_layer, after) = runner(
        check_deep_trees, store_dir, busybox_root
    )
    assert swept == (0, [])  # the dead owner's deep directory was swept by a start
    assert after_teardown == (0, b"", [])  # removed at teardown
    assert made == (0, 0) and after_close == []
    assert archive == (DEPTH + 3, DEPTH + 1, b"deep\n")  # w, its 10,010 directories, f and up
    # the commit: /w and /tmp/a (tmp, a, their trees, f, up), with the base image's /tmp
    entries, deepest, content = layer
    assert deepest == DEPTH + 2 and content == b"deep\n" and entries >= 2 * (DEPTH + 3) + 1
    assert not dead_layer and after == []  # prune removed the deep layer


def check_deep_chown(path):
    """The sub-id worker's chown (what unpacking a rootless layer with
    owners runs) on a deep tree: the deepest file becomes uid 1000's."""
    from sandboxlib.config import ContainerConfig
    from sandboxlib.rootfs import imageroot
    from sandboxlib.runtime import subids

    store = sb.ImageStore(path)
    root = os.path.join(store.tmp, "layer")
    os.mkdir(root)
    top = os.open(root, trees.DIR_FLAGS)
    deepest = _chain(top, DEPTH)
    os.close(top)
    fd = os.open("f", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=deepest)
    ino = os.fstat(fd).st_ino
    os.close(fd)
    policy = imageroot.id_policy(ContainerConfig(), subids._caller_maps())
    store.sub_id_files().chown(root, {ino: (1000, 1000, 0o600)}, policy)
    owner = os.stat("f", dir_fd=deepest, follow_symlinks=False).st_uid
    os.close(deepest)
    store.remove_trees([root])
    return owner, policy.owner(1000, 1000)[0], os.listdir(store.tmp)


def test_the_sub_id_owner_fixer_walks_deep_trees(workers, shared_dir):
    user = workers["sbxtest"].user
    path = tempfile.mkdtemp(prefix="store-", dir=str(shared_dir))
    os.chown(path, user.pw_uid, user.pw_gid)
    try:
        owner, wanted, left = Runner("rootless", workers["sbxtest"])(check_deep_chown, path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert owner == wanted != user.pw_uid and left == []


def check_many_entries(path, busybox_rootfs, count):
    store = _store(path, busybox_rootfs)
    r = sb.run(
        ["sh", "-c", f"mkdir /w && cd /w && seq {count} | xargs touch && ls | wc -l"],
        image="bb:1",
        image_store=store.path,
    )
    return r.exit_code, r.stdout, _containers(store)


@pytest.mark.timeout(300)  # a million files made and removed: ~60 s on a loaded 2-core VM
def test_a_million_entries_are_removed_at_teardown(tmp_path, busybox_root):
    count = 1_000_000  # one test of this size, as root (~60 s on the shared VM): creating them is most of it
    assert check_many_entries(str(tmp_path), busybox_root, count) == (0, b"%d\n" % count, [])


def test_a_failing_sweep_logs_and_the_start_goes_on(tmp_path, busybox_root, monkeypatch, caplog):
    store = _store(str(tmp_path), busybox_root)
    store.writable_dir("e" * 64, (0, 0))  # a dead owner's
    real = store.remove_trees

    def broken(paths):
        if any("e" * 64 in p for p in paths):
            raise ValueError("a bug in the removal")
        return real(paths)

    monkeypatch.setattr(store, "remove_trees", broken)
    expire_sweep_stamp(os.path.join(store.path, ".writable-swept"))
    with caplog.at_level(logging.WARNING, logger="sandboxlib"):
        assert writable.sweep(store) == 0
    assert "could not sweep the writable layer" in caplog.text and "a bug in the removal" in caplog.text


# -- the walker itself ---------------------------------------------------------------
def test_removal_never_follows_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "out").symlink_to(outside)
    (tree / "a" / "file").symlink_to(outside / "keep")
    os.chmod(tree / "a", 0o000)  # its owner closed it: made 0700 to be removed
    trees.remove_tree(str(tree))
    assert not tree.exists() and (outside / "keep").read_text() == "x"


def test_a_walk_holds_a_bounded_number_of_fds(tmp_path):
    top = os.open(tmp_path, trees.DIR_FLAGS)
    try:
        os.close(_chain(top, 1000))
        most, before = 0, len(os.listdir("/proc/self/fd"))
        for _ in trees.walk(top):
            most = max(most, len(os.listdir("/proc/self/fd")) - before)
        assert most <= trees.FD_WINDOW + 2 and len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(top)
    trees.remove_tree(str(tmp_path / "x"))


def test_a_directory_moved_during_a_walk_ends_it(tmp_path, monkeypatch):
    """Climbing back with '..' past the fd window: a moved directory is an error, never another place."""
    monkeypatch.setattr(trees, "FD_WINDOW", 4)
    top = os.open(tmp_path, trees.DIR_FLAGS)
    try:
        os.close(_chain(top, 20))
        os.mkdir(tmp_path / "elsewhere")
        walk = trees.walk(top)
        for entry in walk:
            if entry.path.count("/") == 15:  # deep below x/x: its fd closed long ago
                os.rename(tmp_path / "x" / "x", tmp_path / "elsewhere" / "x")
                break
        with pytest.raises(OSError) as err:
            list(walk)
        assert err.value.errno == errno.ESTALE and "moved" in str(err.value)
    finally:
        os.close(top)


def test_the_worker_program_has_no_clashing_names():
    """The sub-id worker runs the walker's source and its own as one program."""

    def top_level(module) -> set:
        tree = ast.parse(open(module.__file__).read())
        names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        return names | {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }

    assert top_level(trees) & top_level(subids_worker) == set()
