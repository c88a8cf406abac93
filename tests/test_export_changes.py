"""A writable layer kept across containers (``writable_dir=``), and what a
container changed and holds: ``changes()`` (docker diff), ``export()``
(docker export), ``path_stat()``; root and rootless."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading

import pytest

import sandboxlib as sb

from .imagekit import add_image, busybox_layers


def check_kept_layer_changes_and_export(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    kept = os.path.join(path, "kept-layer")
    found = {}
    with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as c:
        script = "echo 1 > /added; rm /etc/motd; mkdir -p /new/sub; echo x >> /etc/passwd; ln -s /nowhere /link"
        c.run(["sh", "-c", script], check=True)
        found["changes"] = c.changes()
        buf = io.BytesIO()
        c.export(buf)
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
            found["export"] = {m.name: m.type for m in tar.getmembers()}
        with tarfile.open(fileobj=io.BytesIO(c.get_archive("/"))) as tar:
            found["root archive"] = tar.getnames()
        link, target = c.path_stat("/link")
        found["stat"] = (stat.S_ISLNK(link.st_mode), target, stat.S_ISDIR(c.path_stat("/new")[0].st_mode))
    with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as c:  # the same layer again
        found["again"] = c.run(["sh", "-c", "cat /added; ls /etc/motd 2>&1; ls -d /new/sub"]).stdout
        found["changes again"] = c.changes()
    found["kept"] = os.path.isdir(os.path.join(kept, "upper"))
    store.remove_trees([kept])
    with sb.Container(image="bb:1", image_store=store.path, read_only=True) as c:
        found["read-only"] = c.changes()
    return found


def test_kept_layer_changes_and_export(runner, store_dir, busybox_root):
    found = runner(check_kept_layer_changes_and_export, store_dir, busybox_root)
    expected = [
        ("/added", 1),
        ("/etc", 0),
        ("/etc/motd", 2),
        ("/etc/passwd", 0),
        ("/link", 1),
        ("/new", 1),
        ("/new/sub", 1),
    ]
    assert found["changes"] == expected and found["changes again"] == expected
    export = found["export"]
    assert export["added"] == tarfile.REGTYPE and export["link"] == tarfile.SYMTYPE and "etc/motd" not in export
    assert export["proc"] == tarfile.DIRTYPE and not any(n.startswith(("proc/", "sys/", "dev/")) for n in export)
    assert "./added" in found["root archive"] and not any(n.startswith("./proc/") for n in found["root archive"])
    assert found["stat"] == (True, "/nowhere", True)
    assert found["again"].startswith(b"1\nls: /etc/motd: No such file or directory\n/new/sub\n")
    assert found["kept"] and found["read-only"] == []


def test_writable_dir_is_checked():
    for options in (
        {"writable_dir": "/x"},  # no image
        {"image": "x:1", "writable_dir": "relative"},
        {"image": "x:1", "writable_dir": "/x", "writable_layer": "tmpfs"},
        {"image": "x:1", "writable_dir": "/x", "read_only": True},
    ):
        with pytest.raises(sb.ConfigError) as err:
            sb.Container(**options)
        assert err.value.field == "writable_dir"


def check_write_archive_into_a_pipe(path, busybox_rootfs):
    """write_archive: get_archive's tar into a stream as it is made; rootless, a
    directory of another container user is archived by the sub-id sandbox at once
    (a pipe cannot be rewound for a second try)."""
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    with sb.Container(image="bb:1", image_store=store.path) as c:
        script = "mkdir /private; echo secret > /private/f; chown -R 1000:1000 /private; chmod 700 /private"
        c.run(["sh", "-c", script], check=True)
        reader, writer = os.pipe()

        def produce():
            with os.fdopen(writer, "wb") as f:
                c.write_archive("/private", f)

        thread = threading.Thread(target=produce)
        thread.start()
        with os.fdopen(reader, "rb") as f:
            data = f.read()
        thread.join()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: [m.uid, tar.extractfile(m).read().decode() if m.isfile() else None] for m in tar}


def test_write_archive_into_a_pipe(runner, store_dir, busybox_root):
    found = runner(check_write_archive_into_a_pipe, store_dir, busybox_root)
    assert found == {"private": [1000, None], "private/f": [1000, "secret\n"]}


def check_one_container_at_a_time_on_a_kept_layer(path, busybox_rootfs):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    kept = os.path.join(path, "kept-layer")
    found = {}
    with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as first:
        first.run(["sh", "-c", "echo first > /f"], check=True)
        try:
            with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept):
                found["second"] = "started"
        except sb.ConfigError as err:
            found["second"] = [err.field, str(err)]
        found["first"] = first.run(["sh", "-c", "echo again >> /f; cat /f"], stdout=sb.PIPE).stdout.decode()
    with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as after:  # its turn now
        found["after"] = after.run(["cat", "/f"], stdout=sb.PIPE).stdout.decode()
    store.remove_trees([kept])
    return found


def test_a_kept_layer_serves_one_container_at_a_time(runner, store_dir, busybox_root):
    """Two containers on one writable_dir at once: the kernel's overlayfs mounted the
    second on the first's upper dir ("undefined behavior", its log said) after the
    second's start had pulled the first's volatile markers.  The second is refused now."""
    found = runner(check_one_container_at_a_time_on_a_kept_layer, store_dir, busybox_root)
    assert found["second"][0] == "writable_dir" and "another running container" in found["second"][1]
    assert found["first"] == "first\nagain\n" and found["after"] == "first\nagain\n"


def _fds_on(path: str) -> int:
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass  # (the listing's own fd, closed)
    return found


def check_a_forked_child_does_not_keep_the_kept_layer(path, busybox_rootfs):
    """A child of os.fork() made while a container holds its kept layer: it has no fd of
    the layer's lock, so the layer is free once the container closes, the child alive."""
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs), ["bb:1"])
    kept = os.path.join(path, "kept-layer")
    reader, writer = os.pipe()
    report_reader, report_writer = os.pipe()
    with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as first:
        first.run(["sh", "-c", "echo first > /f"], check=True)
        child = os.fork()
        if child == 0:  # (the child only reports and waits: never back into the caller's code)
            try:
                os.close(writer)
                os.write(report_writer, b"%d" % _fds_on(os.path.realpath(kept)))
                os.close(report_writer)
                os.read(reader, 1)
            finally:
                os._exit(0)
    os.close(report_writer)
    try:
        with os.fdopen(report_reader, "rb") as f:
            copies_in_child = int(f.read())
        try:
            with sb.Container(image="bb:1", image_store=store.path, writable_dir=kept) as after:
                second = after.run(["cat", "/f"], stdout=sb.PIPE).stdout.decode()
        except sb.ConfigError as err:
            second = str(err)
    finally:
        os.close(writer)  # the child ends
        os.close(reader)
        os.waitpid(child, 0)
    store.remove_trees([kept])
    return copies_in_child, second


def test_a_forked_child_does_not_keep_the_kept_layer(runner, store_dir, busybox_root):
    """The layer's flock was on an fd a fork's child inherited (O_CLOEXEC covers exec only):
    the child kept the layer locked after the container closed ("another running container")."""
    copies_in_child, second = runner(check_a_forked_child_does_not_keep_the_kept_layer, store_dir, busybox_root)
    assert (copies_in_child, second) == (0, "first\n")
