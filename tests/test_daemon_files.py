"""A daemon container's files from its create to its remove (issue 14), root
and rootless, with the real ``docker`` CLI and docker-py: ``docker cp`` and
``commit`` of a created or exited container, a restart keeping its file
changes, ``docker export`` and ``docker diff`` (running and stopped), hostile
archive paths and a symlink out of a stopped container's root refused, and
the kept writable layer removed by ``rm``, ``--rm``, ``prune``, the daemon's
stop, and swept after a SIGKILLed daemon.  Also ``attach`` with stdin
(``attach -i``, docker-py's ``attach_socket``) and ``StdinOnce``."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import struct
import tarfile
import tempfile
import threading
import time

import docker
import pytest

from .conftest import expire_sweep_stamp, sandboxlib_cli, wait_until
from .daemonkit import Daemon, UnixHTTPConnection, busybox_store


@pytest.fixture(scope="module", params=["root", "rootless"])
def daemon(request, workers, shared_dir):
    top = tempfile.mkdtemp(prefix="daemon-files-", dir=str(shared_dir))
    os.chmod(top, 0o755)
    store = os.path.join(top, "store")
    user = workers["sbxtest"].user if request.param == "rootless" else None
    if user is not None:
        os.chown(top, user.pw_uid, user.pw_gid)
        os.mkdir(store, 0o700)
    busybox_store(store, owner=user)
    served = Daemon(top, store, user)
    yield served
    assert served.close() == 0, served.log()
    assert _kept_layers(served) == []  # the daemon's stop removed the layers of the containers it had
    shutil.rmtree(top, ignore_errors=True)


def _ok(result) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


def _kept_layers(daemon) -> list:
    top = os.path.join(daemon.store, "containers")
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def _names(tar_bytes: bytes) -> list:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return tar.getnames()


def test_cp_and_commit_of_created_and_exited_containers_and_a_restart_keeps_changes(daemon, tmp_path):
    (tmp_path / "in.txt").write_text("copied in\n")
    cid = _ok(
        daemon.docker("create", "--name", "kept", "busybox", "sh", "-c", "cat /in.txt; echo run >> /runs")
    ).strip()
    try:
        _ok(daemon.docker("cp", str(tmp_path / "in.txt"), "kept:/"))  # created, never started
        assert _ok(daemon.docker("start", "-a", "kept")) == "copied in\n"
        assert _ok(daemon.docker("start", "-a", "kept")) == "copied in\n"  # the same layer again
        _ok(daemon.docker("cp", "kept:/runs", str(tmp_path / "runs")))  # exited
        assert (tmp_path / "runs").read_text() == "run\nrun\n"
        assert daemon.docker("cp", "kept:/nothere", str(tmp_path)).returncode != 0
        assert _ok(daemon.docker("restart", "kept")) == "kept\n"
        assert wait_until(lambda: daemon.request("GET", "/containers/kept/archive?path=/runs")[0] == 200)
        image = _ok(daemon.docker("commit", "kept", "kept:img")).strip()
        assert image.startswith("sha256:")
        assert _ok(daemon.docker("run", "--rm", "kept:img", "cat", "/in.txt")) == "copied in\n"
        _ok(daemon.docker("rmi", "kept:img"))
        assert _kept_layers(daemon) == [cid]
    finally:
        _ok(daemon.docker("rm", "-f", "kept"))
    assert _kept_layers(daemon) == []


def test_export_and_diff_running_and_stopped(daemon):
    script = "echo hi > /added; rm /bin/ls; echo x >> /etc/passwd; mkdir /d; echo f > /d/f"
    _ok(daemon.docker("run", "--name", "changed", "busybox", "sh", "-c", script))
    _ok(daemon.docker("run", "-d", "--name", "live", "busybox", "sh", "-c", "touch /tmp/new; exec sleep 60"))
    try:
        diff = _ok(daemon.docker("diff", "changed")).splitlines()
        assert diff == ["A /added", "C /bin", "D /bin/ls", "A /d", "A /d/f", "C /etc", "C /etc/passwd"]
        exported = daemon.docker("export", "changed")
        names = _names(exported.stdout)
        assert "added" in names and "d/f" in names and "bin/sh" in names and "bin/ls" not in names
        assert "proc" in names and not any(n.startswith(("proc/", "dev/", "sys/")) for n in names)
        assert wait_until(lambda: "A /tmp/new" in _ok(daemon.docker("diff", "live")))
        names = _names(daemon.docker("export", "live").stdout)
        assert "tmp/new" in names and not any(n.startswith("proc/") for n in names)
        client = docker.DockerClient(base_url=daemon.host, timeout=60)
        try:
            assert {"Path": "/tmp/new", "Kind": 1} in client.containers.get("live").diff()
            stream = client.containers.get("changed").export()
            assert "added" in _names(b"".join(stream))
        finally:
            client.close()
    finally:
        _ok(daemon.docker("rm", "-f", "changed", "live"))


def test_hostile_paths_are_refused_for_a_stopped_container(daemon, tmp_path):
    secret = tempfile.NamedTemporaryFile(prefix="sbx-host-secret-", dir="/tmp", delete=False)
    secret.write(b"host secret\n")
    secret.close()
    planted = f"/tmp/sbx-planted-{os.getpid()}.txt"
    script = f"ln -s /../../../..{secret.name} /out; ln -s / /up; ln -s /../../../../tmp /tmpdir"
    _ok(daemon.docker("run", "--name", "hostile", "busybox", "sh", "-c", script))
    try:
        # a symlink out of the root resolves inside it: never to the host's file
        for path in ("/out", f"/up/../../..{secret.name}", "/tmpdir/" + os.path.basename(secret.name)):
            status, _, body = daemon.request("GET", f"/containers/hostile/archive?path={path}")
            assert status == 404 and b"host secret" not in body, (path, status)
        assert daemon.docker("cp", "hostile:/out", str(tmp_path / "got")).returncode != 0
        assert not (tmp_path / "got").exists()
        # a PUT through a traversal and a symlink lands in the container's /tmp
        name = os.path.basename(planted)
        status, _, _ = daemon.request("PUT", "/containers/hostile/archive?path=/up/../../tmpdir", _tar([(name, b"i")]))
        assert status == 200 and not os.path.exists(planted)
        assert daemon.request("HEAD", f"/containers/hostile/archive?path=/tmp/{name}")[0] == 200
        status, headers, body = daemon.request(
            "PUT", "/containers/hostile/archive?path=/tmp", _tar([("ok.txt", b"x"), ("../../escape.txt", b"e")])
        )
        assert status == 400 and headers["Content-Type"] == "application/json", body
        assert daemon.request("HEAD", "/containers/hostile/archive?path=/tmp/ok.txt")[0] == 404  # nothing half-made
        status, _, _ = daemon.request("PUT", "/containers/hostile/archive?path=/tmp", _tar([("/../../x", b"e")]))
        assert status == 400
    finally:
        _ok(daemon.docker("rm", "hostile"))
        os.unlink(secret.name)
        if os.path.exists(planted):
            os.unlink(planted)


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_layers_go_with_rm_autoremove_and_prune(daemon):
    _ok(daemon.docker("run", "--rm", "busybox", "sh", "-c", "echo x > /x"))
    ran = _ok(daemon.docker("run", "-d", "busybox", "true")).strip()
    created = _ok(daemon.docker("create", "busybox", "true")).strip()
    assert _ok(daemon.docker("wait", ran)) == "0\n"
    assert _kept_layers(daemon) == [ran]  # (a created container's is made at its start)
    assert sorted(os.listdir(os.path.join(daemon.store, "leases"))) == sorted([ran, created])
    _ok(daemon.docker("container", "prune", "-f"))
    assert _kept_layers(daemon) == [] and _ok(daemon.docker("ps", "-aq")) == ""
    assert os.listdir(os.path.join(daemon.store, "leases")) == []


# -- attach with stdin ---------------------------------------------------------------------
def test_attach_with_stdin_and_stdin_once(daemon, monkeypatch):
    import pexpect

    script = "read a; echo got $a; read b; echo got $b"
    _ok(daemon.docker("run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", script))
    try:
        child = pexpect.spawn(daemon.docker_argv()[0], daemon.docker_argv("attach", "reader")[1:], timeout=30)
        try:
            child.sendline("first")
            child.expect("got first")
        finally:
            child.kill(signal.SIGKILL)  # (no signal the CLI would proxy to the container)
            child.close(force=True)
        # the client went: without StdinOnce the command's stdin stays open
        assert _ok(daemon.docker("inspect", "-f", "{{.State.Running}}", "reader")).strip() == "true"
        result = daemon.docker("attach", "reader", input=b"second\n")
        assert (result.returncode, result.stdout) == (0, b"got second\n")
        assert _ok(daemon.docker("logs", "reader")) == "got first\ngot second\n"
    finally:
        _ok(daemon.docker("rm", "-f", "reader"))
    # our command line's attach -i
    _ok(daemon.docker("run", "-d", "-i", "--name", "ours", "busybox", "sh", "-c", script))
    try:
        monkeypatch.setenv("SANDBOXLIB_HOST", daemon.host)
        result = sandboxlib_cli("attach", "-i", "ours", input=b"mine\nmore\n", timeout=60)
        assert (result.returncode, result.stdout) == (0, b"got mine\ngot more\n"), result.stderr
    finally:
        _ok(daemon.docker("rm", "-f", "ours"))
    # StdinOnce (docker run -i, attached): the client's end of input is the command's
    result = daemon.docker("run", "-i", "--name", "once", "busybox", "sh", "-c", "cat; echo done", input=b"in\n")
    assert result.stdout == b"in\ndone\n"
    _ok(daemon.docker("rm", "once"))


def _frames(sock: socket.socket, want: bytes, timeout: float = 20) -> bytes:
    data, got = b"", b""
    deadline = time.monotonic() + timeout
    while want not in got and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 8:
            size = struct.unpack(">I", data[4:8])[0]
            if len(data) < 8 + size:
                break
            got, data = got + data[8 : 8 + size], data[8 + size :]
    return got


def test_docker_py_attach_socket_and_stdin_once(daemon):
    client = docker.DockerClient(base_url=daemon.host, timeout=60)
    made = client.api.create_container("busybox", ["sh", "-c", "cat; echo eof"], stdin_open=True)
    container = client.containers.get(made["Id"])
    sock = raw = None
    try:
        assert container.attrs["Config"]["OpenStdin"] and container.attrs["Config"]["StdinOnce"]
        sock = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = sock._sock
        container.start()
        raw.sendall(b"from docker-py\n")
        assert _frames(raw, b"from docker-py\n") == b"from docker-py\n"
        raw.shutdown(socket.SHUT_WR)  # StdinOnce: the half-close ends cat's stdin
        assert b"eof\n" in _frames(raw, b"eof\n")
        assert container.wait(timeout=30)["StatusCode"] == 0
    finally:
        if sock is not None:
            sock.close()
            raw.close()  # (SocketIO's close leaves the socket open)
        container.remove(force=True)
        client.close()


# -- a SIGKILLed daemon ----------------------------------------------------------------------
def test_a_killed_daemons_layers_are_swept(tmp_path):
    os.chmod(tmp_path, 0o755)
    store = busybox_store(str(tmp_path / "store"))
    served = Daemon(str(tmp_path), store)
    try:
        _ok(served.docker("run", "--name", "left", "busybox", "sh", "-c", "echo x > /x"))
        assert len(_kept_layers(served)) == 1
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
        assert len(_kept_layers(served)) == 1
        expire_sweep_stamp(os.path.join(store, ".writable-swept"))
        again = Daemon(str(tmp_path), store)  # its start sweeps what the killed one kept
        try:
            assert _kept_layers(again) == [] and os.listdir(os.path.join(store, "leases")) == []
        finally:
            assert again.close() == 0
    finally:
        served.close()


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _read_all(daemon, path: str) -> int:
    """The bytes of a GET's answer, read as they come (none of it kept)."""
    connection = UnixHTTPConnection(daemon.socket, 120)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        total = 0
        while chunk := response.read(1 << 20):
            total += len(chunk)
        return total
    finally:
        connection.close()


