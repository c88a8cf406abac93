"""Idmapped bind mounts (issue 12): what the container's root writes into a
bound host directory belongs to the caller, root and rootless."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import pytest

import sandboxlib as sb
from sandboxlib import ConfigError, Mount

from .conftest import run_cli

WRITE = ["sh", "-c", "echo x > /work/new.txt && ls -n /work/old.txt"]


def check_write(idmap: bool) -> tuple:
    """(exit status, the new file's host owner or None, the caller's uid, what ls showed)."""
    tmp = tempfile.mkdtemp(prefix="sbx-idmap-")
    try:
        with open(os.path.join(tmp, "old.txt"), "w") as f:
            f.write("old")
        result = sb.run(WRITE, mounts=[Mount.bind(tmp, "/work", idmap=idmap)], stderr=sb.STDOUT)
        path = os.path.join(tmp, "new.txt")
        owner = os.stat(path).st_uid if os.path.exists(path) else None
        return result.exit_code, owner, os.getuid(), result.stdout.decode()
    finally:
        shutil.rmtree(tmp)


def test_idmapped_bind_writes_as_the_caller(runner):
    status, owner, caller, listing = runner(check_write, True)
    assert (status, owner) == (0, caller), listing
    # The host file the caller owns is the container root's inside.
    assert listing.split()[2:4] == ["0", "0"], listing


def test_plain_bind_as_root_writes_as_an_unprivileged_id():
    """Why idmap exists: as root the container's root is a high host id, refused a 0700 root-owned dir."""
    status, owner, _, listing = check_write(False)
    assert status != 0 and owner is None, listing
    assert "Permission denied" in listing


def test_cli_volume_idmap_option():
    tmp = tempfile.mkdtemp(prefix="sbx-idmap-")
    try:
        done = run_cli("-v", f"{tmp}:/work:rw,idmap", "--", "sh", "-c", "echo x > /work/new.txt")
        assert done.returncode == 0, done.stderr
        assert os.stat(os.path.join(tmp, "new.txt")).st_uid == os.getuid()
        bad = run_cli("-v", f"{tmp}:/work:idmapped", "--", "true")
        assert bad.returncode != 0 and b"idmap" in bad.stderr
    finally:
        shutil.rmtree(tmp)


def test_idmap_must_be_a_bool():
    with pytest.raises(ConfigError, match="idmap"):
        Mount.bind("/tmp", "/work", idmap="yes")


def test_a_file_system_that_cannot_be_idmapped_is_a_clear_error():
    """No silent fall-back to a plain bind (whose files would be the
    container root's unprivileged host id's): the mount fails, naming why."""
    with pytest.raises(sb.SetupError, match="cannot be idmapped") as caught:
        sb.run(["ls", "/x"], mounts=[Mount.bind("/sys/kernel/mm", "/x", idmap=True)])
    assert caught.value.field == "mounts[0]"


def test_many_idmapped_binds():
    """A root daemon idmaps every bind and volume: a container may have 32
    (their trees travel with one message); one more is a ConfigError."""
    top = tempfile.mkdtemp(prefix="sbx-idmap-many-")
    try:
        sources = [os.path.join(top, str(i)) for i in range(33)]
        for path in sources:
            os.mkdir(path, 0o700)
        mounts = [Mount.bind(path, f"/m/{i}", idmap=True) for i, path in enumerate(sources[:32])]
        result = sb.run(["sh", "-c", "for d in /m/*; do touch $d/new; done"], mounts=mounts, stderr=sb.STDOUT)
        assert result.exit_code == 0, result.stdout
        assert all(os.stat(os.path.join(p, "new")).st_uid == 0 for p in sources[:32])
        with pytest.raises(ConfigError, match="at most 32"):
            sb.run(["true"], mounts=[*mounts, Mount.bind(sources[32], "/m/32", idmap=True)])
    finally:
        shutil.rmtree(top)


def test_a_volume_is_mounted_as_it_was_made():
    """A volume made by a plain mount (a library container's, or a root daemon's
    before it idmapped volumes) holds the container root's shifted host id: an
    idmapped mount of it showed it as nobody's, and the container's root could not
    write there (found by the review).  It is bound as it was made."""
    name = "sbx-review-volume-" + os.urandom(4).hex()
    store = sb.ImageStore()
    try:
        for idmap in (False, True, False):  # made plainly, then asked idmapped, then plain again
            script = f"touch /v/by-{int(idmap)} && stat -c %u /v"
            result = sb.run(["sh", "-c", script], mounts=[Mount.volume(name, "/v", idmap=idmap)], stderr=sb.STDOUT)
            assert result.exit_code == 0 and result.stdout == b"0\n", (idmap, result.stdout)
    finally:
        with contextlib.suppress(ConfigError):
            store.remove_volume(name)
