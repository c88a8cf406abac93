"""The daemon driven by the Python clients, unchanged: docker-py
(``containers.run``, ``logs``, ``exec_run``, errors) and
testcontainers-python's ``DockerContainer``; and a rootless daemon (a test
user's, its socket 0600) driven by the docker CLI."""

from __future__ import annotations

import os
import shutil
import stat

import docker
import pytest

from .conftest import wait_until
from .daemonkit import Daemon, private_daemon, rootless_home


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-clients-") as served:
        yield served


@pytest.fixture
def client(daemon):
    client = docker.DockerClient(base_url=daemon.host, timeout=60)
    yield client
    client.close()


def test_docker_py_run_logs_exec(client):
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    both = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], stderr=True, remove=True)
    assert both == b"out\nerr\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert failed.value.exit_status == 3
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nothere")
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("nothere")
    container = client.containers.run("busybox", ["sh", "-c", "echo ready; sleep 60"], detach=True, name="pyweb")
    try:
        assert wait_until(lambda: container.logs() == b"ready\n")
        assert container.exec_run(["sh", "-c", "echo x; exit 3"]) == (3, b"x\n")
        assert container.exec_run("sh -c 'echo o; echo e >&2'", demux=True) == (0, (b"o\n", b"e\n"))
        container.reload()
        assert container.status == "running" and container.attrs["HostConfig"]["LogConfig"]["Type"] == "json-file"
        assert [c.name for c in client.containers.list()] == ["pyweb"]
        with pytest.raises(docker.errors.APIError) as conflict:
            container.remove()
        assert conflict.value.status_code == 409
        container.stop(timeout=1)
        assert container.wait() == {"Error": None, "StatusCode": 143}
    finally:
        container.remove(force=True)
    assert client.containers.list(all=True) == []
    assert [i.tags for i in client.images.list()] == [["busybox:latest"]]


def test_testcontainers_docker_container(daemon, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer

    with DockerContainer("busybox").with_command(["sh", "-c", "echo ready; sleep 60"]) as container:
        assert wait_until(lambda: container.get_logs() == (b"ready\n", b""))
        assert container.exec(["echo", "inside"]) == (0, b"inside\n")
    assert daemon.docker("ps", "-aq").stdout == b""


def test_rootless_daemon(workers, shared_dir):
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-rootless-")
    served = Daemon(top, store, user)
    try:
        st = os.stat(served.socket)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == user.pw_uid
        result = served.docker("run", "--rm", "busybox", "sh", "-c", "id -u; echo err >&2; exit 2")
        assert (result.returncode, result.stdout, result.stderr) == (2, b"0\n", b"err\n"), served.log()
        cid = served.docker("run", "-d", "busybox", "sleep", "60").stdout.decode().strip()
        assert served.docker("exec", cid, "echo", "hi").stdout == b"hi\n"
        client = docker.DockerClient(base_url=served.host, timeout=60)
        try:
            assert client.containers.run("busybox", "echo rootless", remove=True) == b"rootless\n"
            assert client.containers.get(cid).exec_run("id -u") == (0, b"0\n")
        finally:
            client.close()
    finally:
        assert served.close() == 0, served.log()
        shutil.rmtree(top, ignore_errors=True)
    assert not os.path.exists(served.socket)
