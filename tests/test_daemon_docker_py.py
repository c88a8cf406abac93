"""What docker-py's own integration suite (``make conformance``) found the
daemon doing unlike dockerd, each case with docker-py's low-level client as
that suite drives it (conformance/DOCKER_PY.md lists what is left)."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import socket
import tarfile
import time

import docker
import pytest
from docker.utils.socket import next_frame_header, read_exactly

from .conftest import wait_until
from .daemonkit import api_client, private_daemon


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-docker-py-") as served:
        yield served


@pytest.fixture
def api(daemon):
    with api_client(daemon) as client:
        yield client


def _running(api, *command: str) -> str:
    container = api.create_container("busybox", list(command) or ["sleep", "60"])
    api.start(container)
    return container["Id"]


def test_exec_output_is_framed_unless_the_start_asks_for_a_terminal(api):
    """dockerd frames an exec's output by its start request's Tty, not its create's:
    docker-py starts a terminal's exec without Tty and reads frames."""
    container = _running(api)
    framed = api.exec_create(container, ["printf", "yay"], tty=True)
    sock = api.exec_start(framed, socket=True)
    try:
        assert next_frame_header(sock) == (1, 3) and read_exactly(sock, 3) == b"yay"
    finally:
        sock._sock.close()  # (the SocketIO's close leaves the socket to the garbage collector)
        sock.close()
    both = api.exec_create(container, ["sh", "-c", "echo out; sleep 0.3; echo err >&2"], tty=True)
    assert b"".join(api.exec_start(both, stream=True)) == b"out\r\nerr\r\n"
    raw = api.exec_create(container, ["echo", "raw"], tty=True)
    assert api.exec_start(raw, tty=True) == b"raw\r\n"
    del sock
    gc.collect()  # (docker-py's responses of taken-over connections keep their sockets until collected)


def test_host_config_shows_what_was_asked_and_what_is_in_effect(api):
    container = api.create_container(
        "busybox",
        ["true"],
        environment={"Foo": None, "Other": "one", "Blank": ""},
        stop_timeout=25,
        host_config=api.create_host_config(
            cpu_shares=512,
            cpuset_cpus="0",
            mem_limit="64m",
            memswap_limit="128m",
            init=True,
            isolation="default",
            runtime="runc",  # (dockerd's default runtime's name)
            cgroupns="private",
            log_config=docker.types.LogConfig(type="", config={"max-file": "100", "max-size": "1m"}),
        ),
    )
    shown = api.inspect_container(container)
    host = shown["HostConfig"]
    assert (host["CpuShares"], host["CpusetCpus"], host["MemorySwap"]) == (512, "0", 128 << 20)
    assert (host["Init"], host["Isolation"], host["Runtime"], host["CgroupnsMode"]) == (
        True,
        "default",
        "runc",
        "private",
    )
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "100", "max-size": "1m"}}
    assert host["MemorySwappiness"] is None and host["PidMode"] == "" and host["VolumesFrom"] is None  # not applied
    assert shown["Config"]["StopTimeout"] == 25
    assert {"Foo", "Other=one", "Blank="} <= set(shown["Config"]["Env"])
    api.start(container)
    assert api.wait(container)["StatusCode"] == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"log_config": docker.types.LogConfig(type="asdf")}, "logger: no log driver named 'asdf' is registered"),
        ({"log_config": docker.types.LogConfig(type="json-file", config={"tag": "x"})}, "tag='x' is not supported"),
        ({"runtime": "crun"}, "unknown or invalid runtime name: crun"),
        ({"cgroupns": "host"}, "HostConfig.CgroupnsMode: 'host' is not supported"),
    ],
)
def test_host_config_refuses_what_is_not_applied(api, options, message):
    with pytest.raises(docker.errors.APIError) as refused:
        api.create_container("busybox", ["true"], host_config=api.create_host_config(**options))
    assert refused.value.status_code == 400 and message in refused.value.explanation
    assert api.containers(all=True) == []


def test_stop_waits_the_containers_own_stop_timeout(api):
    container = api.create_container("busybox", ["sh", "-c", "trap '' TERM; sleep 60 & wait"], stop_timeout=1)
    api.start(container)
    time.sleep(0.5)  # the trap set
    started = time.monotonic()
    api.stop(container)  # no t=: the container's StopTimeout, not 10 s
    assert time.monotonic() - started < 6
    assert api.wait(container)["StatusCode"] == 137


