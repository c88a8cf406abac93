"""The daemon on TCP with mutual TLS (dockerd's ``--tlsverify``), on
127.0.0.1 only, with certificates the test makes: the docker CLI
(``--tlsverify`` flags and ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``),
docker-py's ``TLSConfig`` and our own command line as clients; a client
without a certificate, with one of another CA, or speaking plain HTTP is
refused and the daemon lives on; a TCP host without TLS is refused."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from . import rootless
from .daemonkit import DOCKER, busybox_store
from .tlskit import CA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(directory: str, files: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


class TlsDaemon:
    """``sandboxlib daemon --host tcp://127.0.0.1:PORT --tlsverify ...`` and the certificates of its clients:
    ``certs/`` (ca.pem, cert.pem, key.pem, as DOCKER_CERT_PATH wants them) signed by its CA,
    ``stranger/`` a client certificate of another CA."""

    def __init__(self, top: str, user=None) -> None:
        self.top = top
        ca, other = CA(), CA("another CA")
        server_cert, server_key = ca.issue("127.0.0.1")
        client_cert, client_key = ca.issue("client")
        stranger_cert, stranger_key = other.issue("client")
        self.server_dir = os.path.join(top, "server")
        _write(self.server_dir, {"ca.pem": ca.pem, "cert.pem": server_cert, "key.pem": server_key})
        self.certs = os.path.join(top, "certs")
        _write(self.certs, {"ca.pem": ca.pem, "cert.pem": client_cert, "key.pem": client_key})
        self.stranger = os.path.join(top, "stranger")
        _write(self.stranger, {"ca.pem": ca.pem, "cert.pem": stranger_cert, "key.pem": stranger_key})
        self.port = _free_port()
        self.host = f"tcp://127.0.0.1:{self.port}"
        self.store = os.path.join(top, "store")
        if user is not None:  # (the files readable by the daemon's user, the store its own)
            subprocess.run(["chmod", "-R", "a+rX", top], check=True)
            os.mkdir(self.store, 0o700)
        busybox_store(self.store, owner=user)
        self.log_path = os.path.join(top, "daemon.log")
        argv = [*self.daemon_argv(), "--tlsverify", *self.server_files()]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv if user is None else rootless.launcher(user, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
            )
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the daemon did not come up: {self.log()}")
            time.sleep(0.05)

    def daemon_argv(self) -> list:
        return [sys.executable, "-m", "sandboxlib", "daemon", "--host", self.host, "--store", self.store,
                "--default-network", "none"]  # fmt: skip

    def server_files(self) -> list:
        d = self.server_dir
        return ["--tlscacert", f"{d}/ca.pem", "--tlscert", f"{d}/cert.pem", "--tlskey", f"{d}/key.pem"]

    def context(self, certs: str = "", ca: str = "") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=ca or os.path.join(self.certs, "ca.pem"))
        if certs:
            context.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
        return context

    def ping(self, context: ssl.SSLContext) -> int:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            connection.request("GET", "/_ping")
            return connection.getresponse().status
        finally:
            connection.close()

    def answers(self) -> bool:
        try:
            return self.ping(self.context(self.certs)) == 200
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def docker(self, *args: str, env: dict = None, timeout: float = 60) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        return subprocess.run(
            [DOCKER, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env={**base, "DOCKER_CONFIG": self.top, **(env or {})},
        )

    def tls_flags(self, certs: str) -> list:
        return ["--tlsverify", "--tlscacert", f"{certs}/ca.pem", "--tlscert", f"{certs}/cert.pem",
                "--tlskey", f"{certs}/key.pem", "-H", self.host]  # fmt: skip

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode


@pytest.fixture(scope="module")
def daemon():
    top = tempfile.mkdtemp(prefix="daemon-tls-")
    served = TlsDaemon(top)
    yield served
    assert served.close() == 0, served.log()
    # a clean stop leaves neither its lock nor its state directory
    assert not [e for e in os.listdir("/run/sandboxlib") if e.startswith(f"tcp-127.0.0.1-{served.port}")]
    shutil.rmtree(top, ignore_errors=True)


def test_docker_cli_with_tlsverify_flags_and_environment(daemon):
    ran = daemon.docker(*daemon.tls_flags(daemon.certs), "run", "--rm", "busybox", "echo", "over tls")
    assert ran.returncode == 0 and ran.stdout == b"over tls\n", ran.stderr
    env = {"DOCKER_HOST": daemon.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": daemon.certs}
    started = daemon.docker("run", "-d", "--name", "tlsweb", "busybox", "sleep", "60", env=env)
    assert started.returncode == 0, started.stderr
    try:
        execd = daemon.docker("exec", "tlsweb", "sh", "-c", "echo inside; exit 3", env=env)
        assert (execd.returncode, execd.stdout) == (3, b"inside\n")
        listed = daemon.docker("ps", "--format", "{{.Names}}", env=env)
        assert listed.stdout == b"tlsweb\n"
    finally:
        assert daemon.docker("rm", "-f", "tlsweb", env=env).returncode == 0


DOCKER_PY = """
import sys, docker
tls = docker.tls.TLSConfig(client_cert=(sys.argv[2] + "/cert.pem", sys.argv[2] + "/key.pem"),
                           ca_cert=sys.argv[2] + "/ca.pem", verify=True)
