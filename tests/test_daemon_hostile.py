"""The daemon against hostile requests and clients: fields of the wrong
size, type or shape are a 400 naming the field, nothing is made, and the
daemon goes on serving (found by the review of the daemon's health checks,
VolumesFrom, anonymous volumes, update and import)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from .daemonkit import Daemon, busybox_store


@pytest.fixture(scope="module")
def daemon():
    top = tempfile.mkdtemp(prefix="daemon-hostile-")
    os.chmod(top, 0o755)
    served = Daemon(top, busybox_store(os.path.join(top, "store")))
    yield served
    served.close()
    shutil.rmtree(top, ignore_errors=True)


def _containers(daemon) -> list:
    status, _, body = daemon.request("GET", "/containers/json?all=1")
    assert status == 200
    return json.loads(body)


@pytest.mark.parametrize("key", ["Interval", "Timeout", "StartPeriod"])
def test_a_health_check_duration_under_a_millisecond_is_refused(daemon, key):
    """Interval 1 (ns) ran the check back to back: the daemon spent a core on it.
    dockerd refuses durations under 1 ms (0 is the default)."""
    check = {"Test": ["CMD", "true"], key: 1}
    status, _, body = daemon.request(
        "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"], "Healthcheck": check}
    )
    assert status == 400 and f"Healthcheck.{key}" in json.loads(body)["message"]
    assert _containers(daemon) == []
