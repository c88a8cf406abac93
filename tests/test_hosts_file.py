"""``extra_hosts`` off a bridge: a container on no network or the host's
gets an ``/etc/hosts`` of its own (the localhost lines, or the host's file,
then the extra hosts), held while it lives and removed with it, root and
rootless; without ``extra_hosts`` nothing is made."""

from __future__ import annotations

import os
import shutil
import tempfile

import sandboxlib as sb
from sandboxlib.network.files import network_dir
from sandboxlib.runtime import statedir

from .conftest import make_busybox_rootfs

NO_STDIN = {"stdin": sb.DEVNULL}
EXTRA = {"db.local": "10.0.0.5", "hello.world.test": "127.0.0.1"}


def _files_dirs() -> list:
    top = os.path.join(network_dir(statedir.state_root()), "files")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def check_extra_hosts_off_a_bridge(rootfs: str) -> dict:
    out = {}
    before = _files_dirs()
    r = sb.run(["cat", "/etc/hosts"], network="none", extra_hosts=EXTRA, **NO_STDIN)
    out["none"] = r.stdout.decode()
    r = sb.run(["cat", "/etc/hosts"], network="host", extra_hosts=EXTRA, **NO_STDIN)
    out["host"] = r.stdout.decode()
    with sb.Container(rootfs=rootfs, extra_hosts={"db.local": "10.0.0.5"}) as c:
        out["rootfs"] = c.run(["ping", "-c1", "-W1", "db.local"], **NO_STDIN).stdout.decode().splitlines()[0]
        out["held"] = _files_dirs() != before
    out["left"] = sorted(set(_files_dirs()) - set(before))
    out["plain"] = sb.run(["cat", "/etc/hosts"], network="none", **NO_STDIN).stdout.decode()
    return out


def test_extra_hosts_off_a_bridge(runner, shared_dir):
    rootfs = make_busybox_rootfs(tempfile.mkdtemp(dir=str(shared_dir)))
    os.chmod(rootfs, 0o755)
    open(os.path.join(rootfs, "etc", "hosts"), "w").close()  # (the mount point: rootless may not make it there)
    out = runner(check_extra_hosts_off_a_bridge, rootfs)
    assert out["none"] == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        "10.0.0.5\tdb.local\n127.0.0.1\thello.world.test\n"
    ), out
    with open("/etc/hosts") as f:
        assert out["host"] == f.read() + "10.0.0.5\tdb.local\n127.0.0.1\thello.world.test\n", out
    assert out["rootfs"].startswith("PING db.local (10.0.0.5)"), out
    assert out["held"] and out["left"] == [], out
    assert "db.local" not in out["plain"], out
    shutil.rmtree(rootfs)


def check_update_hosts() -> dict:
    out = {}
    with sb.Container(network="none", extra_hosts=EXTRA) as c:
        c.update_hosts({"db.local": "10.0.0.9", "new.test": "10.0.0.7"})
        out["updated"] = c.run(["cat", "/etc/hosts"], stdout=sb.PIPE, **NO_STDIN).stdout.decode()
        c.update_hosts({"new.test": "10.0.0.8"})
        out["again"] = c.run(["cat", "/etc/hosts"], stdout=sb.PIPE, **NO_STDIN).stdout.decode()
        try:
            c.update_hosts({"bad name": "10.0.0.1"})
        except sb.ConfigError as err:
            out["bad"] = err.field
    with sb.Container(network="none") as c:
        try:
            c.update_hosts({"db.local": "10.0.0.9"})
        except sb.ConfigError as err:
            out["none"] = str(err)
    try:
        c.update_hosts({"db.local": "10.0.0.9"})
    except sb.ContainerStateError:
        out["closed"] = True
    return out


def test_update_hosts(runner):
    """A running container's extra hosts lines set anew (the daemon's legacy links
    follow the linked container's restart at another address with it)."""
    out = runner(check_update_hosts)
    localhost = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    assert out["updated"] == localhost + "10.0.0.9\tdb.local\n127.0.0.1\thello.world.test\n10.0.0.7\tnew.test\n"
    assert out["again"] == localhost + "10.0.0.9\tdb.local\n127.0.0.1\thello.world.test\n10.0.0.8\tnew.test\n"
    assert out["bad"].startswith("extra_hosts") and "no /etc/hosts of ours" in out["none"] and out["closed"]