def test_wait_returns_at_an_exit_a_restart_policy_follows(api):
    """dockerd releases a not-running wait at every exit, a restart's too."""
    policy = {"Name": "always", "MaximumRetryCount": 0}
    container = api.create_container(
        "busybox", ["sh", "-c", "exit 3"], host_config=api.create_host_config(restart_policy=policy)
    )
    api.start(container)
    assert api.wait(container, timeout=30)["StatusCode"] == 3
    with pytest.raises(docker.errors.APIError) as refused:
        api.remove_container(container)
    assert refused.value.status_code == 409 and "stop the container before" in refused.value.explanation.lower()


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return buf.getvalue()


def test_import_a_root_file_system_with_changes(api):
    statuses = api.import_image_from_data(
        _rootfs_tar(), repository="test/imported", tag="v1", changes=["USER foobar", 'CMD ["echo"]']
    )
    image_id = json.loads(statuses.splitlines()[-1])["status"]
    shown = api.inspect_image("test/imported:v1")
    assert shown["Id"] == image_id and shown["RepoTags"] == ["test/imported:v1"]
    assert (shown["Config"]["User"], shown["Config"]["Cmd"]) == ("foobar", ["echo"])
    with pytest.raises(docker.errors.APIError) as refused:
        api.import_image_from_url("http://127.0.0.1:9/rootfs.tar", repository="test/url")
    assert refused.value.status_code == 400 and "not a URL" in refused.value.explanation
    api.remove_image(image_id)


def test_load_answers_a_line_per_name_chunked(api):
    """docker-py reads a load's answer line by line only when it is chunked."""
    api.tag("busybox", "alpine", "3.10")
    archive = b"".join(api.get_image("alpine:3.10"))
    api.remove_image("alpine:3.10")
    lines = list(api.load_image(archive))  # (the image is busybox too)
    assert {"stream": "Loaded image: alpine:3.10\n"} in lines and all(list(line) == ["stream"] for line in lines)
    api.remove_image("alpine:3.10")


def _health(api, container) -> dict:
    return api.inspect_container(container)["State"].get("Health") or {}


