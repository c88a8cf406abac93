"""A root daemon's binds and volumes act as the host's root (idmapped, as a root
dockerd's), a rootless daemon's as its user; PidMode and UTSMode "host".
docker-py against daemons the tests start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import docker
import pytest

from .conftest import sandboxlib_cli, wait_until
from .daemonkit import Daemon, api_client, private_daemon, rootless_home


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-binds-") as served:
        yield served


@pytest.fixture
def api(daemon):
    with api_client(daemon, volumes=True) as client:
        yield client


def _run(api, command, **host_config) -> tuple:
    """(exit status, output) of a container of busybox."""
    container = api.create_container("busybox", command, host_config=api.create_host_config(**host_config))
    api.start(container)
    status = api.wait(container, timeout=30)["StatusCode"]
    output = api.logs(container).decode()
    api.remove_container(container)
    return status, output


@pytest.fixture
def private_dir():
    """Host root's 0700 directory (as ``tempfile.mkdtemp``'s) with a 0600 file."""
    path = tempfile.mkdtemp(prefix="daemon-bind-")
    with open(os.path.join(path, "secret"), "w") as f:
        f.write("host's\n")
    os.chmod(os.path.join(path, "secret"), 0o600)
    yield path
    shutil.rmtree(path)


WRITE = ["sh", "-c", "cat /mnt/secret && echo new > /mnt/new && ls -n /mnt/secret"]


def _owners(path: str) -> set:
    return {(os.stat(p).st_uid, os.stat(p).st_gid) for p in [path, *(os.path.join(path, n) for n in os.listdir(path))]}


@pytest.mark.parametrize("how", ["binds", "mounts"])
def test_a_bind_acts_as_the_hosts_root(api, private_dir, how):
    if how == "binds":
        options = {"binds": {private_dir: {"bind": "/mnt", "ro": False}}}
    else:
        options = {"mounts": [docker.types.Mount(type="bind", source=private_dir, target="/mnt")]}
    status, output = _run(api, WRITE, **options)
    assert status == 0, output
    lines = output.splitlines()
    # host root's file is the container root's, and what it writes is host root's
    assert lines[0] == "host's" and lines[1].split()[2:4] == ["0", "0"], output
    assert _owners(private_dir) == {(0, 0)}


@pytest.mark.parametrize("how", ["binds", "mounts"])
def test_a_read_only_bind_refuses_writes(api, private_dir, how):
    if how == "binds":
        options = {"binds": {private_dir: {"bind": "/mnt", "ro": True}}}
    else:
        options = {"mounts": [docker.types.Mount(type="bind", source=private_dir, target="/mnt", read_only=True)]}
    status, output = _run(api, ["sh", "-c", "cat /mnt/secret; touch /mnt/new"], **options)
    assert status != 0 and output.startswith("host's\n") and "Read-only file system" in output, output
    assert os.listdir(private_dir) == ["secret"]


def test_inspect_shows_the_mounts_of_binds_and_mounts(api, private_dir):
    mounts = [
        docker.types.Mount(type="bind", source=private_dir, target="/b", read_only=True),
        docker.types.Mount(type="volume", source="shown-volume", target="/v"),
    ]
    container = api.create_container("busybox", ["true"], host_config=api.create_host_config(mounts=mounts))
    shown = {m["Destination"]: m for m in api.inspect_container(container)["Mounts"]}
    assert shown["/b"]["Source"] == private_dir and shown["/b"]["RW"] is False
    assert shown["/b"]["Propagation"] == "rprivate" and shown["/b"]["Type"] == "bind"
    assert shown["/v"]["Name"] == "shown-volume" and shown["/v"]["RW"] is True and shown["/v"]["Type"] == "volume"


def test_a_named_volume_belongs_to_the_hosts_root(api, daemon):
    api.create_volume("owned")
    path = os.path.join(daemon.store, "volumes", "owned")
    assert api.inspect_volume("owned")["Mountpoint"] == path
    command = ["sh", "-c", "ls -nd /data && echo x > /data/file && mkdir /data/dir"]
    status, output = _run(api, command, binds=["owned:/data"])
    assert status == 0 and output.split()[2:4] == ["0", "0"], output
    assert _owners(path) == {(0, 0)}
    # an anonymous one (a Mount without a source), too
    status, output = _run(
        api, ["sh", "-c", "echo y > /anon/file && ls -n /anon"], mounts=[docker.types.Mount("/anon", None)]
    )
    assert status == 0 and output.split()[-7:-5] == ["0", "0"], output


def _host_sleeper(marker: str, uid: int = 0) -> subprocess.Popen:
    argv = ["sleep", marker]
    if uid:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
    return subprocess.Popen(argv)


def _processes_with(marker: str) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("uid", [0, 65534])
def test_pid_mode_host_sees_host_processes_and_cannot_kill_them(api, uid):
    sleeper = _host_sleeper("3599.5", uid)
    try:
        command = ["sh", "-c", f"cat /proc/{sleeper.pid}/cmdline | tr '\\0' ' '; echo; kill -9 {sleeper.pid}; echo $?"]
        status, output = _run(api, command, pid_mode="host", network_mode="none")
        lines = output.splitlines()
        assert lines[0] == "sleep 3599.5 " and "Operation not permitted" in output and "1" in lines, output
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_mode_host_is_shown_and_leaves_no_process_behind(api):
    marker = "1797.5"
    container = api.create_container(
        "busybox",
        ["sh", "-c", f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & exec sleep 60"],
        host_config=api.create_host_config(pid_mode="host"),
    )
    api.start(container)
    assert api.inspect_container(container)["HostConfig"]["PidMode"] == "host"
    assert wait_until(lambda: len(_processes_with(marker)) == 1, seconds=10)
    api.remove_container(container, force=True)
    assert wait_until(lambda: not _processes_with(marker), seconds=10), _processes_with(marker)


def test_uts_mode_host_has_the_hosts_name(api):
    status, output = _run(
        api, ["sh", "-c", "hostname; hostname other; echo $?"], uts_mode="host", cap_add=["SYS_ADMIN"]
    )
    assert output.splitlines()[0] == socket.gethostname() and output.splitlines()[-1] != "0", output
    assert socket.gethostname() != "other"
    container = api.create_container("busybox", ["true"], host_config=api.create_host_config(uts_mode="host"))
    shown = api.inspect_container(container)
    assert shown["HostConfig"]["UTSMode"] == "host" and shown["Config"]["Hostname"] == socket.gethostname()


@pytest.mark.parametrize(
    "options, field",
    [({"UTSMode": "host"}, "hostname"), ({"PidMode": "container:other"}, "PidMode"), ({"UTSMode": "x"}, "UTSMode")],
)
def test_namespace_modes_we_cannot_honour_are_400s(daemon, options, field):
    body = {"Image": "busybox", "Cmd": ["true"], "Hostname": "box", "HostConfig": options}
    status, _, answer = daemon.request("POST", "/containers/create", body)
    assert status == 400 and field in answer.decode(), answer


def test_a_rootless_daemons_binds_are_its_users(workers, shared_dir):
    """Rootless nothing is idmapped: the container's root is the daemon's user already."""
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-rootless-binds-")
    bound = os.path.join(top, "bound")
    os.mkdir(bound, 0o700)
    os.chown(bound, user.pw_uid, user.pw_gid)
    served = Daemon(top, store, user)
    try:
        client = docker.APIClient(base_url=served.host, timeout=60)
        try:
            status, output = _run(client, ["sh", "-c", "echo x > /mnt/new && ls -nd /mnt"], binds=[f"{bound}:/mnt"])
            assert status == 0 and output.split()[2:4] == ["0", "0"], output
            assert _owners(bound) == {(user.pw_uid, user.pw_gid)}
        finally:
            client.close()
    finally:
        assert served.close() == 0, served.log()
        shutil.rmtree(top, ignore_errors=True)


def test_cli_run_detached_asks_for_the_host_namespaces(api, daemon, monkeypatch):
    monkeypatch.setenv("SANDBOXLIB_HOST", daemon.host)
    proc = sandboxlib_cli("run", "-d", "--pid", "host", "--uts", "host", "busybox", "sleep", "60")
    assert proc.returncode == 0, proc
    shown = api.inspect_container(proc.stdout.decode().strip())["HostConfig"]
    assert (shown["PidMode"], shown["UTSMode"]) == ("host", "host")
