"""User mounts whose target leads, through a symlink in the container's root,
onto the container's kernel file systems (/proc, /sys, /dev/pts) or onto
/dev itself.  ``config/mounts.py`` refuses those paths as written, but cannot see a
symlink in a rootfs directory or an image (``/data -> /proc``): the child
checks where the target resolves and refuses it (EXDEV, a ``SetupError``
naming the mount and its config field), before it creates anything there."""

from __future__ import annotations

import errno
import os

import sandboxlib as sb
from sandboxlib import Mount
from sandboxlib.images import ImageStore

from .conftest import make_busybox_rootfs
from .imagekit import add_image, busybox_layers, layer_tar
from .test_isolation import open_dir  # noqa: F401

LINKS = {
    "mnt": "/proc",
    "mnt2": "/sys/fs/cgroup",
    "mnt4": "/",
    "mnt5": "/dev",
    "mnt6": "/sys",
    "srv/pts": "/dev/pts",
    "data": "/srv/data",
}
# (kind, target): each resolves onto or under a kernel file system, or onto /dev.
REFUSED = [
    ("tmpfs", "/mnt"),  # /proc
    ("bind", "/mnt/sys"),  # /proc/sys, which exists
    ("bind", "/mnt/new"),  # a mount point that would be made in /proc
    ("tmpfs", "/mnt2"),  # /sys/fs/cgroup of the root directory: sysfs comes later
    ("bind", "/mnt2/new"),  # ... and nothing is made there
    ("tmpfs", "/mnt6"),  # /sys
    ("tmpfs", "/srv/pts"),  # /dev/pts (devpts)
    ("tmpfs", "/mnt4/proc"),  # a parent of /proc: /mnt4 -> /
    ("bind", "/mnt4/sys/fs"),
    ("tmpfs", "/mnt5"),  # /dev itself
    ("tmpfs", "/mnt5/pts"),
]
# Symlinks elsewhere keep working, also through /dev to what may be covered.
ACCEPTED = [("tmpfs", "/data"), ("tmpfs", "/mnt5/shm"), ("tmpfs", "/mnt4/srv/data/sub")]


def _mount(kind: str, target: str, source: str) -> Mount:
    return Mount.bind(source, target) if kind == "bind" else Mount.tmpfs(target)


def make_linked_root(base: str) -> str:
    rootfs = make_busybox_rootfs(f"{base}/root")
    for path in ("sys/fs/cgroup", "srv/data/sub"):
        os.makedirs(f"{rootfs}/{path}")
    for name, dest in LINKS.items():
        os.symlink(dest, f"{rootfs}/{name}")
    return rootfs


def _tree(path: str) -> list:
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files)


def check_targets(rootfs: str, source: str, cases: list) -> dict:
    """target -> (errno, field, message) of the refusal, or 'ok' and what the
    target shows (a fresh tmpfs is empty, a bind shows the source's file)."""
    found = {}
    for kind, target in cases:
        try:
            with sb.Container(rootfs=rootfs, read_only=True, mounts=[_mount(kind, target, source)]) as c:
                r = c.run(
                    ["sh", "-c", 'ls -A "$1" && test -r /proc/self/status && test -c /dev/pts/ptmx', "sh", target],
                    stdin=sb.DEVNULL,
                )
                found[target] = ("ok", r.exit_code, r.stdout.decode())
        except sb.SetupError as err:
            found[target] = (err.errno, err.field, str(err))
    return found


def test_targets_through_symlinks_onto_kernel_file_systems_are_refused(runner, open_dir):
    rootfs = make_linked_root(open_dir)
    source = f"{open_dir}/src"
    os.mkdir(source)
    open(f"{source}/from-src", "w").close()
    before = _tree(rootfs)
    found = runner(check_targets, rootfs, source, REFUSED + ACCEPTED)
    for _kind, target in REFUSED:
        err, field, text = found[target]
        assert (err, field) == (errno.EXDEV, "mounts[0]"), (target, found[target])
        assert f"target={target!r}" in text and "resolved in the container's root" in text, text
    assert {t: found[t] for _, t in ACCEPTED} == {t: ("ok", 0, "") for _, t in ACCEPTED}, found
    assert _tree(rootfs) == before  # nothing made in the root directory


def check_image_targets(path: str, busybox_rootfs: str) -> tuple:
    store = ImageStore(path)
    base = busybox_layers(busybox_rootfs)[0]
    add_image(store, [base, layer_tar({"mnt": "->/proc", "mnt4": "->/", "data": "->/proc/self"})], ["links:1"])
    found = {}
    for target in ("/mnt", "/mnt4/proc", "/data"):
        try:
            sb.run(["true"], image="links:1", image_store=store.path, mounts=[Mount.tmpfs(target)])
            found[target] = "started"
        except sb.SetupError as err:
            found[target] = (err.errno, err.field)
    return found, os.listdir(os.path.join(store.path, "leases"))


def test_image_symlink_onto_proc_is_refused(runner, store_dir, busybox_root):
    found, leases = runner(check_image_targets, store_dir, busybox_root)
    assert found == dict.fromkeys(("/mnt", "/mnt4/proc", "/data"), (errno.EXDEV, "mounts[0]")), found
    assert leases == []


def check_kernel_fs_elsewhere() -> tuple:
    # Not below /proc by path: the host's proc, bound by an earlier mount.
    mounts = [Mount.bind("/proc", "/hostproc", read_only=True), Mount.tmpfs("/hostproc/sys")]
    try:
        sb.run(["true"], mounts=mounts)
    except sb.SetupError as err:
        return err.errno, err.field, str(err)
    return "started"


def test_target_on_a_kernel_file_system_elsewhere_is_refused(runner):
    err, field, text = runner(check_kernel_fs_elsewhere)
    assert (err, field) == (errno.EXDEV, "mounts[1]"), text
    assert "target='/hostproc/sys'" in text and "flags=NOSUID|NODEV)" in text, text
