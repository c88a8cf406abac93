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
        c.write_file("/app/up/tmp/escape", b"inside\n")              # the container's /tmp
        c.write_file(f"/app/rel/escape2", b"inside\n")               # under its root, never the host's
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
    assert listing == [] and found["host"] == []             # nothing reached the host
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
