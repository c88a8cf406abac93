"""An image container's writable layer (root and rootless): on disk in the
store by default (``containers/ID/upper``), on a tmpfs when asked, removed
when the container closes or fails to start, and swept by the next start
when its owner was SIGKILLed, also what the container's other users (your
sub-ids, rootless) wrote there in directories closed to you."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError
from sandboxlib.native.host import subordinate_range
from sandboxlib.runtime import statedir

from .conftest import expire_sweep_stamp, rootless, run_cli, wait_until
from .test_images_run import _store

WRITE = "echo hi > /etc/x && mkdir -p /var/new && echo kept > /var/new/f && echo ok"
UPPER_OPTION = "upperdir="


def _containers(store) -> list:
    top = os.path.join(store.path, "containers")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def _upperdir(mounts: str) -> tuple:
    """The overlay root's upperdir option in the container's /proc/mounts,
    and whether it is volatile (never synced)."""
    line = next(line for line in mounts.splitlines() if line.split()[1] == "/")
    options = line.split()[3].split(",")
    volatile = "volatile" in options or "fsync=volatile" in options  # newer kernels print the latter
    return next(o for o in options if o.startswith(UPPER_OPTION))[len(UPPER_OPTION) :], volatile


def check_disk_by_default(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    with sb.Container(image="bb:1", image_store=store.path) as c:
        wrote = c.run(["sh", "-c", WRITE]).stdout
        seen = c.run(["sh", "-c", "cat /etc/x /var/new/f"]).stdout
        upper = os.path.join(store.path, "containers", c.id, "upper")
        with open(os.path.join(upper, "var", "new", "f")) as f:
            on_disk = f.read(), os.stat(os.path.join(upper, "etc", "x")).st_uid
        mounts = c.run(["cat", "/proc/mounts"]).stdout.decode()
        during = _containers(store)
        committed = c.commit("bb:disk")
        # a directory of another container user, closed to everyone else (rootless:
        # a sub-id's, which you cannot read or delete yourself)
        app = c.run(["sh", "-c", "mkdir /tmp/a && echo x > /tmp/a/f && chmod 700 /tmp/a && id -u"], user="app")
        container_id = c.id
    again = sb.run(["sh", "-c", "cat /etc/x; [ -e /tmp/a ] || echo no-a"], image="bb:disk", image_store=store.path)
    return (
        wrote,
        seen,
        on_disk,
        _upperdir(mounts),
        upper,
        during == [container_id],
        app.stdout,
        len(committed.layers),
        again.stdout,
        _containers(store),
        os.listdir(os.path.join(store.path, "leases")),
    )


def test_writes_go_to_the_store_and_persist_across_commands(runner, store_dir, busybox_root):
    (wrote, seen, on_disk, upperdir, upper, one_dir, app, layers, again, after, leases) = runner(
        check_disk_by_default, store_dir, busybox_root
    )
    assert wrote == b"ok\n" and seen == b"hi\nkept\n"
    # on disk, owned by the container root's host id, and the overlay's upper is that directory
    assert on_disk == ("kept\n", pwd.getpwnam("sbxtest").pw_uid if runner.rootless else 1_000_000_000)
    assert upperdir[0].endswith(upper) and upper.startswith(store_dir + "/containers/") and one_dir
    assert upperdir[1]  # never synced: it is removed with the container
    assert app == b"1000\n" and layers == 4 and again == b"hi\nno-a\n"  # commit reads the disk upper
    assert after == [] and leases == []  # removed with the container, sub-id files too


def check_tmpfs(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    with sb.Container(image="bb:1", image_store=store.path, writable_layer="tmpfs") as c:
        wrote = c.run(["sh", "-c", WRITE]).stdout
        mounts, during = c.run(["cat", "/proc/mounts"]).stdout.decode(), _containers(store)
        c.commit("bb:tmpfs")
    again = sb.run(["cat", "/var/new/f"], image="bb:tmpfs", image_store=store.path).stdout
    r = sb.run(
        ["sh", "-c", "head -c 3000000 /dev/zero > /big; echo $?; wc -c < /big"],
        image="bb:1",
        image_store=store.path,
        writable_layer=sb.WritableLayer.TMPFS,
        writable_layer_size="1M",
    )
    return wrote, _upperdir(mounts), during, again, r.stdout.split(), r.stderr.decode(), _containers(store)


def test_tmpfs_writable_layer_and_its_size_limit(runner, store_dir, busybox_root):
    wrote, upperdir, during, again, big, err, after = runner(check_tmpfs, store_dir, busybox_root)
    assert wrote == b"ok\n" and upperdir == (
        "/tmp/overlay/upper",
        False,
    )  # (the scratch base at /tmp) and during == [] and after == []
    assert again == b"kept\n"
    assert big[0] == b"1" and int(big[1]) <= 1 << 20 and "head:" in err  # the write failed at 1 MiB


def test_size_limit_needs_the_tmpfs():
    with pytest.raises(ConfigError) as err:
        sb.Container(image="x:1", writable_layer_size="1M")
    assert err.value.field == "writable_layer_size" and "writable_layer='tmpfs'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        sb.Container(image="x:1", writable_layer="tmpfs", writable_layer_size="lots")
    assert err.value.field == "writable_layer_size"


def check_read_only(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    with sb.Container(image="bb:1", image_store=store.path, read_only=True) as c:
        r = c.run(["sh", "-c", "cat /etc/motd; touch /etc/x"])
        during = _containers(store)
    return r.exit_code, r.stdout, r.stderr.decode(), during


def test_a_read_only_root_has_no_directory_on_disk(runner, store_dir, busybox_root):
    code, out, err, during = runner(check_read_only, store_dir, busybox_root)
    assert code == 1 and out == b"motd 3\n" and "Read-only file system" in err and during == []


def check_failed_starts(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    failures = []
    for options in (
        {"user": "nosuchuser-sbx"},  # ConfigError in Python
        {"mounts": [sb.Mount.bind("/etc/passwd", "/etc/motd/x")]},
    ):  # SetupError in sbx-init
        try:
            sb.run(["true"], image="bb:1", image_store=store.path, **options)
        except (sb.ConfigError, sb.SetupError) as err:
            failures.append((type(err).__name__, err.field))
    return failures, _containers(store), os.listdir(os.path.join(store.path, "leases"))


def test_a_failed_start_removes_the_writable_layer(runner, store_dir, busybox_root):
    failures, after, leases = runner(check_failed_starts, store_dir, busybox_root)
    assert failures == [("ConfigError", "user"), ("SetupError", "mounts[0]")]
    assert after == [] and leases == []


# -- a SIGKILLed owner ---------------------------------------------------------------
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
import sandboxlib as sb
c = sb.Container(image="bb:1", image_store={store!r})
c.start()
# as the container's root: a mode 000 directory with files; as uid 1000 (a
# sub-id's, rootless): a 0700 directory with a mode 000 one and a file in it
assert c.run(["sh", "-c", "mkdir -p /zero/sub && echo x > /zero/sub/f && chmod 000 /zero"]).exit_code == 0
assert c.run(["sh", "-c", "mkdir -p /tmp/a/none && echo x > /tmp/a/f && chmod 000 /tmp/a/none && chmod 700 /tmp/a"],
             user="app").exit_code == 0
print(c.pid, c.id, flush=True)
time.sleep(600)
"""


