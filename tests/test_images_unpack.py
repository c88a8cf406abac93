"""Layer extraction with hostile input (root and rootless): nothing is ever
written outside the layer directory; whiteouts, ownership, devices, setuid."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile

import pytest

from sandboxlib.errors import ImageFormatError
from sandboxlib.images import ImageStore
from sandboxlib.images.trees import remove_tree
from sandboxlib.images.unpack import IdPolicy, unpack

from .imagekit import add_image, busybox_layers, layer_tar

SHIFT = 1_000_000_000


def _e(name, kind=tarfile.REGTYPE, link="", mode=0o644, uid=0, gid=0, size=0, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid, info.size = kind, link, mode, uid, gid, size
    info.devmajor, info.devminor = dev
    return info


def _tar(*entries) -> bytes:
    return layer_tar({f"{e.name}#{i}": e for i, e in enumerate(entries)})


def _unpack_here(parent: str, data: bytes) -> str:
    dest = tempfile.mkdtemp(dir=parent)
    unpack(io.BytesIO(data), dest, IdPolicy.for_caller(SHIFT), "test layer")
    return dest


def _outside_state(outside: str):
    st = os.lstat(os.path.join(outside, "secret"))
    with open(os.path.join(outside, "secret")) as f:
        return sorted(os.listdir(outside)), f.read(), st.st_nlink


def check_hostile(parent, outside, data):
    try:
        dest = _unpack_here(parent, data)
        result = ("ok", sorted(os.listdir(dest)))
    except ImageFormatError as err:
        result = ("refused", str(err))
    return result, _outside_state(outside)


def hostile_cases(outside):
    link = tarfile.SYMTYPE
    hard = tarfile.LNKTYPE
    return {
        "dotdot": [_e("../outside/pwned")],
        "dotdot inside": [_e("a/../../outside/pwned")],
        "symlinked parent": [_e("link", link, outside), _e("link/pwned")],
        "relative escape": [_e("link", link, "../../../../../../.."), _e(f"link{outside}/pwned")],
        "symlink chain": [_e("a", link, "b"), _e("b", link, outside), _e("a/pwned")],
        "hardlink absolute": [_e("h", hard, f"{outside}/secret")],
        "hardlink dotdot": [_e("h", hard, "../outside/secret")],
        "hardlink through symlink": [_e("link", link, outside), _e("h", hard, "link/secret")],
        "root replaced by symlink": [_e(".", link, outside), _e("pwned")],
        "root replaced by file": [_e("./", tarfile.REGTYPE)],
        "whiteout of dotdot": [_e("a/.wh..."), _e("pwned")],
        # a directory the previous entry walked into, then replaced: the walk is not reused
        "walked dir replaced by symlink": [_e("a", tarfile.DIRTYPE), _e("a/x"), _e("a", link, outside), _e("a/pwned")],
        "walked dir whited out": [_e("a/b", tarfile.DIRTYPE), _e("a/b/x"), _e("a/.wh.b"), _e("a/b/pwned")],
        "walked dir replaced, deep": [
            *[_e("d/" * i + "d", tarfile.DIRTYPE) for i in range(70)],
            _e("d", link, outside),
            _e("d/" * 69 + "pwned"),
        ],
    }


@pytest.fixture
def sandbox_dirs(runner, shared_dir):
    """(parent for layer dirs, an 'outside' dir with a secret), owned by the mode's user."""
    top = tempfile.mkdtemp(dir=str(shared_dir))
    parent, outside = os.path.join(top, "layers"), os.path.join(top, "outside")
    for d in (top, parent, outside):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777 if d != top else 0o755)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("secret")
    yield parent, outside
    remove_tree(top)  # iterative: some layers are deep chains


@pytest.mark.parametrize("case", sorted(hostile_cases("/x")))
def test_hostile_layers_are_refused(runner, sandbox_dirs, case):
    parent, outside = sandbox_dirs
    result, state = runner(check_hostile, parent, outside, _tar(*hostile_cases(outside)[case]))
    assert result[0] == "refused", result
    assert state == (["secret"], "secret", 1)


