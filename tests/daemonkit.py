"""A sandboxlib daemon started by the tests (``python -m sandboxlib daemon``
on a socket in a temporary directory, as root or as a rootless test user),
an image store with busybox in it, and the clients' helpers: the ``docker``
CLI and raw HTTP over the socket."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Optional, Sequence, Tuple

from . import rootless
from .conftest import make_busybox_rootfs
from .imagekit import _dir_tar, add_image

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
BUSYBOX_CONFIG = {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}


def busybox_store(path: str, owner: Optional[pwd.struct_passwd] = None) -> str:
    """An image store at ``path`` holding ``busybox:latest`` (Debian's busybox-static and its applets)."""
    from sandboxlib.images import ImageStore

    root = make_busybox_rootfs(tempfile.mkdtemp(prefix="busybox-root-"))
    try:
        add_image(ImageStore(path), [_dir_tar(root)], ["busybox:latest"], BUSYBOX_CONFIG)
    finally:
        shutil.rmtree(root)
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", path], check=True)
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Daemon:
    """``sandboxlib daemon --host unix://DIR/docker.sock --store STORE``, up once it answers ``_ping``.

    In the machine's own network namespace its containers' default network is
    ``none`` (a bridge would change the machine's network); ``prefix`` (argv
    put in front, e.g. tests/netlab.py's way into its namespace) and ``env``
    run it elsewhere, where ``extra`` may ask for bridges; ``tun``: a rootless
    daemon's /dev/net/tun (tests/rootless.py's ``private_tun``)."""

    def __init__(
        self,
        directory: str,
        store: str,
        user: Optional[pwd.struct_passwd] = None,
        *extra: str,
        prefix: Sequence[str] = (),
        env: Optional[dict] = None,
        tun: Optional[str] = None,
    ) -> None:
        self.socket = os.path.join(directory, "docker.sock")
        self.host = "unix://" + self.socket
        self.store = store
        if "--default-network" not in extra:
            extra = ("--default-network", "none", *extra)
        argv = [sys.executable, "-m", "sandboxlib", "daemon", "--host", self.host, "--store", store, *extra]
        if user is not None:
            argv = rootless.launcher(user, argv, tun)
        self.log_path = os.path.join(directory, "daemon.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", env=env
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the daemon did not come up: {self.log()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            return self.request("GET", "/_ping")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 30):
        """(status, headers, body bytes) of one request."""
        connection = UnixHTTPConnection(self.socket, timeout)
        try:
            data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
            hdrs = {"Content-Type": "application/json"} if isinstance(body, (dict, list)) else {}
            connection.request(method, path, body=data, headers={**hdrs, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    @property
    def env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": os.path.dirname(self.socket)}

    def docker_argv(self, *args: str) -> list:
        return ["env", f"DOCKER_HOST={self.host}", f"DOCKER_CONFIG={os.path.dirname(self.socket)}", DOCKER, *args]

    def docker(
        self, *args: str, input: Optional[bytes] = None, timeout: float = 60, env_extra: Optional[dict] = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DOCKER, *args],
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            timeout=timeout,
            env={**self.env, **(env_extra or {})},
        )

    def close(self, timeout: float = 30) -> int:
        """SIGTERM (the daemon stops its containers), then its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def rootless_home(user: pwd.struct_passwd, shared_dir, prefix: str) -> Tuple[str, str]:
    """(top, store): a directory of the test-made ``user``'s for a rootless daemon,
    in ``shared_dir`` (which that user can reach), with a busybox store of theirs."""
    top = tempfile.mkdtemp(prefix=prefix, dir=str(shared_dir))
    os.chmod(top, 0o755)
    os.chown(top, user.pw_uid, user.pw_gid)
    store = os.path.join(top, "store")
    os.mkdir(store, 0o700)
    busybox_store(store, owner=user)
    return top, store


@contextlib.contextmanager
def private_daemon(prefix: str) -> Iterator[Daemon]:
    """A root daemon of its own on a busybox store of its own, in a fresh
    directory (``prefix``) removed with it: a test module's daemon."""
    top = tempfile.mkdtemp(prefix=prefix)
    try:
        os.chmod(top, 0o755)
        served = Daemon(top, busybox_store(os.path.join(top, "store")))
        try:
            yield served
        finally:
            served.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def api_client(daemon: Daemon, *, volumes: bool = False) -> Iterator[docker.APIClient]:  # noqa: F821
    """docker-py's low-level client of ``daemon`` for one test: the containers
    it left (and with ``volumes``, the volumes) removed after it."""
    import docker

    client = docker.APIClient(base_url=daemon.host, timeout=60)
    try:
        yield client
    finally:
        for container in client.containers(all=True):
            client.remove_container(container["Id"], force=True)
        for volume in (client.volumes()["Volumes"] or []) if volumes else ():
            client.remove_volume(volume["Name"], force=True)
        client.close()