client = docker.DockerClient(base_url=sys.argv[1], tls=tls, timeout=60)
assert client.version()["ApiVersion"] == "1.44"
sys.stdout.buffer.write(client.containers.run("busybox", "echo hi", remove=True))
"""


def test_docker_py_tls_config(daemon):
    # (in a process of its own: docker-py's TLS connection pool keeps sockets past close())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they override a session's CA (psf/requests#3829)
        env.pop(name, None)
    argv = [sys.executable, "-c", DOCKER_PY, f"https://127.0.0.1:{daemon.port}"]
    ran = subprocess.run([*argv, daemon.certs], capture_output=True, timeout=120, env=env)
    assert ran.returncode == 0 and ran.stdout == b"hi\n", ran.stderr
    refused = subprocess.run([*argv, daemon.stranger], capture_output=True, timeout=120, env=env)
    assert refused.returncode != 0 and b"SSL" in refused.stderr, refused.stderr


def _sandboxlib(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "SANDBOXLIB_HOST"))}
    return subprocess.run(
        [sys.executable, "-m", "sandboxlib", *args], capture_output=True, timeout=20, env={**base, **env}
    )


def test_our_cli_follows_docker_tls_environment(daemon):
    env = {"DOCKER_HOST": daemon.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": daemon.certs}
    assert daemon.docker("create", "--name", "ours", "busybox", "sleep", "60", env=env).returncode == 0
    try:
        assert _sandboxlib("start", "ours", env=env).returncode == 0
        listed = _sandboxlib("ps", "-q", env=env)
        assert listed.returncode == 0 and len(listed.stdout.split()) == 1, listed.stderr
        execd = _sandboxlib("exec", "ours", "echo", "from our cli", env=env)
        assert execd.returncode == 0 and execd.stdout == b"from our cli\n", execd.stderr
    finally:
        assert _sandboxlib("rm", "-f", "ours", env=env).returncode == 0
    # SANDBOXLIB_HOST=tcp://... without DOCKER_TLS_VERIFY: refused, saying what is missing
    plain = _sandboxlib("ps", env={"SANDBOXLIB_HOST": daemon.host})
    assert plain.returncode != 0 and b"DOCKER_TLS_VERIFY" in plain.stderr
    # a certificate of another CA: the handshake fails, and the message says so
    stranger = _sandboxlib("ps", env={"SANDBOXLIB_HOST": daemon.host, "DOCKER_TLS_VERIFY": "1",
                                      "DOCKER_CERT_PATH": daemon.stranger})  # fmt: skip
    assert stranger.returncode != 0 and b"TLS" in stranger.stderr, stranger.stderr


def _refused(action) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        action()


def test_clients_without_the_cas_certificate_are_refused(daemon):
    _refused(lambda: daemon.ping(daemon.context()))  # no client certificate
    _refused(lambda: daemon.ping(daemon.context(daemon.stranger)))  # another CA's
    for flags in (daemon.tls_flags(daemon.stranger), ["-H", daemon.host]):  # the docker CLI: another CA's, plain
        refused = daemon.docker(*flags, "version", "--format", "{{.Server.Version}}")
        assert refused.returncode != 0 and refused.stdout.strip() == b"", refused.stdout

    def plain_http():
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        try:
            connection.request("GET", "/_ping")
            connection.getresponse()
        finally:
            connection.close()

    _refused(plain_http)
    assert daemon.answers() and daemon.proc.poll() is None  # the daemon lives on


@pytest.mark.parametrize(
    "flags,message",
    [
        ((), b"needs mutual TLS"),
        (("--tlsverify", "--tlscacert", "/nonexistent/ca.pem"), b"--tlsverify needs --tlscert, --tlskey"),
        (("--tlscacert", "/x"), b"without --tlsverify"),
    ],
)
def test_tcp_without_mutual_tls_is_refused(daemon, flags, message):
    argv = [sys.executable, "-m", "sandboxlib", "daemon", "--host", f"tcp://127.0.0.1:{_free_port()}", *flags]
    refused = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr


def test_unreadable_certificate_files_are_named(daemon):
    files = [f if not f.endswith("key.pem") else "/nonexistent/key.pem" for f in daemon.server_files()]
    argv = [sys.executable, "-m", "sandboxlib", "daemon", "--host", f"tcp://127.0.0.1:{_free_port()}"]
    refused = subprocess.run([*argv, "--tlsverify", *files], capture_output=True, timeout=60)
    assert refused.returncode != 0 and b"/nonexistent/key.pem" in refused.stderr, refused.stderr


def test_rootless_daemon_on_tcp_with_mutual_tls(workers, shared_dir):
    user = workers["sbxtest"].user
    top = tempfile.mkdtemp(prefix="daemon-tls-rootless-", dir=str(shared_dir))
    served = TlsDaemon(top, user)
    try:
        ran = served.docker(*served.tls_flags(served.certs), "run", "--rm", "busybox", "id", "-u")
        assert ran.returncode == 0 and ran.stdout == b"0\n", ran.stderr
        _refused(lambda: served.ping(served.context(served.stranger)))
        assert served.answers()
    finally:
        assert served.close() == 0, served.log()
        shutil.rmtree(top, ignore_errors=True)
    runtime = f"/tmp/sandboxlib-{user.pw_uid}/sandboxlib"  # (the launcher clears XDG_RUNTIME_DIR)
    assert not [e for e in os.listdir(runtime) if e.startswith(f"tcp-127.0.0.1-{served.port}")]


class _FewFdsDaemon(TlsDaemon):
    FDS = 64

    def daemon_argv(self) -> list:
        return ["prlimit", f"--nofile={self.FDS}:{self.FDS}", *super().daemon_argv()]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def test_out_of_fds_the_listener_pauses_instead_of_spinning():
    """More connections than the daemon has fds: accept's EMFILE left the listener
    readable and the loop called it again at once (half a core, 40000 log lines a
    second) until a client left; now it pauses a second, as asyncio's own servers."""
    top = tempfile.mkdtemp(prefix="daemon-tls-fds-")
    served = _FewFdsDaemon(top)
    clients = []
    try:
        for _ in range(served.FDS + 20):
            clients.append(socket.create_connection(("127.0.0.1", served.port)))
        time.sleep(0.5)
        lines, cpu = _lines(served.log_path), _cpu_seconds(served.proc.pid)
        time.sleep(3)
        assert _cpu_seconds(served.proc.pid) - cpu < 0.5 and _lines(served.log_path) - lines < 30
        for client in clients:
            client.close()
        clients = []
        deadline = time.monotonic() + 15
        while not served.answers():  # (the refused handshakes' threads end, their fds are free again)
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.2)
    finally:
        for client in clients:
            client.close()
        assert served.close() == 0, served.log()
        shutil.rmtree(top, ignore_errors=True)