def check_tricky_but_fine(parent, outside):
    data = _tar(
        _e("/abs/file", size=3),
        _e("link", tarfile.SYMTYPE, f"{outside}/secret"),
        _e("link", size=5),
        _e("sl", tarfile.SYMTYPE, f"{outside}/secret"),
        _e("hl", tarfile.LNKTYPE, "sl"),
        _e("./", tarfile.DIRTYPE, mode=0o750),
    )
    dest = _unpack_here(parent, data)
    link_st, hl_st = os.lstat(os.path.join(dest, "sl")), os.lstat(os.path.join(dest, "hl"))
    return (
        os.path.isfile(os.path.join(dest, "abs", "file")),
        stat.S_ISREG(os.lstat(os.path.join(dest, "link")).st_mode),
        os.path.getsize(os.path.join(dest, "link")),
        hl_st.st_ino == link_st.st_ino and stat.S_ISLNK(hl_st.st_mode),
        oct(os.stat(dest).st_mode & 0o777),
    ), _outside_state(outside)


def test_absolute_names_and_replaced_symlinks_stay_inside(runner, sandbox_dirs):
    found, state = runner(check_tricky_but_fine, *sandbox_dirs)
    assert found == (True, True, 5, True, "0o750")
    assert state == (["secret"], "secret", 1)