def _start_holder(store: str):
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=rootless.import_path(), store=store)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )


def _ended(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def check_killed_owner(path, busybox_rootfs):
    store = _store(path, busybox_rootfs)
    holder = _start_holder(store.path)
    try:
        line = holder.stdout.readline()
        assert line, "the holder process failed"
        init, container_id = line.split()
        upper = os.path.join(store.path, "containers", container_id.decode(), "upper")
        while_alive = store.sweep_writable(), os.path.isdir(upper)  # a live owner's is kept
        holder.send_signal(signal.SIGKILL)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    gone = wait_until(lambda: _ended(int(init)))  # its init follows its owner
    left = _containers(store), os.stat(os.path.join(upper, "tmp", "a")).st_uid
    try:
        os.listdir(os.path.join(upper, "tmp", "a"))
        closed = False
    except PermissionError:
        closed = True
    expire_sweep_stamp(os.path.join(store.path, ".writable-swept"))  # the holder's start swept just now
    r = sb.run(["cat", "/etc/motd"], image="bb:1", image_store=store.path)  # the next start sweeps it
    statedir.sweep(statedir.state_root())  # the dead owner's state record (the start sweeps it once a second)
    return (
        while_alive,
        gone,
        left,
        closed,
        r.stdout,
        _containers(store),
        os.listdir(os.path.join(store.path, "leases")),
    )


def test_a_killed_owners_writable_layer_is_swept_by_the_next_start(runner, store_dir, busybox_root):
    while_alive, gone, (left, owner), closed, out, after, leases = runner(check_killed_owner, store_dir, busybox_root)
    assert while_alive == (0, True) and gone and len(left) == 1
    # uid 1000 inside: host root's shifted id, or a sub-id the rootless owner cannot read as itself
    user = pwd.getpwnam("sbxtest")
    sub_start = subordinate_range("/etc/subuid", user.pw_name, user.pw_uid)[0]
    assert owner == (sub_start + 999 if runner.rootless else 1_000_001_000)
    assert closed == runner.rootless
    assert out == b"motd 3\n" and after == [] and leases == []


def test_collect_removes_what_a_dead_owner_left(tmp_path, busybox_root):
    store = _store(str(tmp_path), busybox_root)
    left = store.writable_dir("f" * 64, (0, 0))  # as a SIGKILLed owner leaves it: no lease
    open(os.path.join(left, "upper", "junk"), "w").close()
    store.collect()
    assert _containers(store) == []


def test_cli_writable_layer_options(tmp_path, busybox_root):
    store = _store(str(tmp_path), busybox_root)
    probe = ["sh", "-c", "grep ' / overlay ' /proc/mounts"]
    disk = run_cli("--store", store.path, "bb:1", *probe)
    tmpfs = run_cli(
        "--store",
        store.path,
        "--writable-layer",
        "tmpfs",
        "--writable-layer-size",
        "1M",
        "bb:1",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero > /big; wc -c < /big",
    )
    bad = run_cli("--store", store.path, "--writable-layer-size", "1M", "bb:1", "true")
    assert disk.returncode == 0 and f"{UPPER_OPTION}{store.path}/containers/" in disk.stdout.decode()
    assert int(tmpfs.stdout) <= 1 << 20 and b"head:" in tmpfs.stderr
    assert bad.returncode == 125 and b"--writable-layer-size: only a tmpfs writable layer" in bad.stderr
    assert _containers(store) == []
