"""Image owners in rootless containers: with /etc/subuid ranges the layers
are owned by the sub-ids (container id N > 0 is host id start + N - 1), so
a container sees the image's owners; commit keeps them; remove and prune
leave nothing.  Root mode keeps its shift; a user without ranges keeps the
squash (every file is the container root's)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile

import pytest

import sandboxlib as sb

from .imagekit import add_image, busybox_layers, layer_tar
from .test_isolation import subordinate

ROOT_SHIFT = 1_000_000_000


def _info(name: str, uid: int, gid: int, mode: int, data: bytes = b"") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.uid, info.gid, info.mode = uid, gid, mode
    if name.endswith("/"):
        info.type = tarfile.DIRTYPE
    elif name in LINKS:
        info.type, info.linkname = LINKS[name]
    else:
        info.size = len(data)
    return info


LINKS = {"data/link": (tarfile.SYMTYPE, "app-file"), "data/hard": (tarfile.LNKTYPE, "data/app-file")}
# name -> (uid, gid, mode): what the image's owner layer says
OWNED = {
    "data/": (0, 0, 0o755),
    "data/root-file": (0, 0, 0o644),
    "data/app-file": (1000, 1000, 0o644),
    "data/link": (1000, 1000, 0o777),
    "data/hard": (1000, 1000, 0o644),
    "data/shadow": (0, 42, 0o640),
    "data/setgid/": (0, 42, 0o2775),
    "data/locked/": (0, 0, 0o000),
    "data/locked/inner": (1000, 1000, 0o600),
    "home/app/": (1000, 1000, 0o700),
    "home/app/own": (1000, 1000, 0o600),
}
PATHS = ["/" + name.rstrip("/") for name in OWNED]
HIDDEN = {"data/locked/inner", "home/app/own"}  # below dirs only their owner may look in


def owner_image(path: str, busybox_rootfs: str, ref: str = "owners:1") -> sb.ImageStore:
    store = sb.ImageStore(path)
    owners = layer_tar({name: _info(name, *ids) for name, ids in OWNED.items()})
    add_image(store, busybox_layers(busybox_rootfs)[:1] + [owners], [ref], config={"Cmd": ["sh"]})
    return store


def check_owners(path, busybox_rootfs):
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path) as c:
        inside = c.run(["stat", "-c", "%n %u %g %a", *PATHS]).stdout.decode().splitlines()
        as_app = c.run(
            [
                "sh",
                "-c",
                "echo more >> /data/app-file && echo wrote; echo x > /home/app/new && echo home;"
                "cat /data/shadow || echo denied; cat /data/locked/inner || echo locked",
            ],
            user="1000:1000",
        )
        as_root = c.run(["sh", "-c", "cat /data/shadow /data/locked/inner && echo read"])
        listing = c.run(["ls", "-ln", "/data"]).stdout.decode()
    layer = store.unpacked("owners:1")[1]
    host = {
        name: (st.st_uid, st.st_gid, st.st_mode & 0o7777)
        for name in OWNED
        if name not in HIDDEN or os.getuid() == 0
        for st in [os.lstat(os.path.join(layer, name))]
    }
    return (
        inside,
        as_app.stdout.decode(),
        as_root.stdout.decode(),
        listing,
        host,
        os.getuid(),
        os.getgid(),
        os.path.basename(os.path.dirname(layer)),
    )


def test_a_container_sees_the_image_owners(runner, store_dir, busybox_root):
    inside, as_app, as_root, listing, host, uid, gid, key = runner(check_owners, store_dir, busybox_root)
    assert inside == [f"{p} {u} {g} {m:o}" for p, (u, g, m) in zip(PATHS, OWNED.values())]
    assert as_app.split() == ["wrote", "home", "denied", "locked"]
    assert as_root == "read\n"  # the container's root passes the mode-000 dir and the 0640 file
    assert " 1000 " in listing and " 42 " in listing
    if runner.mode == "root":
        assert key == f"shift-{ROOT_SHIFT}"
        assert host == {n: (u + ROOT_SHIFT, g + ROOT_SHIFT, m) for n, (u, g, m) in OWNED.items() if n in host}
        return
    user = runner.worker.user.pw_name
    (sub_uid, size), (sub_gid, _) = subordinate("/etc/subuid", user), subordinate("/etc/subgid", user)
    assert key == f"sub-{uid}-{sub_uid}-{sub_gid}-{size}"
    assert host == {
        n: (sub_uid + u - 1 if u else uid, sub_gid + g - 1 if g else gid, m)
        for n, (u, g, m) in OWNED.items()
        if n in host
    }
    assert len(host) == len(OWNED) - len(HIDDEN)


def check_squash(path, busybox_rootfs):
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path) as c:
        inside = c.run(["stat", "-c", "%n %u %g %a", *PATHS]).stdout.decode().splitlines()
    layer = store.unpacked("owners:1")[1]
    owners = {
        (st.st_uid, st.st_gid) for name in OWNED if name not in HIDDEN for st in [os.lstat(os.path.join(layer, name))]
    }
    removed = store.remove("owners:1")
    return (
        inside,
        owners,
        os.getuid(),
        os.getgid(),
        removed,
        os.listdir(os.path.join(path, "layers", f"user-{os.getuid()}")),
    )


@pytest.fixture
def single_store(single_id_runner, shared_dir):
    path = tempfile.mkdtemp(prefix="store-", dir=str(shared_dir))
    os.chmod(path, 0o755)
    os.chown(path, single_id_runner.worker.user.pw_uid, single_id_runner.worker.user.pw_gid)
    yield path
    shutil.rmtree(path)


def test_without_sub_ids_files_are_the_containers_root(single_id_runner, single_store, busybox_root):
    inside, owners, uid, gid, removed, left = single_id_runner(check_squash, single_store, busybox_root)
    # Only the caller's id exists in its namespace: every file is root's, setgid dropped.
    assert inside == [f"{p} 0 0 {m & 0o1777:o}" for p, (_, _, m) in zip(PATHS, OWNED.values())]
    assert owners == {(uid, gid)}
    assert removed == ["owners:1"] and left == []


def check_commit(path, busybox_rootfs, writable):
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path, writable_layer=writable) as c:
        c.run(["sh", "-c", "umask 077; echo made > /home/app/made; mkdir /home/app/private"], user="1000:1000")
        c.run(["sh", "-c", "chown 1000:42 /data/root-file; rm /data/app-file"])
        image = c.commit("owners:2")
    with tarfile.open(store.blobs.path(image.layers[-1].digest)) as tar:
        entries = {m.name: (m.uid, m.gid, m.mode) for m in tar.getmembers()}
    again = (
        sb.run(
            ["stat", "-c", "%n %u %g %a", "/home/app/made", "/home/app/private", "/data/root-file"],
            image="owners:2",
            image_store=store.path,
        )
        .stdout.decode()
        .splitlines()
    )
    return entries, again, os.listdir(os.path.join(path, "containers")) if os.path.isdir(path + "/containers") else []


@pytest.mark.parametrize("writable", ["tmpfs", "disk"])
def test_commit_keeps_the_container_owners(runner, store_dir, busybox_root, writable):
    entries, again, writable_left = runner(check_commit, store_dir, busybox_root, writable)
    assert writable_left == []
    assert entries["home/app"] == (1000, 1000, 0o700)
    assert entries["home/app/made"] == (1000, 1000, 0o600)
    assert entries["home/app/private"] == (1000, 1000, 0o700)
    assert entries["data/root-file"][:2] == (1000, 42)
    assert "data/.wh.app-file" in entries
    assert again == ["/home/app/made 1000 1000 600", "/home/app/private 1000 1000 700", "/data/root-file 1000 42 644"]


def check_remove_and_prune(path, busybox_rootfs):
    store = owner_image(path, busybox_rootfs)
    owner_image(path, busybox_rootfs, "owners:2")
    with sb.Container(image="owners:1", image_store=store.path) as c:
        c.run(["true"])
    layers = store.unpacked("owners:1")
    store.remove("owners:1")
    kept = all(os.path.isdir(p) for p in layers)  # owners:2 still uses them
    store.remove("owners:2")
    report = store.prune()
    found = [
        os.path.join(d, n)
        for sub in ("layers", "tmp")
        for d, dirs, files in os.walk(os.path.join(path, sub))
        for n in dirs + files
    ]
    return kept, report.layers, found, [os.path.lexists(p) for p in layers]


def test_remove_and_prune_leave_nothing(runner, store_dir, busybox_root):
    kept, pruned, found, exists = runner(check_remove_and_prune, store_dir, busybox_root)
    assert kept and exists == [False, False]
    assert [p for p in found if not os.path.basename(os.path.dirname(p)) == "layers"] == []  # only the empty KEY dirs


def check_broken_layer_is_removed(path, busybox_rootfs):
    """A layer dir half-chowned by a crash is debris in tmp/: the next collection removes it."""
    store = owner_image(path, busybox_rootfs)
    layer = store.unpacked("owners:1")[1]
    debris = os.path.join(store.tmp, "layer-crashed")
    os.mkdir(debris)
    os.rename(layer, os.path.join(debris, "root"))
    store.collect()
    return os.listdir(store.tmp)


def test_debris_with_sub_id_files_is_collected(runner, store_dir, busybox_root):
    assert runner(check_broken_layer_is_removed, store_dir, busybox_root) == []


def check_volume(path, busybox_rootfs):
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path, mounts=[sb.Mount.volume("vol", "/vol")]) as c:
        made = c.run(
            [
                "sh",
                "-c",
                "mkdir -m 700 /vol/app && echo x > /vol/app/f && chown -R 1000:1000 /vol/app"
                " && chmod 000 /vol/app && echo ok",
            ]
        ).stdout
    seen = sb.run(
        ["sh", "-c", "stat -c '%u %g %a' /vol/app"],
        image="owners:1",
        image_store=store.path,
        mounts=[sb.Mount.volume("vol", "/vol")],
    ).stdout
    store.remove_volume("vol")
    return made, seen, store.volumes()


def test_volume_files_of_sub_ids(runner, store_dir, busybox_root):
    made, seen, volumes = runner(check_volume, store_dir, busybox_root)
    assert made == b"ok\n" and seen == b"1000 1000 0\n"
    assert volumes == []


def test_policies():
    """Each policy unpacks into a directory of its own; container_ids inverts owner."""
    from sandboxlib.images.unpack import IdPolicy

    root, squash = IdPolicy(shift=ROOT_SHIFT), IdPolicy(squash=(1001, 1001))
    sub, other = (
        IdPolicy(squash=(1001, 1001), sub=(100000, 200000, 65536)),
        IdPolicy(squash=(1001, 1001), sub=(300000, 200000, 65536)),
    )
    assert len({p.key for p in (root, squash, sub, other)}) == 4
    assert sub.owner(0, 42) == (1001, 200041) and sub.owner(1000, 0) == (100999, 1001)
    assert sub.owner(70000, 70000) == (1001, 1001)  # beyond the range: the container's root
    assert squash.owner(1000, 42) == (1001, 1001) and root.owner(1000, 42) == (ROOT_SHIFT + 1000, ROOT_SHIFT + 42)
    for policy in (root, sub):
        for ids in ((0, 0), (1000, 42), (65535, 1)):
            assert policy.container_ids(*policy.owner(*ids)) == ids
    assert sub.mode(0o2775, directory=True) == 0o2775 and sub.mode(0o6755, directory=False) == 0o755
    assert squash.mode(0o2775, directory=True) == 0o775 and root.mode(0o6755, directory=False) == 0o6755


def check_copy_in_and_out(path, busybox_rootfs):
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path) as c:
        read = c.read_file("/home/app/own")  # 0600 in a 0700 dir of user 1000
        c.run(["sh", "-c", "echo secret > /home/app/own"], user="1000:1000")
        after = c.read_file("/home/app/own")
        c.write_file("/data/locked/put", b"in\n")  # a mode-000 dir of root
        c.put_archive("/data/locked", layer_tar({"sub/": "dir/", "sub/f": b"f\n"}))
        seen = (
            c.run(
                [
                    "sh",
                    "-c",
                    "cat /data/locked/put /data/locked/sub/f; stat -c '%n %u %g' /data/locked/put /data/locked/sub/f",
                ]
            )
            .stdout.decode()
            .splitlines()
        )
        with tarfile.open(fileobj=io.BytesIO(c.get_archive("/home/app"))) as tar:
            archived = {m.name: (m.uid, m.gid) for m in tar.getmembers()}
        with tarfile.open(fileobj=io.BytesIO(c.get_archive("/"))) as tar:
            archived_root = {m.name for m in tar.getmembers()}
        with tempfile.TemporaryFile() as f:
            f.write(b"kept")
            # Written into f as it is made, never spooled through the temporary
            # directory first (twice a large container's size on disk, or in
            # a tmpfs's memory): none to be had here.
            tempfile.tempdir, saved_tempdir = os.path.join(path, "no-temporary-directory"), tempfile.tempdir
            try:
                c.export(f)
            finally:
                tempfile.tempdir = saved_tempdir
            f.seek(0)
            kept = f.read(4)
            with tarfile.open(fileobj=f) as tar:
                exported = {m.name: (m.uid, m.gid) for m in tar.getmembers()}
        try:
            c.read_file("/home/app/missing")
        except FileNotFoundError:
            missing = "FileNotFoundError"
    exported = {name: ids for name, ids in exported.items() if name.startswith(("home/app", "data/locked", "proc"))}
    archived_root = sorted(n for n in archived_root if n.startswith(("./proc", "./home/app/")))
    return read, after, seen, archived, missing, kept, exported, archived_root


def test_copy_in_and_out_of_other_users_files(runner, store_dir, busybox_root):
    found = runner(check_copy_in_and_out, store_dir, busybox_root)
    read, after, seen, archived, missing, kept, exported, archived_root = found
    assert read == b"" and after == b"secret\n"
    assert seen == ["in", "f", "/data/locked/put 0 0", "/data/locked/sub/f 0 0"]
    assert archived == {"app": (1000, 1000), "app/own": (1000, 1000)}
    # docker export and cp of the root: other users' files in, mount points' contents out
    assert kept == b"kept"
    assert exported["home/app/own"] == (1000, 1000) and exported["data/locked/put"] == (0, 0)
    assert "proc" in exported and not any(n.startswith("proc/") for n in exported)
    assert archived_root == ["./home/app/own", "./proc"]
    assert missing == "FileNotFoundError"


def check_single_id_copy_and_commit(path, busybox_rootfs):
    """Only the caller's id mapped: a mode-000 directory still needs the container root's capabilities."""
    store = owner_image(path, busybox_rootfs)
    with sb.Container(image="owners:1", image_store=store.path) as c:
        c.write_file("/data/locked/put", b"in\n")
        read = c.read_file("/data/locked/put")
        c.run(["sh", "-c", "mkdir -m 000 /closed && echo x > /data/locked/made"])
        image = c.commit("owners:2")
    with tarfile.open(store.blobs.path(image.layers[-1].digest)) as tar:
        names = sorted(m.name for m in tar.getmembers())
    return read, names


def test_single_id_copy_and_commit(single_id_runner, single_store, busybox_root):
    read, names = single_id_runner(check_single_id_copy_and_commit, single_store, busybox_root)
    assert read == b"in\n"
    assert names == ["closed", "data", "data/locked", "data/locked/made", "data/locked/put"]


def check_worker_failure(path):
    from sandboxlib.images.unpack import IdPolicy
    from sandboxlib.runtime.subids import SandboxSubIdFiles

    tree = tempfile.mkdtemp(dir=path)
    with open(os.path.join(tree, "f"), "w"):
        pass
    policy = IdPolicy(squash=(os.getuid(), os.getgid()), sub=(100000, 100000, 10))
    try:  # container id 5000 is not in a range of 10: the kernel refuses the chown
        SandboxSubIdFiles().chown(tree, {os.stat(os.path.join(tree, "f")).st_ino: (5000, 5000, 0o644)}, policy)
    except sb.SetupError as err:
        return err.step, err.errno, str(err)


def test_a_failing_worker_is_a_setup_error(runner, store_dir):
    step, errno_, text = runner(check_worker_failure, store_dir)
    assert (step, errno_) == ("SUBIDS", 22)
    assert "chown" in text and "'f'" in text and "step SUBIDS" in text