@pytest.mark.parametrize(
    "test, status, streak",
    [("true", "healthy", 0), ("false", "unhealthy", 1), (["CMD", "sh", "-c", "echo checked; exit 0"], "healthy", 0)],
)
def test_health_checks_run_every_interval(api, test, status, streak):
    second = 1_000_000_000
    check = {"test": test, "interval": second // 4, "timeout": second, "retries": 1}
    container = api.create_container("busybox", ["sleep", "60"], healthcheck=check)
    shown = api.inspect_container(container)["Config"]["Healthcheck"]
    assert shown["Test"] == (["CMD-SHELL", test] if isinstance(test, str) else test)
    api.start(container)
    assert wait_until(lambda: _health(api, container).get("Status") == status, seconds=20)
    health = _health(api, container)
    assert health["FailingStreak"] >= streak and health["Log"][-1]["ExitCode"] == (0 if status == "healthy" else 1)
    if isinstance(test, list):
        assert health["Log"][-1]["Output"] == "checked\n"
    api.stop(container, timeout=1)


def test_health_start_period_forgives_early_failures(api):
    second = 1_000_000_000
    check = {
        "test": "echo x >> /counter; test $(wc -l < /counter) -ge 3",
        "interval": second // 4,
        "retries": 1,
        "start_period": 3 * second,
    }
    container = api.create_container("busybox", ["sleep", "60"], healthcheck=check)
    api.start(container)
    assert wait_until(lambda: _health(api, container).get("Status") == "healthy", seconds=20)
    api.stop(container, timeout=1)


def test_top_lists_the_containers_processes_and_exec_of_nothing_exits_127(api):
    container = _running(api, "sleep", "60")
    top = api.top(container)
    assert [row[-1] for row in top["Processes"]] == ["sleep 60"]
    execution = api.exec_create(container, ["no-such-command"])
    output = api.exec_start(execution)
    assert b"executable file not found" in output and api.exec_inspect(execution)["ExitCode"] == 127
    # Execs leave the init's helpers (a launcher, a forker in the exec's kept cgroup): not the container's.
    assert api.exec_start(api.exec_create(container, ["true"])) == b""
    assert [row[-1] for row in api.top(container)["Processes"]] == ["sleep 60"]


def test_an_image_by_its_whole_bare_id(api):
    image_id = api.inspect_image("busybox")["Id"]
    assert api.inspect_image(image_id.partition(":")[2])["Id"] == image_id


def test_system_df(daemon, api):
    container = api.create_container("busybox", ["true"])
    client = docker.DockerClient(base_url=daemon.host)
    usage = client.df()
    client.close()
    assert [i["RepoTags"] for i in usage["Images"]] == [["busybox:latest"]] and usage["LayersSize"] > 0
    assert [c["Id"] for c in usage["Containers"]] == [container["Id"]] and usage["BuildCache"] == []
    assert isinstance(usage["Volumes"], list)


def test_log_driver_none_refuses_reading(daemon):
    client = docker.DockerClient(base_url=daemon.host)
    try:
        assert client.containers.run("busybox", "echo hello", log_config={"type": "none"}, remove=True) is None
        container = client.containers.run("busybox", "echo hello", log_config={"type": "none"}, detach=True)
        assert container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
        with pytest.raises(docker.errors.APIError) as refused:
            container.logs()
        assert refused.value.status_code == 501 and "does not support reading" in refused.value.explanation
        container.remove(force=True)
    finally:
        client.close()


def test_update_changes_the_restart_policy_and_refuses_a_kind_of_limit_the_container_lacks(api):
    container = _running(api)
    api.update_container(container, restart_policy={"Name": "on-failure", "MaximumRetryCount": 42})
    assert api.inspect_container(container)["HostConfig"]["RestartPolicy"] == {
        "Name": "on-failure",
        "MaximumRetryCount": 42,
    }
    with pytest.raises(docker.errors.APIError) as refused:
        api.update_container(container, mem_limit="300m", cpu_shares=3)
    assert refused.value.status_code == 400 and "cpu, memory limits" in refused.value.explanation
    assert api.inspect_container(container)["HostConfig"]["Memory"] == 0  # (nothing changed)


@pytest.mark.parametrize("tty", [True, False])
@pytest.mark.parametrize("keys, typed", [(None, b"\x10\x11"), ("ctrl-x", b"\x18"), ("a,ctrl-@", b"a\x00")])
def test_exec_detach_keys_leave_the_command_running(api, tty, keys, typed):
    container = _running(api)
    execution = api.exec_create(container, "cat", stdin=True, tty=tty, stdout=True, detach_keys=keys)
    sock = api.exec_start(execution, tty=tty, socket=True)
    raw = sock._sock
    try:
        raw.sendall(b"x")
        time.sleep(0.3)
        raw.sendall(typed[:1])  # a sequence's start held back, then typed on
        if typed[1:]:
            time.sleep(0.3)
            raw.sendall(typed[1:])
        raw.settimeout(10)
        received = b""
        while chunk := raw.recv(4096):  # the end of the stream: detached
            received += chunk
        assert received.endswith(b"x") and typed not in received
        assert api.exec_inspect(execution)["Running"] is True
    finally:
        raw.close()
        sock.close()
    del sock, raw
    gc.collect()


def test_exec_detach_keys_refused_when_malformed(api):
    with pytest.raises(docker.errors.APIError) as refused:
        api.exec_create(_running(api), "cat", stdin=True, detach_keys="ctrl-1")
    assert refused.value.status_code == 400 and "Invalid detach keys" in refused.value.explanation


def test_load_of_no_archive_is_an_error_line(daemon):
    """As dockerd: the load answers an errorDetail line (docker-py's ImageLoadError)."""
    client = docker.DockerClient(base_url=daemon.host)
    try:
        with pytest.raises(docker.errors.ImageLoadError) as refused:
            client.images.load(b"this is no tar")
        assert "tar" in str(refused.value)
    finally:
        client.close()
    del refused
    gc.collect()  # (the answer docker-py stopped reading keeps its socket until collected)
    assert daemon.docker("load", input=b"this is no tar").returncode == 1


def test_logs_until(api):
    container = api.create_container("busybox", ["sh", "-c", "echo early; sleep 3; echo late"])
    before = time.time()
    api.start(container)
    assert api.wait(container)["StatusCode"] == 0
    assert api.logs(container, until=1) == b""
    assert api.logs(container, until=int(time.time()) + 1) == b"early\nlate\n"
    assert api.logs(container, until=int(before) + 2) == b"early\n"  # (late came 3 s after the start)
    stamped = api.logs(container, until=int(time.time()) + 1, timestamps=True).splitlines()
    assert [line.split(b" ", 1)[1] for line in stamped] == [b"early", b"late"]


@pytest.mark.parametrize("keys,typed", [(None, b"\x10\x11"), ("ctrl-x", b"\x18")])
def test_attach_detach_keys_leave_the_container_running(api, keys, typed):
    """A container's attach with stdin ends at the detach keys (ctrl-p ctrl-q unless
    ``detachKeys`` says otherwise), which the container never reads; it runs on."""
    container = api.create_container("busybox", "cat", stdin_open=True, tty=True)
    api.start(container)
    params = {"stdin": 1, "stdout": 1, "stream": 1, **({"detachKeys": keys} if keys else {})}
    sock = api.attach_socket(container, params)
    raw = sock._sock
    try:
        raw.sendall(b"x")
        time.sleep(0.3)
        raw.sendall(typed)
        raw.settimeout(10)
        received = b""
        while chunk := raw.recv(4096):  # the end of the stream: detached
            received += chunk
        assert b"x" in received and typed not in received
        assert api.inspect_container(container)["State"]["Running"] is True
    finally:
        raw.close()
        sock.close()
    del sock, raw
    gc.collect()
    with pytest.raises(docker.errors.APIError) as refused:
        api.attach_socket(container, {"stdin": 1, "stream": 1, "detachKeys": "ctrl-1"})
    assert refused.value.status_code == 400


def _cgroup_values(pid: int, controller: str, v1_name: str, v2_name: str) -> list:
    """The values of a limit's file in the cgroup of ``pid`` holding ``controller``
    (v1, or v2 where it is there) and its parents (the limits sit on the
    container's cgroup, its commands in children of it)."""
    found = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                top, name = f"/sys/fs/cgroup/{names}", v1_name
            elif names == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                top, name = "/sys/fs/cgroup", v2_name
            else:
                continue
            while path not in ("", "/"):
                with contextlib.suppress(FileNotFoundError):
                    with open(f"{top}{path}/{name}") as value:
                        found.append(value.read().strip())
                path = os.path.dirname(path)
    return found


def test_update_changes_a_running_containers_limits(api):
    container = api.create_container(
        "busybox", ["sleep", "60"], host_config=api.create_host_config(mem_limit=64 << 20, cpu_shares=512)
    )
    api.start(container)
    pid = api.inspect_container(container)["State"]["Pid"]
    api.update_container(container, mem_limit=48 << 20, cpu_shares=768)
    host = api.inspect_container(container)["HostConfig"]
    assert host["Memory"] == 48 << 20 and host["CpuShares"] == 768
    assert str(48 << 20) in _cgroup_values(pid, "memory", "memory.limit_in_bytes", "memory.max")
    assert {"768", "30"} & set(_cgroup_values(pid, "cpu", "cpu.shares", "cpu.weight"))  # (30: v2's weight)
    with pytest.raises(docker.errors.APIError) as refused:  # no cpuset: a 400 naming it, nothing changed
        api.update_container(container, cpuset_cpus="0")
    assert refused.value.status_code == 400 and "cpuset" in refused.value.explanation
    assert api.inspect_container(container)["HostConfig"]["CpusetCpus"] == ""


def test_group_add_gives_supplementary_groups(api):
    container = api.create_container(
        "busybox", ["id", "-G"], host_config=api.create_host_config(group_add=[1000, "1001"])
    )
    api.start(container)
    assert api.wait(container)["StatusCode"] == 0
    assert api.logs(container).split() == [b"0", b"1000", b"1001"]
    assert api.inspect_container(container)["HostConfig"]["GroupAdd"] == ["1000", "1001"]
    named = api.create_container("busybox", "true", host_config=api.create_host_config(group_add=["nosuchgroup"]))
    with pytest.raises(docker.errors.APIError) as refused:  # (looked up in the image at the start, as Docker's)
        api.start(named)
    assert refused.value.status_code == 400 and "nosuchgroup" in refused.value.explanation


def test_volume_labels_are_kept(daemon):
    client = docker.DockerClient(base_url=daemon.host)
    try:
        volume = client.volumes.create("labelled", labels={"team": "a"})
        assert volume.attrs["Labels"] == {"team": "a"}
        assert client.volumes.get("labelled").attrs["Labels"] == {"team": "a"}
        assert [v.attrs["Labels"] for v in client.volumes.list() if v.name == "labelled"] == [{"team": "a"}]
        volume.remove()
        assert client.volumes.create("labelled").attrs["Labels"] == {}  # (a volume's labels go with it)
        client.volumes.get("labelled").remove()
    finally:
        client.close()


def test_build_failure_and_untagged_build_as_the_legacy_builder(daemon):
    """A failed RUN's message is the legacy builder's; an untagged build's image
    is found by the short id it reports, and listed (dangling) until pruned."""
    client = docker.DockerClient(base_url=daemon.host)
    try:
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 3\n"))
        assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in str(failed.value)
        del failed
        gc.collect()  # (the answer docker-py stopped reading keeps its socket until collected)
        image, _ = client.images.build(fileobj=io.BytesIO(b"FROM busybox\nCMD echo untagged\n"))
        assert client.containers.run(image, remove=True) == b"untagged\n"
        assert image.id in [i.id for i in client.images.list(all=True)]
        client.images.prune()
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(image.id)
    finally:
        client.close()


def test_build_prune_forgets_the_build_cache(daemon):
    client = docker.DockerClient(base_url=daemon.host)
    dockerfile = b"FROM busybox\nRUN head -c 100000 /dev/urandom > /blob\nCMD true\n"
    try:
        client.images.build(fileobj=io.BytesIO(dockerfile), tag="cached:1")
        client.images.remove("cached:1")  # (the RUN's step stays in the build cache, with its layer)
        pruned = client.api.prune_builds()
        assert pruned["CachesDeleted"] and pruned["SpaceReclaimed"] >= 100000
        assert client.api.prune_builds() == {"CachesDeleted": None, "SpaceReclaimed": 0}
        _, log = client.images.build(fileobj=io.BytesIO(dockerfile), tag="cached:1")
        assert not any("Using cache" in line.get("stream", "") for line in log)  # (built again)
        client.images.remove("cached:1")
    finally:
        client.close()


def test_save_by_id_carries_no_names_and_load_reports_the_archives(daemon):
    """As Docker's: an image saved by id has no names, and a load reports the names
    its archive carried, not the others the image has in the store."""
    client = docker.DockerClient(base_url=daemon.host)
    try:
        image = client.images.get("busybox")
        image.tag("second", "1")
        by_id = b"".join(image.save(named=False))
        (loaded,) = client.images.load(by_id)
        assert loaded.id == image.id
        by_name = b"".join(client.images.get("second:1").save(named="second:1"))
        client.images.remove("second:1")
        (loaded,) = client.images.load(by_name)
        assert "second:1" in loaded.tags
        names = tarfile.open(fileobj=io.BytesIO(by_id)).extractfile("manifest.json").read()
        assert json.loads(names)[0]["RepoTags"] in (None, [])
        client.images.remove("second:1")
    finally:
        client.close()


def test_build_steps_stderr_is_red_as_the_legacy_builders(api):
    """A RUN's stderr lines come red (``ESC[91m`` ... ``ESC[0m``), its stdout plain, each whole."""
    script = b'FROM busybox\nRUN echo out; echo "err line" >&2; printf "no newline" >&2\n'
    lines = [chunk.get("stream") for chunk in api.build(fileobj=io.BytesIO(script), decode=True, nocache=True)]
    assert "\x1b[91merr line\n\x1b[0m" in lines and "\x1b[91mno newline\n\x1b[0m" in lines
    assert "out\n" in lines


def test_config_volumes_are_anonymous_volumes_removed_with_v(api):
    """Config.Volumes: an anonymous volume at each path, there for cp before the
    start and after the end; ``rm -v`` removes it, a plain rm keeps it (as Docker's)."""
    before = {v["Name"] for v in api.volumes()["Volumes"] or []}
    container = api.create_container("busybox", ["cat", "/vol1/file"], volumes=["/vol1"])
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        info = tarfile.TarInfo("file")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"data\n"))
    assert api.put_archive(container, "/vol1", payload.getvalue())
    api.start(container)
    assert api.wait(container)["StatusCode"] == 0 and api.logs(container) == b"data\n"
    stream, stat = api.get_archive(container, "/vol1/file")
    assert stat["size"] == 5 and b"data\n" in b"".join(stream)
    (made,) = {v["Name"] for v in api.volumes()["Volumes"]} - before
    api.remove_container(container, v=True)
    assert made not in {v["Name"] for v in api.volumes()["Volumes"] or []}
    kept = api.create_container("busybox", ["true"], volumes=["/vol2"])
    api.start(kept)
    api.wait(kept)
    api.remove_container(kept)
    (left,) = {v["Name"] for v in api.volumes()["Volumes"] or []} - before
    api.remove_volume(left)


