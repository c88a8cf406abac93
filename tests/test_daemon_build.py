"""``POST /build`` (the legacy builder's endpoint) driven by the real
``DOCKER_BUILDKIT=0 docker build`` and docker-py's ``images.build``; a
hostile context refused with nothing made."""

from __future__ import annotations

import io
import os
import socket
import tarfile

import docker
import psutil
import pytest

from .conftest import wait_until
from .daemonkit import Daemon, private_daemon

DOCKERFILE = """\
FROM busybox AS base
ARG WHO=nobody
COPY hello.txt /hello.txt
RUN echo "built for $WHO" && cat /hello.txt > /copy.txt

FROM base AS final
CMD ["cat", "/copy.txt"]
"""


@pytest.fixture(scope="module")
def daemon():
    with private_daemon("daemon-build-") as served:
        yield served


@pytest.fixture
def context(tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the context\n")
    (tmp_path / "Other.dockerfile").write_text(DOCKERFILE)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo failing && exit 3\n")
    return str(tmp_path)


def _build(daemon: Daemon, *args: str):
    return daemon.docker("build", *args, timeout=120, env_extra={"DOCKER_BUILDKIT": "0"})


def test_docker_build_legacy(daemon, context):
    args = [
        "-t",
        "built:1",
        "-f",
        os.path.join(context, "Other.dockerfile"),
        "--build-arg",
        "WHO=tests",
        "--label",
        "team=qa",
        context,
    ]
    result = _build(daemon, *args)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode() + out
    assert "Step 2/3 : COPY hello.txt /hello.txt" in out and "built for tests" in out
    assert "Successfully built " in out and "Successfully tagged built:1" in out
    assert daemon.docker("run", "--rm", "built:1").stdout == b"hello from the context\n"
    label = daemon.docker("inspect", "-f", "{{.Config.Labels.team}}", "built:1").stdout
    assert label == b"qa\n"
    again = _build(daemon, *args)  # the cache
    assert again.returncode == 0 and "Using cache" in again.stdout.decode()
    target = _build(
        daemon, "-t", "base:1", "-f", os.path.join(context, "Other.dockerfile"), "--target", "base", context
    )
    assert target.returncode == 0 and "Successfully tagged base:1" in target.stdout.decode()
    failed = _build(daemon, "-t", "failing:1", context)
    assert failed.returncode != 0 and b"failing" in failed.stdout
    assert b"3" in failed.stderr
    assert daemon.docker("image", "inspect", "failing:1").returncode != 0
    for name in ("built:1", "base:1"):
        assert daemon.docker("rmi", name).returncode == 0


def test_docker_py_images_build(daemon, context):
    client = docker.DockerClient(base_url=daemon.host, timeout=120)
    try:
        image, logs = client.images.build(
            path=context, dockerfile="Other.dockerfile", tag="pybuilt:1", buildargs={"WHO": "docker-py"}, nocache=True
        )
        streamed = "".join(entry.get("stream", "") for entry in logs)
        assert "built for docker-py" in streamed and "Using cache" not in streamed
        assert "pybuilt:1" in image.tags
        assert client.containers.run("pybuilt:1", remove=True) == b"hello from the context\n"
        with pytest.raises(docker.errors.BuildError, match="failing|exit|3"):
            client.images.build(path=context, tag="pyfailing:1")
        client.images.remove("pybuilt:1")
    finally:
        client.close()


def _tar(*members) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return data.getvalue()


def _file(name: str, payload: bytes) -> tuple:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_hostile_contexts_are_refused_with_nothing_made(daemon, tmp_path):
    dockerfile = _file("Dockerfile", b"FROM busybox\nCOPY . /\n")
    outside = tmp_path / "victim"
    hostile = {
        "traversal": _tar(dockerfile, _file(f"../../../../..{outside}", b"x")),
        "through a symlink": _tar(dockerfile, _link("out", str(tmp_path)), _file("out/victim", b"x")),
        "hard link out": _tar(dockerfile, _link("passwd", "/etc/passwd", tarfile.LNKTYPE)),
        "a device": _tar(dockerfile, (_chr("null"), None)),
        "not a tar": b"this is not a tar archive" * 100,
    }
    state = daemon.socket + ".state"
    for what, body in hostile.items():
        status, _, answer = daemon.request("POST", "/build?t=hostile:1", body, {"Content-Type": "application/x-tar"})
        assert status == 400, (what, answer)
        assert not outside.exists(), what
        assert not [n for n in os.listdir(state) if n.startswith("build-")], what
    assert daemon.docker("image", "inspect", "hostile:1").returncode != 0
    # an absolute name is the context's (as a layer's, and as dockerd reads it)
    status, _, answer = daemon.request("POST", "/build?t=absolute:1", _tar(dockerfile, _file(str(outside), b"x")))
    assert status == 200 and b"Successfully tagged absolute:1" in answer and not outside.exists()
    assert daemon.docker("rmi", "absolute:1").returncode == 0
    status, _, answer = daemon.request("POST", "/build?networkmode=container:x", _tar(dockerfile))
    assert status == 400 and b"networkmode" in answer


def _chr(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def test_a_client_gone_mid_build_leaves_nothing(daemon):
    """The build goes on to its end on its own thread, then its context is removed."""
    body = _tar(_file("Dockerfile", b"FROM busybox\nRUN echo begun && sleep 1 && echo ended\n"))
    me = psutil.Process(daemon.proc.pid)
    fds = me.num_fds()
    state = daemon.socket + ".state"
    client = socket.socket(socket.AF_UNIX)
    client.connect(daemon.socket)
    head = f"POST /build?t=gone:1&nocache=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    client.sendall(head.encode() + body)
    assert b"begun" in _read_until(client, b"begun")
    client.close()
    assert wait_until(lambda: daemon.docker("image", "inspect", "gone:1").returncode == 0, seconds=30)
    assert wait_until(lambda: not [n for n in os.listdir(state) if n.startswith("build-")])
    assert wait_until(lambda: me.num_fds() <= fds)
    assert daemon.docker("rmi", "gone:1").returncode == 0


def _read_until(sock, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = sock.recv(4096)
        if not chunk:
            break
        seen += chunk
    return seen


HOSTS_DOCKERFILE = """\
FROM busybox
ENV FOO=bar
RUN ping -c1 -W2 hello.world.test
RUN cp /etc/hosts /hosts-file
"""


def test_build_extra_hosts_and_cache_from(daemon, tmp_path):
    """``--add-host`` (the CLI's and docker-py's ``extra_hosts``) in each RUN's
    /etc/hosts; ``--cache-from`` reusing only the steps of the images named."""
    (tmp_path / "Dockerfile").write_text(HOSTS_DOCKERFILE)
    built = _build(daemon, "-t", "hosts:1", "--add-host", "hello.world.test:127.0.0.1", str(tmp_path))
    assert built.returncode == 0, built.stderr.decode() + built.stdout.decode()
    copied = daemon.docker("run", "--rm", "hosts:1", "cat", "/hosts-file").stdout
    assert b"127.0.0.1\thello.world.test\n" in copied, copied
    again = _build(
        daemon, "-t", "hosts:2", "--add-host", "hello.world.test:127.0.0.1", "--cache-from", "hosts:1", str(tmp_path)
    )
    assert again.stdout.decode().count("Using cache") == 3, again.stdout.decode()
    client = docker.APIClient(base_url=daemon.host, timeout=120)
    try:
        script = io.BytesIO(HOSTS_DOCKERFILE.encode())
        lines = list(
            client.build(
                fileobj=script,
                tag="hosts:3",
                extra_hosts={"hello.world.test": "127.0.0.1"},
                cache_from=["nosuchtag"],
                decode=True,
            )
        )
        assert not [line for line in lines if "error" in line], lines
        assert not [line for line in lines if "Using cache" in line.get("stream", "")], lines
        with pytest.raises(docker.errors.APIError, match="extrahosts") as info:
            list(client.build(fileobj=io.BytesIO(HOSTS_DOCKERFILE.encode()), extra_hosts={"x": "not-an-ip"}))
        assert info.value.status_code == 400
    finally:
        client.close()
    for name in ("hosts:1", "hosts:2", "hosts:3"):
        assert daemon.docker("rmi", name).returncode == 0
