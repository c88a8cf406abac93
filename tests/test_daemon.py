"""The daemon (``sandboxlib daemon``), driven by the real ``docker`` CLI
over its UNIX socket: the socket's permissions and lock, ``_ping`` and the
API versions, Docker-shaped errors for bad input (the daemon lives on),
``docker run --rm``, ``run -d``/logs/exec/ps/inspect/stop/kill/rm, images
(save/load/tag/rmi, pull from a local registry), and the daemon's stop
stopping its containers.  One daemon is shared by the module."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile

import psutil
import pytest

from .conftest import wait_until
from .daemonkit import Daemon, busybox_store
from .registryd import Registry

GROUP = "sbxdaemontest"


@pytest.fixture(scope="module")
def daemon():
    import grp

    try:
        made_group = not grp.getgrnam(GROUP)
    except KeyError:
        made_group = True  # the daemon makes it: removed after
    top = tempfile.mkdtemp(prefix="daemon-")
    os.chmod(top, 0o755)
    busybox_store(os.path.join(top, "store"))
    served = Daemon(top, os.path.join(top, "store"), None, "--group", GROUP)
    yield served
    served.close()
    shutil.rmtree(top, ignore_errors=True)
    if made_group:
        subprocess.run(["groupdel", GROUP], check=True)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


# -- the server ------------------------------------------------------------------------
def test_socket_permissions_and_one_daemon_per_socket(daemon):
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    import grp

    assert grp.getgrgid(st.st_gid).gr_name == GROUP
    second = subprocess.run(
        [*daemon.proc.args[:3], "daemon", "--host", daemon.host, "--store", daemon.store],
        capture_output=True,
        timeout=60,
        cwd="/",
    )
    assert second.returncode != 0 and b"another sandboxlib daemon serves" in second.stderr
    assert daemon.request("GET", "/_ping")[0] == 200  # the live one is untouched


def test_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "docker.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens on: a dead daemon's
    store = tmp_path / "store"
    store.mkdir()
    served = Daemon(str(tmp_path), str(store))
    try:
        assert served.request("GET", "/_ping")[0] == 200
    finally:
        assert served.close() == 0
    assert not path.exists()


def test_ping_version_and_api_versions(daemon):
    for method in ("GET", "HEAD"):
        status, headers, body = daemon.request(method, "/_ping")
        assert status == 200 and body == (b"OK" if method == "GET" else b"")
        assert headers["Api-Version"] == "1.44" and headers["Ostype"] == "linux"
        assert headers["Docker-Experimental"] == "false"
    status, _, body = daemon.request("GET", "/v1.44/version")
    assert status == 200 and json.loads(body)["ApiVersion"] == "1.44"
    assert daemon.request("GET", "/v1.24/_ping")[0] == 200
    status, headers, body = daemon.request("GET", "/v1.45/version")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "client version 1.45 is too new. Maximum supported API version is 1.44"}
    status, headers, body = daemon.request("GET", "/v1.44/no/such/thing")
    assert status == 404 and headers["Content-Type"] == "application/json" and "message" in json.loads(body)
    status, _, body = daemon.request("GET", "/v1.44/swarm")
    assert status == 503 and "not a swarm manager" in json.loads(body)["message"]


def test_bad_input_gets_docker_errors_and_nothing_is_made(daemon):
    def error(method, path, body=None, expect=400):
        status, headers, data = daemon.request(method, path, body)
        assert status == expect, data
        assert headers["Content-Type"] == "application/json"
        return json.loads(data)["message"]

    before = json.loads(daemon.request("GET", "/containers/json?all=1")[2])
    assert "invalid JSON" in error("POST", "/containers/create", b"{not json")
    assert "invalid JSON" in error("POST", "/containers/create", b"[1, 2]")
    assert "Cmd" in error("POST", "/containers/create", {"Image": "busybox", "Cmd": 5})
    assert "HostConfig.Memory" in error(
        "POST", "/containers/create", {"Image": "busybox", "HostConfig": {"Memory": "x"}}
    )
    assert error("POST", "/containers/create", {"Image": "nothere"}, 404) == "No such image: nothere"
    assert "larger than" in error("POST", "/containers/create", b"{" + b" " * (5 << 20) + b"}", 413)
    assert error("GET", "/containers/nothere/json", expect=404) == "No such container: nothere"
    assert "invalid value for all" in error("GET", "/containers/json?all=maybe")
    assert json.loads(daemon.request("GET", "/containers/json?all=True")[2]) == before
    assert json.loads(daemon.request("GET", "/containers/json?all=1")[2]) == before
    # a name in use
    _ok(daemon.docker("create", "--name", "dup", "busybox", "true"))
    try:
        result = daemon.docker("create", "--name", "dup", "busybox", "true")
        assert result.returncode != 0 and b"is already in use" in result.stderr
    finally:
        _ok(daemon.docker("rm", "dup"))
    assert json.loads(daemon.request("GET", "/containers/json?all=1")[2]) == before
    assert daemon.request("GET", "/_ping")[0] == 200


# -- containers through the docker CLI ------------------------------------------------
def test_docker_run_rm(daemon):
    result = daemon.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    for _ in range(10):  # a command that ends at once: its output is read before AutoRemove removes the log
        assert _ok(daemon.docker("run", "--rm", "busybox", "echo", "hi")) == "hi\n"
    assert _ok(daemon.docker("ps", "-aq")) == ""  # removed (AutoRemove)
    result = daemon.docker("run", "--rm", "busybox", "nosuchcommand")
    assert result.returncode == 127, result.stderr


def test_detached_container_logs_exec_ps_inspect_stop_rm(daemon):
    script = "echo started; while true; do sleep 0.05; [ -e /tmp/go ] && break; done; echo finished; exit 7"
    cid = _ok(daemon.docker("run", "-d", "--name", "web", "busybox", "sh", "-c", script)).strip()
    try:
        assert len(cid) == 64
        assert wait_until(lambda: _ok(daemon.docker("logs", "web")) == "started\n")
        assert _ok(daemon.docker("exec", "web", "sh", "-c", "echo $((6*7))")) == "42\n"
        assert daemon.docker("exec", "web", "sh", "-c", "exit 4").returncode == 4
        listed = _ok(daemon.docker("ps", "--format", "{{.Names}} {{.Status}}"))
        assert listed.startswith("web Up ")
        state = json.loads(_ok(daemon.docker("inspect", "web")))[0]
        assert state["State"]["Running"] and state["Name"] == "/web" and state["Id"] == cid
        assert state["HostConfig"]["LogConfig"]["Type"] == "json-file"
        assert daemon.docker("rm", "web").returncode != 0  # running: 409 without --force
        follow = subprocess.Popen(
            [*daemon.docker_argv("logs", "-f", "web")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        _ok(daemon.docker("exec", "web", "touch", "/tmp/go"))
        out, _ = follow.communicate(timeout=30)
        assert out == b"started\nfinished\n"  # a follow ends with the container
        assert _ok(daemon.docker("wait", "web")) == "7\n"
        assert "Exited (7)" in _ok(daemon.docker("ps", "-a", "--format", "{{.Status}}"))
        assert daemon.docker("exec", "web", "true").returncode != 0  # stopped: 409
    finally:
        _ok(daemon.docker("rm", "-f", "web"))
    assert _ok(daemon.docker("ps", "-aq")) == ""


def test_stop_and_kill(daemon):
    _ok(daemon.docker("run", "-d", "--name", "sleeper", "busybox", "sleep", "60"))
    _ok(daemon.docker("run", "-d", "--name", "victim", "busybox", "sleep", "60"))
    try:
        _ok(daemon.docker("stop", "-t", "5", "sleeper"))
        assert json.loads(_ok(daemon.docker("inspect", "sleeper")))[0]["State"]["ExitCode"] == 143
        _ok(daemon.docker("kill", "victim"))
        assert json.loads(_ok(daemon.docker("inspect", "victim")))[0]["State"]["ExitCode"] == 137
        assert daemon.request("POST", "/containers/sleeper/stop")[0] == 304
        _ok(daemon.docker("start", "sleeper"))
        assert daemon.request("POST", "/containers/sleeper/start")[0] == 304
        pid = json.loads(_ok(daemon.docker("inspect", "sleeper")))[0]["State"]["Pid"]
        _ok(daemon.docker("restart", "-t", "0", "sleeper"))
        state = json.loads(_ok(daemon.docker("inspect", "sleeper")))[0]["State"]
        assert state["Running"] and state["Pid"] != pid
        victim = json.loads(_ok(daemon.docker("inspect", "victim")))[0]["Id"]
        assert victim in _ok(daemon.docker("container", "prune", "-f"))  # exited: removed; running: kept
        assert _ok(daemon.docker("ps", "-a", "--format", "{{.Names}}")) == "sleeper\n"
    finally:
        daemon.docker("rm", "-f", "sleeper", "victim")


def test_images_save_load_tag_rmi(daemon, tmp_path):
    assert "busybox" in _ok(daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}"))
    _ok(daemon.docker("tag", "busybox", "mybox:1"))
    archive = str(tmp_path / "mybox.tar")
    _ok(daemon.docker("save", "-o", archive, "mybox:1"))
    assert "Untagged: mybox:1" in _ok(daemon.docker("rmi", "mybox:1"))
    assert "mybox:1" not in _ok(daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}"))
    assert "Loaded image: mybox:1" in _ok(daemon.docker("load", "-i", archive))
    assert _ok(daemon.docker("run", "--rm", "mybox:1", "echo", "loaded")) == "loaded\n"
    _ok(daemon.docker("rmi", "mybox:1"))
    result = daemon.docker("load", input=b"this is no tar")
    assert result.returncode != 0


def test_pull_from_a_local_registry(daemon, tmp_path):
    from sandboxlib import ImageStore

    top = tmp_path / "registry"
    top.mkdir()
    registry = Registry(str(top))
    try:
        ImageStore(daemon.store).push("busybox", f"{registry.host}/team/box:1")
        out = _ok(daemon.docker("pull", f"{registry.host}/team/box:1"))
        assert f"{registry.host}/team/box:1" in out
        assert _ok(daemon.docker("run", "--rm", f"{registry.host}/team/box:1", "echo", "pulled")) == "pulled\n"
        _ok(daemon.docker("rmi", f"{registry.host}/team/box:1"))
        pushed = f"{registry.host}/team/pushed:2"
        _ok(daemon.docker("tag", "busybox", pushed))
        assert "digest: sha256:" in _ok(daemon.docker("push", pushed))
        _ok(daemon.docker("rmi", pushed))
        import urllib.request

        with urllib.request.urlopen(f"http://{registry.host}/v2/team/pushed/tags/list", timeout=10) as answer:
            assert json.loads(answer.read())["tags"] == ["2"]
    finally:
        registry.close()


# -- the daemon's end ------------------------------------------------------------------
def test_daemon_stop_stops_its_containers(tmp_path):
    os.chmod(tmp_path, 0o755)
    store = busybox_store(str(tmp_path / "store"))
    served = Daemon(str(tmp_path), store)
    try:
        _ok(served.docker("run", "-d", "busybox", "sleep", "600"))
        inits = psutil.Process(served.proc.pid).children()
        assert inits
    finally:
        assert served.close() == 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in inits)
    assert not os.path.exists(served.socket) and not os.path.exists(served.socket + ".state")


def test_a_killed_daemon_leaves_nothing_running_and_is_replaced(tmp_path):
    """SIGKILL: its containers die with it (their inits watch it), and the next daemon on
    the socket replaces the stale socket and removes the state it left."""
    import signal

    os.chmod(tmp_path, 0o755)
    store = busybox_store(str(tmp_path / "store"))
    served = Daemon(str(tmp_path), store)
    try:
        _ok(served.docker("run", "-d", "busybox", "sleep", "600"))
        inits = psutil.Process(served.proc.pid).children()
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
        assert wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in inits))
        assert os.path.exists(served.socket) and os.listdir(served.socket + ".state")
        again = Daemon(str(tmp_path), store)
        try:
            assert _ok(again.docker("ps", "-aq")) == "" and os.listdir(again.socket + ".state") == []
            from sandboxlib.runtime import statedir

            from .conftest import expire_sweep_stamp

            expire_sweep_stamp(os.path.join(statedir.state_root(), ".swept"))
            _ok(again.docker("run", "--rm", "busybox", "true"))  # its start sweeps the killed one's records
        finally:
            assert again.close() == 0
    finally:
        served.close()
    assert not os.path.exists(served.socket)


# -- stdin and terminals ----------------------------------------------------------------
def test_run_with_stdin_and_a_terminal(daemon):
    result = daemon.docker("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo err >&2", input=b"piped\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"piped\n", b"err\n")
    result = daemon.docker("run", "--rm", "-t", "busybox", "sh", "-c", "tty; exit 2")
    assert (result.returncode, result.stdout) == (2, b"/dev/pts/0\r\n")
    cid = _ok(daemon.docker("run", "-d", "-t", "busybox", "sh", "-c", "echo on a tty; sleep 60")).strip()
    try:
        assert wait_until(lambda: _ok(daemon.docker("logs", cid)) == "on a tty\r\n")
        assert _ok(daemon.docker("exec", "-t", cid, "tty")) == "/dev/pts/1\r\n"
    finally:
        _ok(daemon.docker("rm", "-f", cid))


def test_run_it_shell_through_pexpect(daemon):
    import pexpect

    child = pexpect.spawn(
        daemon.docker_argv()[0], daemon.docker_argv("run", "--rm", "-it", "busybox", "sh")[1:], timeout=30
    )
    try:
        child.setwinsize(30, 100)
        child.expect("# ")
        child.sendline("stty size; echo $((40+2))")
        child.expect("30 100\r\n42")
        child.setwinsize(40, 120)  # the CLI's resize
        child.sendline("stty size")
        child.expect("40 120")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 5
    assert _ok(daemon.docker("ps", "-aq")) == ""


# -- files, commit, stats, top, events, restart policies -------------------------------------
def _tar(entries) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cp_commit_stats_top(daemon, tmp_path):
    (tmp_path / "hello.txt").write_text("hello\n")
    _ok(daemon.docker("run", "-d", "--name", "files", "busybox", "sleep", "60"))
    try:
        _ok(daemon.docker("cp", str(tmp_path / "hello.txt"), "files:/tmp/"))
        assert _ok(daemon.docker("exec", "files", "cat", "/tmp/hello.txt")) == "hello\n"
        _ok(daemon.docker("cp", "files:/tmp/hello.txt", str(tmp_path / "back.txt")))
        assert (tmp_path / "back.txt").read_text() == "hello\n"
        # a traversal stays inside the root; a hostile tar is refused whole
        status, _, _ = daemon.request("PUT", "/containers/files/archive?path=/../../../tmp", _tar([("up.txt", b"u")]))
        assert status == 200 and _ok(daemon.docker("exec", "files", "cat", "/tmp/up.txt")) == "u"
        assert not os.path.exists("/tmp/up.txt") or open("/tmp/up.txt").read() != "u"
        status, headers, body = daemon.request(
            "PUT", "/containers/files/archive?path=/tmp", _tar([("ok.txt", b"x"), ("../../escape.txt", b"e")])
        )
        assert status == 400 and headers["Content-Type"] == "application/json", body
        assert daemon.docker("exec", "files", "ls", "/tmp/ok.txt").returncode != 0  # nothing half-made
        status, _, _ = daemon.request("PUT", "/containers/files/archive?path=/tmp", b"not a tar at all")
        assert status == 400
        image = _ok(daemon.docker("commit", "files", "committed:1")).strip()
        assert image.startswith("sha256:")
        assert _ok(daemon.docker("run", "--rm", "committed:1", "cat", "/tmp/hello.txt")) == "hello\n"
        _ok(daemon.docker("rmi", "committed:1"))
        stats = json.loads(daemon.request("GET", "/containers/files/stats?stream=false")[2])
        assert stats["pids_stats"]["current"] >= 1 and stats["memory_stats"]["usage"] > 0
        assert stats["cpu_stats"]["system_cpu_usage"] > stats["precpu_stats"]["system_cpu_usage"] > 0
        assert "files" in _ok(daemon.docker("stats", "--no-stream", "files"))
        assert "sleep 60" in _ok(daemon.docker("top", "files"))
    finally:
        _ok(daemon.docker("rm", "-f", "files"))


def test_events_rename_and_restart_policies(daemon):
    import time

    since = f"{time.time():.3f}"
    events = subprocess.Popen(
        daemon.docker_argv(
            "events", "--since", since, "--format", "{{.Type}} {{.Action}}", "--filter", "type=container"
        ),
        stdout=subprocess.PIPE,
    )
    try:
        flaky = ("--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 1")
        _ok(daemon.docker("run", "-d", "--name", "flaky", *flaky))
        assert wait_until(lambda: json.loads(_ok(daemon.docker("inspect", "flaky")))[0]["RestartCount"] == 2)
        assert wait_until(lambda: json.loads(_ok(daemon.docker("inspect", "flaky")))[0]["State"]["Status"] == "exited")
        assert _ok(daemon.docker("logs", "flaky")) == "run\nrun\nrun\n"  # every run's, as dockerd keeps them
        assert _ok(daemon.docker("logs", "--tail", "2", "flaky")) == "run\nrun\n"
        _ok(daemon.docker("rename", "flaky", "steady"))
        assert json.loads(_ok(daemon.docker("inspect", "steady")))[0]["Name"] == "/steady"
        _ok(daemon.docker("rm", "steady"))
        _ok(daemon.docker("run", "-d", "--name", "always", "--restart", "always", "busybox", "true"))
        assert wait_until(lambda: json.loads(_ok(daemon.docker("inspect", "always")))[0]["RestartCount"] >= 1)
        _ok(daemon.docker("stop", "always"))  # a stop by the user ends the restarts
        count = json.loads(_ok(daemon.docker("inspect", "always")))[0]["RestartCount"]
        assert json.loads(_ok(daemon.docker("inspect", "always")))[0]["State"]["Status"] == "exited"
        _ok(daemon.docker("rm", "-f", "always"))
        assert count >= 1
    finally:
        events.terminate()
        out = events.communicate(timeout=10)[0].decode().splitlines()
    assert out[:4] == ["container create", "container start", "container die", "container start"], out
    assert "container rename" in out and "container destroy" in out


# -- sandboxlib's own command line as a client -----------------------------------------------
def test_our_cli_as_a_client(daemon, monkeypatch):
    from .conftest import sandboxlib_cli

    def cli(*args):
        result = sandboxlib_cli(*args)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    monkeypatch.setenv("SANDBOXLIB_HOST", "unix:///nonexistent/docker.sock")
    code, _, err = cli("run", "-d", "busybox", "true")
    assert code == 125 and "start one with `sandboxlib daemon`" in err
    monkeypatch.delenv("SANDBOXLIB_HOST")
    monkeypatch.setenv("DOCKER_HOST", daemon.host)  # a sandboxlib daemon answers there: it is used
    code, out, _ = cli("run", "-d", "--name", "ours", "busybox", "sh", "-c", "echo hi; sleep 60")
    try:
        assert code == 0 and len(out.strip()) == 64
        assert wait_until(lambda: _ok(daemon.docker("logs", "ours")) == "hi\n")  # (the Go CLI: a quicker poll)
        assert cli("logs", "ours")[1] == "hi\n"
        assert "ours" in cli("ps")[1]
        assert cli("exec", "ours", "sh", "-c", "echo in; echo err >&2; exit 3") == (3, "in\n", "err\n")
        _ok(
            daemon.docker(
                "run", "-d", "--name", "brief", "busybox", "sh", "-c", "sleep 3; echo out; echo e >&2; exit 6"
            )
        )
        assert cli("attach", "brief") == (6, "out\n", "e\n")
        assert cli("stop", "-t", "1", "ours")[0] == 0
        assert json.loads(cli("inspect", "ours")[1])[0]["State"]["ExitCode"] == 143
        code, _, err = cli("rm", "ours", "nothere")
        assert code == 1 and "No such container: nothere" in err
        code, out, _ = cli("create", "--name", "made", "busybox", "echo", "made")
        assert code == 0 and cli("start", "made")[0] == 0
        assert wait_until(lambda: _ok(daemon.docker("logs", "made")) == "made\n")
    finally:
        daemon.docker("rm", "-f", "ours", "made", "brief")
    assert _ok(daemon.docker("ps", "-aq")) == ""


def test_an_image_entrypoint_and_its_replacement(daemon):
    _ok(daemon.docker("run", "-d", "--name", "base", "busybox", "sleep", "60"))
    try:
        change = ("--change", 'ENTRYPOINT ["echo", "from-entrypoint"]', "--change", 'CMD ["default"]')
        _ok(daemon.docker("commit", *change, "base", "epimg:1"))
    finally:
        _ok(daemon.docker("rm", "-f", "base"))
    try:
        assert _ok(daemon.docker("run", "--rm", "epimg:1")) == "from-entrypoint default\n"
        assert _ok(daemon.docker("run", "--rm", "epimg:1", "x")) == "from-entrypoint x\n"
        out = _ok(daemon.docker("run", "--rm", "--entrypoint", "sh", "epimg:1", "-c", "echo replaced; echo e >&2"))
        assert out == "replaced\n"
        assert _ok(daemon.docker("run", "--rm", "--entrypoint", "", "epimg:1", "echo", "cleared")) == "cleared\n"
    finally:
        _ok(daemon.docker("rmi", "epimg:1"))


def test_networks_host_and_none(daemon):
    """(Bridges and named networks: tests/test_daemon_network.py, in a namespace of the test's.)"""
    listed = _ok(daemon.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")).splitlines()
    assert {"bridge bridge", "host host", "none null"} <= set(listed)
    assert json.loads(_ok(daemon.docker("network", "inspect", "host")))[0]["Driver"] == "host"
    assert (
        _ok(daemon.docker("run", "--rm", "--network", "host", "busybox", "echo", "on the host's")) == "on the host's\n"
    )
    result = daemon.docker("run", "--rm", "-p", "8080:80", "busybox", "true")  # this daemon's default is none
    assert result.returncode != 0 and b"conflicting options: port publishing" in result.stderr
    result = daemon.docker("run", "--rm", "--network", "nowhere", "busybox", "true")
    assert result.returncode != 0 and b"network nowhere not found" in result.stderr


def test_volumes(daemon):
    assert _ok(daemon.docker("volume", "create", "data")) == "data\n"
    try:
        _ok(daemon.docker("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"))
        out = _ok(
            daemon.docker("run", "--rm", "--mount", "type=volume,source=data,target=/d", "busybox", "cat", "/d/f")
        )
        assert out == "kept\n"
        assert _ok(daemon.docker("volume", "ls", "-q")) == "data\n"
        _ok(daemon.docker("create", "--name", "user", "-v", "data:/data", "busybox", "true"))
        result = daemon.docker("volume", "rm", "data")
        assert result.returncode != 0 and b"volume is in use" in result.stderr
        _ok(daemon.docker("rm", "user"))
    finally:
        daemon.docker("rm", "-f", "user")
        _ok(daemon.docker("volume", "rm", "data"))
    assert daemon.docker("volume", "inspect", "data").returncode != 0


def test_pause_and_unpause(daemon):
    script = "while true; do echo tick; sleep 0.02; done"
    _ok(daemon.docker("run", "-d", "--name", "ticker", "busybox", "sh", "-c", script))

    def ticks() -> int:
        return _ok(daemon.docker("logs", "ticker")).count("tick")

    try:
        assert wait_until(lambda: ticks() > 0)
        _ok(daemon.docker("pause", "ticker"))
        assert "Paused" in _ok(daemon.docker("ps", "--format", "{{.Status}}"))
        frozen = ticks()
        assert wait_until(lambda: ticks() == frozen, 1.0) and ticks() == frozen
        assert daemon.docker("exec", "ticker", "true").returncode != 0  # 409: paused
        _ok(daemon.docker("unpause", "ticker"))
        assert wait_until(lambda: ticks() > frozen)
        _ok(daemon.docker("pause", "ticker"))
    finally:
        _ok(daemon.docker("rm", "-f", "ticker"))  # a paused one too


def test_clients_that_go_away_mid_stream_leak_nothing(daemon):
    """docker logs -f, attach, wait and stats killed mid-stream: once the
    container has ended, the daemon holds no more fds and threads than after a
    first such round (which grew the loop's thread pool to what it needs)."""
    import signal
    import time

    me = psutil.Process(daemon.proc.pid)
    script = "while true; do echo x; sleep 0.05; done"

    def round_of_streams() -> None:
        _ok(daemon.docker("run", "-d", "--name", "streamer", "busybox", "sh", "-c", script))
        try:
            streams = (
                ("logs", "-f", "streamer"),
                ("attach", "streamer"),
                ("wait", "streamer"),
                ("stats", "streamer"),
                ("events",),
            )
            clients = [
                subprocess.Popen(daemon.docker_argv(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for args in streams
            ]
            time.sleep(1.0)
            for client in clients:
                client.send_signal(signal.SIGKILL)
                client.wait()
            assert daemon.request("GET", "/_ping")[0] == 200
        finally:
            _ok(daemon.docker("rm", "-f", "streamer"))

    def held():
        return me.num_fds(), me.num_threads()

    round_of_streams()
    assert wait_until(lambda: me.num_threads() <= min(32, (os.cpu_count() or 1) + 4) + 1)  # the pool, the loop
    baseline = held()
    round_of_streams()
    assert wait_until(lambda: held() <= baseline, 10), (baseline, held())
