"""Copying files into and out of a running container (root and rootless):
write_file, read_file, put_archive, get_archive; symlinks in the container
never lead out of its root; hostile archives are refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

import sandboxlib as sb
from sandboxlib.errors import ContainerStateError, ImageFormatError

from .imagekit import add_image, busybox_layers, layer_tar


def check_copy(path, busybox_rootfs, host_dir):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    found = {}
    with sb.Container(image="bb:1", image_store=store.path) as c:
        c.write_file("/app/x.txt", b"hi\n", mode=0o600)
        found["x"] = c.run(["sh", "-c", "cat /app/x.txt; stat -c '%u %a' /app/x.txt"]).stdout
        found["read"] = c.read_file("/etc/motd")
        c.run(["sh", "-c", f"ln -s / /app/up && ln -s ../../../../..{host_dir} /app/rel && mkdir -p {host_dir}"])
        c.write_file("/app/up/tmp/escape", b"inside\n")  # the container's /tmp
        c.write_file("/app/rel/escape2", b"inside\n")  # under its root, never the host's
        found["escapes"] = c.run(["sh", "-c", f"cat /tmp/escape {host_dir}/escape2"]).stdout
        c.put_archive("/app", layer_tar({"in/": "dir/", "in/f": b"from tar\n", ".wh.keep": b"plain name\n"}))
        found["put"] = c.run(["sh", "-c", "cat /app/in/f /app/.wh.keep; stat -c %u /app/in/f"]).stdout
        try:
            c.put_archive("/app", layer_tar({"../../evil": b"x"}))
        except ImageFormatError as err:
            found["hostile"] = str(err)
        with tarfile.open(fileobj=io.BytesIO(c.get_archive("/app")), mode="r") as tar:
            found["get"] = {m.name: (m.type, m.linkname, m.uid) for m in tar.getmembers()}
            found["get x"] = tar.extractfile("app/x.txt").read()
    found["host"] = sorted(os.listdir(host_dir))
    try:
        c.read_file("/etc/motd")
    except ContainerStateError:
        found["closed"] = True
    return found


def test_copy_in_and_out(runner, store_dir, busybox_root, shared_dir):
    host_dir = shared_dir / f"host-{runner.mode}"
    host_dir.mkdir()
    os.chmod(host_dir, 0o777)
    try:
        found = runner(check_copy, store_dir, busybox_root, str(host_dir))
    finally:
        listing = sorted(os.listdir(host_dir))
        os.rmdir(host_dir) if not listing else None
    assert listing == [] and found["host"] == []  # nothing reached the host
    assert found["x"] == b"hi\n0 600\n" and found["read"] == b"motd 3\n"
    assert found["escapes"] == b"inside\ninside\n"
    assert found["put"] == b"from tar\nplain name\n0\n"
    assert "'..'" in found["hostile"]
    assert found["get"]["app/up"] == (tarfile.SYMTYPE, "/", 0)
    assert found["get"]["app/in/f"][0] == tarfile.REGTYPE and found["get"]["app"][0] == tarfile.DIRTYPE
    assert found["get x"] == b"hi\n" and found["closed"]


def test_copy_needs_a_running_container():
    c = sb.Container()
    with pytest.raises(ContainerStateError):
        c.write_file("/tmp/x", b"")
    with sb.Container() as c:
        with pytest.raises(sb.ConfigError) as err:
            c.read_file("relative")
        assert err.value.field == "path"
        with pytest.raises(FileNotFoundError):
            c.read_file("/nonexistent-sbx")


# -- commit -----------------------------------------------------------------------------
def check_commit(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"], config={"Cmd": ["sh"], "Env": ["A=1"]})
    with sb.Container(image="bb:1", image_store=store.path) as c:
        c.run(
            [
                "sh",
                "-c",
                "echo v2 > /etc/motd; rm -r /app; mkdir -p /srv/data; echo d > /srv/data/f;"
                "rm /bin/ls; ln -s /srv/data /data; mkdir /etc/opq; echo o > /etc/opq/o",
            ]
        )
        img = c.commit(
            "bb:2",
            changes={
                "cmd": ["sh", "-c", "cat /etc/motd /data/f; ls /app /bin/ls 2>&1; echo $A$B"],
                "env": ["A=1", "B=2"],
            },
        )
    r = sb.run(None, image="bb:2", image_store=store.path)
    with sb.Container(image="bb:2", image_store=store.path) as c:
        again = c.commit("bb:3")  # nothing written: an empty layer
    return (
        len(img.layers),
        img.references,
        r.stdout.decode(),
        r.stderr.decode(),
        len(again.layers),
        store.get("bb:1").references,
    )


def test_commit_makes_an_image_that_runs(runner, store_dir, busybox_root):
    layers, refs, out, err, again, old_refs = runner(check_commit, store_dir, busybox_root)
    assert layers == 4 and refs == ("bb:2",) and again == 5 and old_refs == ("bb:1",)
    assert out.splitlines()[:2] == ["v2", "d"], (out, err)
    assert "ls: /app: No such file or directory" in out and "ls: /bin/ls: No such file or directory" in out
    assert out.splitlines()[-1] == "12"


def test_commit_errors(tmp_path, busybox_root):
    store = sb.ImageStore(str(tmp_path))
    add_image(store, busybox_layers(busybox_root), ["bb:1"])
    with sb.Container() as c:
        with pytest.raises(ContainerStateError, match="image"):
            c.commit("x:1")
    with sb.Container(image="bb:1", image_store=store.path) as c:
        with pytest.raises(sb.ConfigError) as err:
            c.commit("x:1", changes={"healthcheck": ["CMD", "true"]})
        assert err.value.field == "changes['healthcheck']"
        with pytest.raises(sb.ConfigError):
            c.commit("Bad Ref")
    assert [i.references for i in store.list()] == [("bb:1",)]
    assert os.listdir(store.tmp) == []


def check_commit_of_an_image_that_cannot_run(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    before = sorted(os.listdir(store.blobs.dir))
    with sb.Container(image="bb:1", image_store=store.path) as c:
        assert c.run(["sh", "-c", "mkdir -p /srv && touch /srv/.wh."]).ok  # an empty whiteout name
        try:
            c.commit("bad:1")
        except sb.ImageFormatError as err:
            refused = str(err)
        else:
            refused = None
    return refused, [i.references for i in store.list()], sorted(os.listdir(store.blobs.dir)) == before


def test_commit_refuses_a_layer_that_could_never_run(runner, store_dir, busybox_root):
    """commit checks its layer as load() does: no image that fails at its first start."""
    refused, images, blobs_unchanged = runner(check_commit_of_an_image_that_cannot_run, store_dir, busybox_root)
    assert refused is not None and "writable layer" in refused and ".wh." in refused, refused
    assert images == [("bb:1",)] and blobs_unchanged


def check_parents_and_directories(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    found = {}
    with sb.Container(image="bb:1", image_store=store.path) as c:
        try:
            c.write_file("/app/new/x.txt", b"x")
        except FileNotFoundError as err:
            found["missing"] = (err.filename, "parents=True" in str(err))
        c.write_file("/app/new/x.txt", "h\u00e9", parents=True)
        c.write_file("/app/new/y.txt", b"y", parents=True)  # the directories exist now
        c.run(["sh", "-c", "mkdir -p /home/u && chown 1000:1000 /home/u && chmod 700 /home/u"])
        c.write_file("/home/u/a/b/z.txt", b"z", parents=True)  # under another user's 0700 directory
        found["made"] = c.run(
            [
                "sh",
                "-c",
                "cat /app/new/x.txt /app/new/y.txt /home/u/a/b/z.txt; "
                "stat -c '%n %u %a' /app /app/new /home/u/a /home/u/a/b",
            ]
        ).stdout
        for name in ("/app", "/"):
            try:
                c.read_file(name)
            except IsADirectoryError as err:
                found[f"read {name}"] = (err.filename, str(err))
    return found


def test_write_file_parents_and_read_file_of_a_directory(runner, store_dir, busybox_root):
    found = runner(check_parents_and_directories, store_dir, busybox_root)
    assert found["missing"] == ("/app/new/x.txt", True)
    assert found["made"] == ("h\u00e9yz/app 0 755\n/app/new 0 755\n/home/u/a 0 755\n/home/u/a/b 0 755\n").encode()
    assert found["read /app"] == ("/app", "[Errno 21] Is a directory: '/app'")
    assert found["read /"] == ("/", "[Errno 21] Is a directory: '/'")


def check_special_files(path, busybox_rootfs):
    """What a container can put where the host expects a file: its /dev's
    host device nodes, a fifo, a symlink to an endless device."""
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    found = {}
    with sb.Container(image="bb:1", image_store=store.path) as c:
        c.run(["sh", "-c", "mkfifo /tmp/fifo && ln -s /dev/zero /tmp/zeros && ln -s /dev/null /tmp/sink"])
        attempts = {
            "write /dev/null": lambda: c.write_file("/dev/null", b"x", mode=0o600),
            "write sink": lambda: c.write_file("/tmp/sink", b"x", mode=0o600),
            "write fifo": lambda: c.write_file("/tmp/fifo", b"x"),
            "read fifo": lambda: c.read_file("/tmp/fifo"),
            "read zeros": lambda: c.read_file("/tmp/zeros"),
            "archive fifo": lambda: c.get_archive("/tmp/fifo"),
            "archive zeros": lambda: c.get_archive("/tmp/zeros"),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                found[name] = "done"
            except OSError as err:
                found[name] = type(err).__name__
        found["still runs"] = c.run(["true"]).exit_code
    return found


def test_special_files_are_refused_and_host_devices_untouched(runner, store_dir, busybox_root):
    """Never chown/chmod a host device a container binds, never block on a
    fifo, never read an endless device: each is an error naming the path
    (the no_leaks fixture checks the host's device nodes)."""
    found = runner(check_special_files, store_dir, busybox_root)
    assert found == {
        "write /dev/null": "OSError",
        "write sink": "OSError",
        "write fifo": "OSError",
        "read fifo": "OSError",
        "read zeros": "OSError",
        "archive fifo": "OSError",
        "archive zeros": "OSError",
        "still runs": 0,
    }