def _tls_request(daemon, method: str, path: str, body=None) -> tuple:
    connection = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=daemon.context(daemon.certs), timeout=10)
    try:
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_client_reset_mid_download_leaves_the_next_connections_whole(daemon):
    """A client that resets its connection while a large answer streams: the front
    closed the server's end of the socket pair from its thread, under the live
    transport, and the next connection given that fd number met the stale one
    (asyncio's "No such file or directory" in add_reader): it hung, and fds leaked."""
    command = ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; touch /made; sleep 60"]
    status, body = _tls_request(daemon, "POST", "/containers/create", {"Image": "busybox", "Cmd": command})
    container = json.loads(body)["Id"]
    try:
        assert _tls_request(daemon, "POST", f"/containers/{container}/start")[0] == 204
        made = f"/containers/{container}/archive?path=/made"
        deadline = time.monotonic() + 30
        while _tls_request(daemon, "HEAD", made)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        fds = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", daemon.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client = daemon.context(daemon.certs).wrap_socket(raw, server_hostname="127.0.0.1")
            client.sendall(f"GET /containers/{container}/archive?path=/big HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert client.recv(100).startswith(b"HTTP/1.1 200")
            time.sleep(1)  # (the answer fills every buffer on the way)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # a reset: unread data, no linger
            assert _tls_request(daemon, "GET", "/_ping") == (200, b"OK")
        deadline = time.monotonic() + 15
        while len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) > fds:
            assert time.monotonic() < deadline, "the reset connections' fds were kept"
            time.sleep(0.2)
    finally:
        _tls_request(daemon, "DELETE", f"/containers/{container}?force=1")
    assert "No such file or directory" not in daemon.log()
