"""A root directory without /proc, /dev, /sys (issue 12): the caller makes
them, as Docker does; when it may not, one error names them all."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import sandboxlib as sb

from .conftest import make_busybox_rootfs

POINTS = ("proc", "dev", "sys")


def _bare_root(parent: str) -> str:
    root = make_busybox_rootfs(os.path.join(parent, "root"))
    for name in POINTS:
        os.rmdir(os.path.join(root, name))
    return root


def check_made(parent: str) -> tuple:
    root = _bare_root(parent)
    result = sb.run(["sh", "-c", "ls -d /proc/self /dev/null /sys/kernel"], rootfs=root)
    return result.exit_code, result.stdout, sorted(n for n in os.listdir(root) if n in POINTS)


def test_missing_mount_points_are_made(runner):
    parent = tempfile.mkdtemp(prefix="sbx-points-")
    os.chmod(parent, 0o777)
    try:
        status, out, made = runner(check_made, parent)
        assert status == 0, out
        assert made == sorted(POINTS)
    finally:
        shutil.rmtree(parent)


def check_refused(root: str) -> str:
    with pytest.raises(sb.ConfigError) as caught:
        sb.run(["true"], rootfs=root)
    return str(caught.value)


def test_mount_points_the_caller_may_not_make_are_named_at_once(workers):
    parent = tempfile.mkdtemp(prefix="sbx-points-")
    os.chmod(parent, 0o755)
    try:
        root = _bare_root(parent)  # root's, 0755: the rootless user may not write it
        message = workers["sbxtest"].call(check_refused, root)[0]
        assert "rootfs" in message
        for name in POINTS:
            assert f"/{name} (Permission denied)" in message, message
    finally:
        shutil.rmtree(parent)