def test_volumes_from_mounts_another_containers_volumes(api):
    before = {v["Name"] for v in api.volumes()["Volumes"] or []}
    source = api.create_container(
        "busybox", ["sh", "-c", "echo shared > /data/file"], volumes=["/data"], name="volume-source"
    )
    api.start(source)
    assert api.wait(source)["StatusCode"] == 0
    reader = api.create_container(
        "busybox",
        ["sh", "-c", "cat /data/file; touch /data/new"],
        host_config=api.create_host_config(volumes_from=["volume-source:ro"]),
    )
    api.start(reader)
    assert api.wait(reader)["StatusCode"] == 1  # (read-only: the touch fails)
    assert api.logs(reader, stderr=False) == b"shared\n"
    assert api.inspect_container(reader)["HostConfig"]["VolumesFrom"] == ["volume-source:ro"]
    with pytest.raises(docker.errors.NotFound):
        api.create_container("busybox", "true", host_config=api.create_host_config(volumes_from=["nosuch"]))
    (made,) = {v["Name"] for v in api.volumes()["Volumes"]} - before
    api.remove_container(source, v=True)  # (the volume stays while the reader mounts it)
    assert made in {v["Name"] for v in api.volumes()["Volumes"]}
    api.remove_container(reader, v=True)
    api.remove_volume(made)


