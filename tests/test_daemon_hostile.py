"""The daemon against hostile requests and clients: fields of the wrong
size, type or shape are a 400 naming the field, nothing is made, and the
daemon goes on serving; and what the review of the daemon's health checks,
VolumesFrom, anonymous volumes, update and import found besides."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import sandboxlib as sb

from . import rootless
from .conftest import wait_until
from .daemonkit import Daemon, private_daemon


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-hostile-") as served:
        yield served


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


def _daemon_in(directory: str, store: str, user=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "sandboxlib", "daemon", "--host", f"unix://{directory}/docker.sock"]
    argv += ["--store", store, "--default-network", "none"]
    return subprocess.run(
        argv if user is None else rootless.launcher(user, argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        cwd="/",
    )


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_a_socket_directory_another_user_may_change_is_refused(daemon, workers, shared_dir, who):
    """A daemon whose socket directory (or a parent) another user may write: they could
    put their own socket in its place (the victim's clients then talk to them: their
    registry credentials, their files) or swap its state directory for a symlink.
    The rootless default, /tmp/sandboxlib-UID/sandboxlib, is one when someone made
    /tmp/sandboxlib-UID first; the daemon made its directories and served on."""
    user = workers["sbxtest"].user if who == "rootless" else None
    other = workers["sbxtest"].user if who == "root" else None  # (rootless: root's, mode 0777)
    top = tempfile.mkdtemp(prefix="daemon-hostile-dir-", dir=str(shared_dir))
    os.chmod(top, 0o755)
    try:
        shared = os.path.join(top, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # anyone may rename what is in it (no sticky bit)
        mine = os.path.join(top, "theirs")
        os.mkdir(mine, 0o755)
        if other is not None:
            os.chown(mine, other.pw_uid, other.pw_gid)
        for directory in [shared, os.path.join(shared, "below")] + ([mine] if other is not None else []):
            refused = _daemon_in(directory, daemon.store, user)
            assert refused.returncode != 0 and b"another user could replace" in refused.stderr, refused.stderr
            assert not os.path.exists(os.path.join(directory, "docker.sock"))
        os.chmod(shared, 0o1777)  # sticky, as /tmp: nobody renames another's files
        if user is None:
            assert Daemon(shared, daemon.store).close() == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_docker_ps_shows_a_containers_health(daemon):
    """dockerd's Status: "Up 2 seconds (healthy)", "(health: starting)"; ours left the health out."""
    check = ["--health-cmd", "test -f /tmp/ok", "--health-interval", "200ms", "--health-start-period", "60s"]
    started = daemon.docker("run", "-d", *check, "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    name = started.stdout.decode().strip()
    try:

        def status() -> str:
            return daemon.docker("ps", "--filter", f"id={name}", "--format", "{{.Status}}").stdout.decode()

        assert status().endswith("(health: starting)\n"), status()
        assert daemon.docker("exec", name, "touch", "/tmp/ok").returncode == 0
        assert wait_until(lambda: status().endswith("(healthy)\n"))
    finally:
        daemon.docker("rm", "-f", name)


def test_a_health_checks_output_is_bounded_in_the_daemon(daemon):
    """The container decides what its check prints: all of it was held in the daemon
    (1.2 GB of RSS for 400 MB printed; ``cat /dev/zero`` until the timeout could have it
    OOM-killed).  Now the first 4096 bytes are kept and the rest dropped as it comes."""
    second = 1_000_000_000
    check = {"Test": ["CMD-SHELL", "yes xxxxxxx | head -c 300000000; exit 3"], "Interval": second // 2}
    body = {"Image": "busybox", "Cmd": ["sleep", "60"], "Healthcheck": {**check, "Timeout": 20 * second}}
    status, _, created = daemon.request("POST", "/containers/create", body)
    container = json.loads(created)["Id"]
    try:
        with open(f"/proc/{daemon.proc.pid}/clear_refs", "w") as f:
            f.write("5")  # (the peak RSS starts again from here)
        assert daemon.request("POST", f"/containers/{container}/start")[0] == 204

        def log() -> list:
            state = json.loads(daemon.request("GET", f"/containers/{container}/json")[2])["State"]
            return (state.get("Health") or {}).get("Log") or []

        assert wait_until(lambda: log(), seconds=60)
        assert log()[0]["ExitCode"] == 3 and log()[0]["Output"] == "xxxxxxx\n" * 512
        with open(f"/proc/{daemon.proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        assert peak < 150 << 10  # KiB
    finally:
        daemon.request("DELETE", f"/containers/{container}?force=1")


def test_an_empty_command_name_is_the_callers_error(daemon):
    """Cmd [""] (docker run busybox ""): the start was a 500, execve('') refused in
    step EXEC; an empty name is the request's mistake, named (the library's ConfigError)."""
    status, _, created = daemon.request("POST", "/containers/create", {"Image": "busybox", "Cmd": [""]})
    container = json.loads(created)["Id"]
    try:
        status, _, body = daemon.request("POST", f"/containers/{container}/start")
        assert status == 400 and b"argv[0]" in body, body
    finally:
        daemon.request("DELETE", f"/containers/{container}?force=1")
    with pytest.raises(sb.ConfigError) as err:
        sb.run(["", "x"])
    assert err.value.field == "argv[0]"


def _exec_start_unread(daemon, container: str, command: list, tty: bool = False) -> socket.socket:
    """An attached exec start whose client reads nothing, not even the 101."""
    status, _, body = daemon.request(
        "POST",
        f"/containers/{container}/exec",
        {"Cmd": command, "AttachStdout": True, "AttachStderr": True, "Tty": tty},
    )
    assert status == 201, body
    request = json.dumps({"Detach": False, "Tty": tty}).encode()
    client = socket.socket(socket.AF_UNIX)
    client.connect(daemon.socket)
    path = f"/exec/{json.loads(body)['Id']}/start"
    client.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: Upgrade\r\n"
        f"Upgrade: tcp\r\nContent-Length: {len(request)}\r\n\r\n".encode()
        + request
    )
    return client


def _exec_processes(daemon, container: str, command: str) -> int:
    """How many of the container's processes show ``command`` (busybox's applets: the shell's too)."""
    status, _, body = daemon.request("GET", f"/containers/{container}/top")
    assert status == 200, body
    return sum(row[-1] == command for row in json.loads(body)["Processes"])


def test_an_exec_whose_client_went_without_reading_ends_and_leaks_nothing(daemon):
    """A client that never read the 101 nor its output, then went: the exec's
    output was no longer read, so the command blocked on its full pipe for ever,
    its exec still running and the daemon holding its pipes (found by the review:
    20 such clients left 60 commands and 60 fds).  Its output is dropped now, as
    dockerd's; a detached start's is not even piped."""
    status, _, body = daemon.request("POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "600"]})
    container = json.loads(body)["Id"]
    try:
        assert daemon.request("POST", f"/containers/{container}/start")[0] == 204
        fds = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        clients = [_exec_start_unread(daemon, container, ["sh", "-c", "yes | head -c 3000000"]) for _ in range(5)]
        try:
            assert wait_until(
                lambda: _exec_processes(daemon, container, "sh -c yes | head -c 3000000") >= 5, seconds=10
            )
            assert daemon.request("GET", "/_ping", timeout=5)[0] == 200  # (serving meanwhile)
        finally:
            for client in clients:
                client.close()
        assert wait_until(lambda: _exec_processes(daemon, container, "sh -c yes | head -c 3000000") == 0, seconds=15)
        assert wait_until(lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) <= fds, seconds=5)
        # a detached start: no pipe that nobody reads
        status, _, body = daemon.request(
            "POST",
            f"/containers/{container}/exec",
            {"Cmd": ["sh", "-c", "yes | head -c 3000001"], "AttachStdout": True},
        )
        exec_id = json.loads(body)["Id"]
        assert daemon.request("POST", f"/exec/{exec_id}/start", {"Detach": True})[0] == 200
        done = lambda: not json.loads(daemon.request("GET", f"/exec/{exec_id}/json")[2])["Running"]  # noqa: E731
        assert wait_until(done, seconds=15)
    finally:
        daemon.request("DELETE", f"/containers/{container}?force=1")


def test_a_terminal_exec_whose_client_reads_nothing_is_held_back_then_ends(daemon):
    """A terminal's output was read as fast as the command wrote it into a queue
    without bound while the client read nothing (the daemon grew by all of it),
    and once the client went it was read no more (the command blocked for ever;
    found by the review).  Now the command waits on its full terminal while the
    client reads nothing, and ends once it has gone."""
    command = "yes | head -c 3000000"
    status, _, body = daemon.request("POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "600"]})
    container = json.loads(body)["Id"]
    try:
        assert daemon.request("POST", f"/containers/{container}/start")[0] == 204
        fds = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        client = _exec_start_unread(daemon, container, ["sh", "-c", command], tty=True)
        try:
            assert wait_until(lambda: _exec_processes(daemon, container, f"sh -c {command}") >= 1, seconds=10)
            time.sleep(4)  # (the first frame waits 2 s at most; unheld, 3 MB went in about a second)
            assert _exec_processes(daemon, container, f"sh -c {command}") >= 1  # held back
        finally:
            client.close()
        assert wait_until(lambda: _exec_processes(daemon, container, f"sh -c {command}") == 0, seconds=20)
        assert wait_until(lambda: len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) <= fds, seconds=5)
    finally:
        daemon.request("DELETE", f"/containers/{container}?force=1")