def test_cp_and_export_of_a_huge_sparse_file_stream_through_the_daemon(daemon):
    """A container's sparse file (no disk, any size): docker cp held its whole tar in
    the daemon's memory (three copies: 1.6 GB of RSS for 512 MB), so a container could
    have the daemon killed by the OOM killer at the first copy out of it; export spooled
    it to the state directory (/run, a tmpfs).  Both stream now, as dockerd's, also for
    a stopped container, which is removed after at once."""
    size = 512 << 20
    _ok(daemon.docker("run", "--name", "sparse", "busybox", "sh", "-c", f"truncate -s {size} /big"))
    try:
        for path in ("/containers/sparse/archive?path=/big", "/containers/sparse/export"):
            with open(f"/proc/{daemon.proc.pid}/clear_refs", "w") as f:
                f.write("5")  # (the peak RSS starts again from here)
            assert _read_all(daemon, path) > size
            assert _peak_rss_kib(daemon.proc.pid) < 150 << 10, path
    finally:
        started = time.monotonic()
        _ok(daemon.docker("rm", "sparse"))
        assert time.monotonic() - started < 20  # (its file work done: nothing holds it)


def test_file_work_on_a_stopped_container_at_once(daemon):
    """Copies out of a stopped container from several clients at once: each mounted
    the kept layer in an idle container of its own, two overlays on one upper dir
    (the kernel's undefined behaviour; the library now refuses the second).  They
    take turns on it now, and all succeed."""
    _ok(daemon.docker("run", "--name", "turns", "busybox", "sh", "-c", "echo kept > /f"))
    try:
        results = []

        def copy() -> None:
            results.append(daemon.request("GET", "/containers/turns/archive?path=/f", timeout=60)[0])

        threads = [threading.Thread(target=copy) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 4
    finally:
        _ok(daemon.docker("rm", "turns"))