def test_container_prune_reports_the_space_of_the_layers_it_removed(api):
    written = api.create_container("busybox", ["sh", "-c", "head -c 50000 /dev/zero > /data"])
    running = _running(api)
    api.start(written)
    assert api.wait(written)["StatusCode"] == 0
    result = api.prune_containers()
    assert result["ContainersDeleted"] == [written["Id"]] and result["SpaceReclaimed"] >= 50000
    assert api.prune_containers() == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    assert api.inspect_container(running)["State"]["Running"] is True


def test_commit_shows_its_containers_image_as_parent(api):
    container = api.create_container("busybox", ["touch", "/made"])
    api.start(container)
    api.wait(container)
    committed = api.commit(container, repository="committed", tag="1")
    assert api.inspect_image(committed["Id"])["Parent"] == api.inspect_image("busybox")["Id"]
    assert api.inspect_image("busybox")["Parent"] == ""
    api.remove_image("committed:1")


def test_commit_of_a_container_ending_meanwhile(api):
    """A commit right after the start of a short command: it may end during the
    commit (its root gone from /proc), which is then made of the stopped container."""
    for _ in range(5):
        container = api.create_container("busybox", ["touch", "/made"])
        api.start(container)
        image = api.commit(container)["Id"]
        api.wait(container)
        assert api.inspect_image(image)["Id"] == image
        api.remove_container(container)
        api.remove_image(image)


