"""The image store is its owner's alone (root and rootless): another local
user reaches no unpacked layer (as root: setuid files of the containers'
root's host id), writable layer or volume; a store others can enter is
made private when opened, another user's store is refused."""

from __future__ import annotations

import io
import logging
import os
import pwd
import shutil
import subprocess
import tarfile

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError

from .conftest import BUSYBOX
from .imagekit import add_image
from .test_images_run import _store

OTHER = "sbxsingle"  # a second local user (made by the test session)
ID = shutil.which("id")


def _as_other(*argv: str) -> subprocess.CompletedProcess:
    """``argv`` run by a shell of the other user (as a local user would run it)."""
    user = pwd.getpwnam(OTHER)
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            BUSYBOX,
            "sh",
            "-c",
            '"$@"',
            "sh",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


def _setuid_layer() -> bytes:
    """The host's ``id`` as a 04755 file (run on the host, it prints its owner as euid)."""
    info = tarfile.TarInfo("suid-id")
    with open(ID, "rb") as f:
        data = f.read()
    info.size, info.mode = len(data), 0o4755
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def check_store_paths(path, busybox_rootfs):
    """The paths into the store a container had: its layers, writable layers, a volume."""
    store = _store(path, busybox_rootfs)
    add_image(store, [_setuid_layer()], ["suid:1"])
    layer = store.unpacked("suid:1")[0]
    r = sb.run(
        ["sh", "-c", "echo x > /data/f"],
        image="bb:1",
        image_store=store.path,
        mounts=[sb.Mount.volume("data", "/data")],
    )
    assert r.exit_code == 0, r
    return {
        "suid": os.path.join(layer, "suid-id"),
        "layers": os.path.join(store.path, "layers"),
        "containers": os.path.join(store.path, "containers"),
        "volume": os.path.join(store.volume("data"), "f"),
    }


def test_other_users_reach_nothing_in_the_store(runner, store_dir, busybox_root):
    paths = runner(check_store_paths, store_dir, busybox_root)
    tries = {
        "run the setuid file": [paths["suid"]],
        "list the layers": [BUSYBOX, "ls", paths["layers"]],
        "list the writable layers": [BUSYBOX, "ls", paths["containers"]],
        "read a volume": [BUSYBOX, "cat", paths["volume"]],
    }
    for name, argv in tries.items():
        r = _as_other(*argv)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (name, r.stdout, r.stderr)
    st = os.stat(paths["suid"])
    if not runner.rootless:  # as root the bit is kept (the container needs it): only the store's mode hides it
        assert st.st_mode & 0o4000 and st.st_uid == 1_000_000_000


def check_reopen(path):
    store = sb.ImageStore(path)
    for sub in ("", "layers", "images"):
        os.chmod(os.path.join(path, sub), 0o755)
    with _logged() as records:
        sb.ImageStore(path)
    return [oct(os.stat(os.path.join(path, sub)).st_mode & 0o777) for sub in ("", "layers", "images")], records


class _logged(logging.Handler):
    def __enter__(self):
        self.records = []
        logging.getLogger("sandboxlib").addHandler(self)
        return self.records

    def __exit__(self, *exc):
        logging.getLogger("sandboxlib").removeHandler(self)

    def emit(self, record):
        self.records.append(record.getMessage())


def test_a_store_others_can_enter_is_made_private(runner, store_dir):
    modes, records = runner(check_reopen, store_dir)
    assert modes == ["0o700"] * 3
    assert len(records) == 3 and f"{store_dir} had mode 0755" in records[0] and "made it 0700" in records[0]


def test_another_users_store_is_refused(tmp_path):
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    user = pwd.getpwnam(OTHER)
    os.chown(path, user.pw_uid, user.pw_gid)
    with pytest.raises(ConfigError) as err:
        sb.ImageStore(str(path))
    assert err.value.field == "path" and str(path) in str(err.value)
    assert f"owned by uid {user.pw_uid}, mode 0700" in str(err.value)
