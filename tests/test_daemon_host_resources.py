"""HostConfig's device cgroup rules, real-time CPU time and volume driver
through the daemon, driven by docker-py and the docker CLI as a root and a
rootless daemon: applied in the container's cgroup, shown by inspect as
asked, refused (never ignored) where they cannot be applied."""

from __future__ import annotations

import os
import shutil

import docker
import pytest

from .daemonkit import Daemon, api_client, private_daemon, rootless_home


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-resources-") as served:
        yield served


@pytest.fixture
def api(daemon):
    with api_client(daemon) as client:
        yield client


def _cgroup_file(daemon: Daemon, container: str, hierarchy: str, name: str) -> str:
    """A file of the running container's cgroup in a v1 hierarchy, found by its init's pid."""
    pid = int(daemon.docker("inspect", "-f", "{{.State.Pid}}", container).stdout)
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == hierarchy)
    with open(f"/sys/fs/cgroup/{hierarchy}{path}/{name}") as f:
        return f.read()


def test_device_cgroup_rules_are_applied_and_shown(daemon, api, tmp_path):
    """``--device-cgroup-rule``: a private node of 10:200 bound in opens only
    while a rule allows it; inspect shows the rules as given."""
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(nodes, 0o755)
    os.mknod(nodes / "tun", 0o666 | 0o020000, os.makedev(10, 200))
    os.chmod(nodes / "tun", 0o666)
    probe = ["sh", "-c", "exec 3<>/nodes/tun && echo opened"]
    for rule, allowed in (("c 10:200 rw", True), ("c 7:128 rwm", False)):
        result = daemon.docker("run", "--rm", "--device-cgroup-rule", rule, "-v", f"{nodes}:/nodes", "busybox", *probe)
        assert (result.returncode == 0) is allowed and (result.stdout == b"opened\n") is allowed, (rule, result)
        assert allowed or b"Operation not permitted" in result.stderr, result
    container = api.create_container(
        "busybox", ["sleep", "60"], host_config=api.create_host_config(device_cgroup_rules=["c 7:128 rwm"])
    )
    assert api.inspect_container(container)["HostConfig"]["DeviceCgroupRules"] == ["c 7:128 rwm"]
    api.start(container)
    listed = _cgroup_file(daemon, container["Id"], "devices", "devices.list").split("\n")
    assert "c 7:128 rwm" in listed and "a *:* rwm" not in listed, listed
    with pytest.raises(docker.errors.APIError, match="device_rules") as info:  # (the CLI checks the form itself)
        api.create_container("busybox", ["true"], host_config=api.create_host_config(device_cgroup_rules=["c 7:128"]))
    assert info.value.status_code == 400


def test_realtime_cpu_time_is_applied_and_shown(daemon, api):
    """docker-py sends ``CPURealtimePeriod`` (Go reads JSON names case-insensitively)."""
    container = api.create_container(
        "busybox", ["sleep", "60"], host_config=api.create_host_config(cpu_rt_period=10000, cpu_rt_runtime=300)
    )
    host_config = api.inspect_container(container)["HostConfig"]
    assert (host_config["CpuRealtimePeriod"], host_config["CpuRealtimeRuntime"]) == (10000, 300)
    api.start(container)
    assert _cgroup_file(daemon, container["Id"], "cpu", "cpu.rt_period_us") == "10000\n"
    assert _cgroup_file(daemon, container["Id"], "cpu", "cpu.rt_runtime_us") == "300\n"
    with pytest.raises(docker.errors.APIError, match="cannot be higher than cpu real-time period") as info:
        api.create_container(
            "busybox", ["true"], host_config=api.create_host_config(cpu_rt_period=1000, cpu_rt_runtime=2000)
        )
    assert info.value.status_code == 400
    cli = daemon.docker("run", "--rm", "--cpu-rt-runtime", "200", "--cpu-rt-period", "20000", "busybox", "true")
    assert cli.returncode == 0, cli


def test_volume_driver_local_and_unknown(daemon):
    """Docker's built-in ``local`` driver is the one there is: another is shown
    when no volume needs it, and refused as dockerd refuses a missing plugin
    when one does."""
    client = docker.DockerClient(base_url=daemon.host, timeout=60)
    try:
        container = client.containers.create("busybox", "true", volume_driver="foo")
        assert container.attrs["HostConfig"]["VolumeDriver"] == "foo"
        container.remove()
        local = client.containers.run(
            "busybox",
            "sh -c 'echo kept > /data/f'",
            volumes={"drv-vol": {"bind": "/data"}},
            volume_driver="local",
            remove=True,
        )
        assert local == b""
        assert client.containers.run("busybox", "cat /data/f", volumes=["drv-vol:/data"], remove=True) == b"kept\n"
        with pytest.raises(docker.errors.NotFound, match='error looking up volume plugin foo: plugin "foo" not found'):
            client.containers.create("busybox", "true", volumes=["other-vol:/data"], volume_driver="foo")
        with pytest.raises(docker.errors.NotFound, match='plugin "foo" not found'):
            client.volumes.create("made-vol", driver="foo")
        assert "other-vol" not in [v.name for v in client.volumes.list()]
        client.volumes.get("drv-vol").remove()
    finally:
        client.close()
    # (the CLI's run takes a create's 404 for a missing image and pulls, with dockerd too)
    cli = daemon.docker("volume", "create", "--driver", "foo", "cli-vol")
    assert cli.returncode != 0 and b'plugin "foo" not found' in cli.stderr, cli


def test_rootless_daemon_refuses_what_it_cannot_apply(workers, shared_dir):
    """A rootless daemon has no device cgroup and no real-time CPU time to give:
    the container is made (inspect shows what was asked) and its start fails
    saying why."""
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-resources-rootless-")
    served = Daemon(top, store, user)
    try:
        devices = served.docker("run", "--rm", "--device-cgroup-rule", "c 7:128 rwm", "busybox", "true")
        assert devices.returncode != 0 and b"device cgroup rules need root" in devices.stderr, devices
        realtime = served.docker("run", "--rm", "--cpu-rt-runtime", "100", "busybox", "true")
        assert realtime.returncode != 0 and b"limits.cpu_rt_runtime_us" in realtime.stderr, realtime
        made = served.docker("create", "--device-cgroup-rule", "c 7:128 rwm", "busybox", "true")
        assert made.returncode == 0, made
        shown = served.docker("inspect", "-f", "{{json .HostConfig.DeviceCgroupRules}}", made.stdout.decode().strip())
        assert shown.stdout == b'["c 7:128 rwm"]\n'
        assert served.docker("run", "--rm", "busybox", "true").returncode == 0
    finally:
        served.close()
        shutil.rmtree(top, ignore_errors=True)