def test_empty_dockerfile_is_an_error_status(api):
    """As dockerd: a 400 before any stream (docker-py's regression test 443)."""
    with pytest.raises(docker.errors.APIError) as refused:
        for _ in api.build(fileobj=io.BytesIO(), tag="a/b/c"):
            pass
    assert refused.value.status_code == 400 and "cannot be empty" in refused.value.explanation


def _exec_start_raw(daemon, exec_id: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(daemon.socket)
    body = b'{"Detach": false, "Tty": false}'
    sock.sendall(
        f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\nUser-Agent: docker-sdk-python/7.1.0\r\n"
        f"Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def test_exec_output_waits_until_the_101_is_read(daemon, api):
    """docker-py (#3332) parses the 101's headers from a buffered read and then
    reads the raw socket: output that came in that read is lost.  However late
    the client's first read (here 0.3 s, more than a loaded machine's delay),
    it holds the 101 alone; the output follows, whole."""
    container = _running(api)
    for _ in range(3):
        exec_id = api.exec_create(container, ["sh", "-c", "echo hello out; echo hello err >&2"])["Id"]
        sock = _exec_start_raw(daemon, exec_id)
        try:
            time.sleep(0.3)
            first = sock.recv(65536)  # (what docker-py's buffered readline takes in)
            assert first.startswith(b"HTTP/1.1 101 UPGRADED\r\n") and first.endswith(b"\r\n\r\n"), first
            rest = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        finally:
            sock.close()
        frames = []
        while rest:
            size = int.from_bytes(rest[4:8], "big")
            frames.append((rest[0], rest[8 : 8 + size]))
            rest = rest[8 + size :]
        assert sorted(frames) == [(1, b"hello out\n"), (2, b"hello err\n")], frames