def check_special_entries(parent):
    data = _tar(
        _e("d", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000),
        _e("d/f", mode=0o4755, uid=1000, gid=1001, size=4),
        _e("d/h", tarfile.LNKTYPE, "d/f"),
        _e(".wh.gone"),
        _e("op", tarfile.DIRTYPE),
        _e("op/.wh..wh..opq"),
        _e("dev/null2", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        _e("fifo", tarfile.FIFOTYPE, mode=0o600),
        _e("ro", tarfile.DIRTYPE, mode=0o555),
        _e("ro/x", size=1),
    )
    dest = _unpack_here(parent, data)
    p = lambda *n: os.path.join(dest, *n)  # noqa: E731
    f, gone = os.lstat(p("d", "f")), os.lstat(p("gone"))
    xattrs = {name: os.getxattr(p("op"), name) for name in os.listxattr(p("op")) if "overlay" in name}
    return {
        "f owner": (f.st_uid, f.st_gid),
        "f mode": oct(f.st_mode & 0o7777),
        "hardlink": os.lstat(p("d", "h")).st_ino == f.st_ino,
        "whiteout": (stat.S_ISCHR(gone.st_mode), gone.st_rdev),
        "opaque": xattrs,
        "device": os.path.lexists(p("dev", "null2")),
        "fifo": stat.S_ISFIFO(os.lstat(p("fifo")).st_mode),
        "ro": (oct(os.stat(p("ro")).st_mode & 0o777), os.path.exists(p("ro", "x"))),
    }


def test_whiteouts_owners_devices_setuid(runner, sandbox_dirs):
    found = runner(check_special_entries, sandbox_dirs[0])
    assert found["hardlink"] and found["fifo"] and found["whiteout"] == (True, 0)
    assert found["ro"] == ("0o555", True)
    if runner.rootless:
        me = runner.worker.user
        assert found["f owner"] == (me.pw_uid, me.pw_gid)
        assert found["f mode"] == "0o755"  # no setuid
        assert found["opaque"] == {"user.overlay.opaque": b"y"}  # overlay's userxattr
        assert found["device"] is False
    else:
        assert found["f owner"] == (SHIFT + 1000, SHIFT + 1001)
        assert found["f mode"] == "0o4755"
        assert found["opaque"] == {"user.overlay.opaque": b"y"}
        assert found["device"] is True


def test_archive_xattrs_are_not_applied(tmp_path):
    info = _e("f", size=1)
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.x": "1"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    dest = _unpack_here(str(tmp_path), buf.getvalue())
    assert os.listxattr(os.path.join(dest, "f")) == []


def test_truncated_layer(tmp_path):
    data = _tar(_e("a", size=100000))
    with pytest.raises(ImageFormatError, match="truncated"):
        _unpack_here(str(tmp_path), data[:50000])


# -- the store's unpacked layers -------------------------------------------------------
def check_store_layers(path, busybox_rootfs):
    store = ImageStore(path)
    layers = busybox_layers(busybox_rootfs)
    add_image(store, layers, ["bb:1"])
    add_image(store, layers[:2], ["bb:2"])
    one, two = store.unpacked("bb:1"), store.unpacked("bb:2")
    shared = one[:2] == two
    top = one[2]
    found = {
        "shared": shared,
        "busybox": os.path.isfile(os.path.join(one[0], "bin", "busybox")),
        "whiteout": stat.S_ISCHR(os.lstat(os.path.join(top, "etc", "old")).st_mode),
        "scratch whiteout": stat.S_ISCHR(os.lstat(os.path.join(top, "scratch")).st_mode),
    }
    store.remove("bb:1")
    found["after remove"] = [os.path.isdir(d) for d in one]
    store.remove("bb:2")
    found["after all"] = os.listdir(os.path.dirname(one[0])), os.listdir(store.tmp)
    return found


def test_store_unpacks_each_layer_once(runner, store_dir, busybox_root):
    found = runner(check_store_layers, store_dir, busybox_root)
    assert found["shared"] and found["busybox"] and found["whiteout"] and found["scratch whiteout"]
    assert found["after remove"] == [True, True, False]
    assert found["after all"] == ([], [])


def test_the_file_path_refuses_the_same(tmp_path, sandbox_dirs):
    """Plain layers in the store are unpacked from the blob file (data copied
    by the kernel): the same checks apply."""
    from sandboxlib.images.unpack import unpack_tar_file

    parent, outside = sandbox_dirs
    for case, entries in hostile_cases(outside).items():
        blob = tmp_path / "layer.tar"
        blob.write_bytes(_tar(*entries))
        dest = tempfile.mkdtemp(dir=parent)
        with pytest.raises(ImageFormatError):
            unpack_tar_file(str(blob), dest, IdPolicy.for_caller(SHIFT), case)
        assert _outside_state(outside) == (["secret"], "secret", 1), case
    blob.write_bytes(_tar(_e("a", size=100000))[:50000])
    with pytest.raises(ImageFormatError, match="truncated"):
        unpack_tar_file(str(blob), tempfile.mkdtemp(dir=parent), IdPolicy.for_caller(SHIFT), "cut")
    blob.write_bytes(_tar(_e("d/", tarfile.DIRTYPE), _e("d/f", size=5)))
    dest = tempfile.mkdtemp(dir=parent)
    unpack_tar_file(str(blob), dest, IdPolicy.for_caller(SHIFT), "fine")
    assert open(os.path.join(dest, "d", "f"), "rb").read() == b"\0" * 5


def check_deep_chain(parent, depth):
    """A chain ``depth`` levels deep, a file and a 0o555 directory at each
    level, and a hard link to the deepest file: the count of opens the unpack
    makes, and what it made."""
    entries, name = [], ""
    for _ in range(depth):
        name = f"{name}/x" if name else "x"
        entries += [
            _e(name, tarfile.DIRTYPE, mode=0o755),
            _e(f"{name}/f", size=3),
            _e(f"{name}/ro", tarfile.DIRTYPE, mode=0o555),
        ]
    entries.append(_e("top-link", tarfile.LNKTYPE, f"{name}/f"))
    data = _tar(*entries)
    opens, real_open = [0], os.open

    def counting_open(*args, **kwargs):
        opens[0] += 1
        return real_open(*args, **kwargs)

    os.open = counting_open
    try:
        dest = _unpack_here(parent, data)
    finally:
        os.open = real_open
    fd, modes = real_open(dest, os.O_RDONLY | os.O_DIRECTORY), set()
    for _ in range(depth):
        deeper = real_open("x", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        modes.add(os.stat("ro", dir_fd=deeper).st_mode & 0o777)
        os.close(fd)
        fd = deeper
    deepest = os.stat("f", dir_fd=fd)
    os.close(fd)
    return opens[0], modes, deepest.st_ino == os.lstat(os.path.join(dest, "top-link")).st_ino


def test_deep_chains_unpack_in_linear_time(runner, sandbox_dirs):
    """Each entry's parent is reached from the last walk, not from the root
    (which made 10,000 levels take minutes): a bounded number of opens per
    entry, whatever the depth; directory modes still set at the end."""
    depth = 1500
    opens, modes, linked = runner(check_deep_chain, sandbox_dirs[0], depth)
    assert modes == {0o555} and linked
    assert opens < 10 * 3 * depth, opens  # walking from the root each time: about depth**2 / 2
