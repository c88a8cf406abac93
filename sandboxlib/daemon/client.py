"""A small client of the daemon for sandboxlib's own command line: JSON
requests over the UNIX socket or TCP with mutual TLS (http.client), streams
of multiplexed frames (logs), and an exec over a taken-over connection (101 UPGRADED)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import struct
import threading
import urllib.parse
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..errors import ConfigError, SandboxError
from .hosts import default_host, is_tcp, socket_path, tcp_address
from .tls import TlsFiles, client_context, client_files

__all__ = ["DaemonClient", "DaemonError", "NoDaemon", "find_daemon"]


class DaemonError(SandboxError):
    """The daemon answered with an error: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class NoDaemon(SandboxError):
    """No daemon answers on the socket."""


Opener = Callable[[Optional[float]], socket.socket]


class _Connection(http.client.HTTPConnection):
    def __init__(self, opener: Opener, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._opener = opener

    def connect(self) -> None:
        self.sock = self._opener(self.timeout)


def _unix_opener(path: str) -> Opener:
    def connect(timeout: Optional[float]) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def _tls_opener(host: str, tls: Optional[TlsFiles]) -> Opener:
    """Connections to ``tcp://HOST:PORT``, always mutual TLS (a daemon serves no plain TCP)."""
    if tls is None:
        raise ConfigError(
            "DOCKER_TLS_VERIFY",
            f"{host}: a sandboxlib daemon on TCP speaks only mutual TLS: set DOCKER_TLS_VERIFY=1 and "
            "DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem; default ~/.docker)",
        )
    address, port = tcp_address(host)
    context = client_context(tls)

    def connect(timeout: Optional[float]) -> socket.socket:
        sock = socket.create_connection((address, port), timeout=timeout)
        try:
            return context.wrap_socket(sock, server_hostname=address)
        except BaseException:
            sock.close()
            raise

    return connect


def _frames(read) -> Iterator[Tuple[int, bytes]]:
    """(stream, data) of ``[stream, 0, 0, 0, size BE32]`` frames until EOF."""
    while True:
        head = _exactly(read, 8)
        if len(head) < 8:
            return
        stream, size = struct.unpack(">BxxxL", head)
        yield stream, _exactly(read, size)


def _exactly(read, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _send_input(fd: int, sock: socket.socket) -> None:
    """Copy ``fd`` to the socket until EOF, then half-close it (the output goes on)."""
    try:
        while data := os.read(fd, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the stream ended (the socket closed) first
        pass


class DaemonClient:
    """Requests to the daemon at ``host`` (``unix:///path``, or ``tcp://HOST:PORT`` with ``tls``)."""

    def __init__(self, host: str, tls: Optional[TlsFiles] = None) -> None:
        self.host = host
        self._open = _tls_opener(host, tls) if is_tcp(host) else _unix_opener(socket_path(host))

    def _send(self, method: str, path: str, query: Optional[Dict[str, Any]], body: Any, timeout: Optional[float]):
        url = "/v1.44" + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        connection = _Connection(self._open, timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, url, body=data, headers={"Content-Type": "application/json"} if data else {})
            response = connection.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as err:
            connection.close()
            raise NoDaemon(f"no sandboxlib daemon answers on {self.host} ({err.strerror})") from None
        except ssl.SSLError as err:
            connection.close()
            raise NoDaemon(f"the TLS handshake with {self.host} failed ({err.reason or err})") from None
        except BaseException:
            connection.close()
            raise
        if response.status >= 400:
            try:
                message = json.loads(response.read()).get("message", "")
            except ValueError:
                message = response.reason
            connection.close()
            raise DaemonError(response.status, message)
        return connection, response

    def call(self, method: str, path: str, query: Optional[Dict[str, Any]] = None, body: Any = None) -> Any:
        """The decoded JSON answer (None for an empty one)."""
        connection, response = self._send(method, path, query, body, 60)
        try:
            data = response.read()
        finally:
            connection.close()
        return json.loads(data) if data.strip() else None

    def stream(self, path: str, query: Dict[str, Any]) -> Iterator[Tuple[int, bytes]]:
        """(stream, data) of a logs-like answer (raw: all of it as stream 1)."""
        connection, response = self._send("GET", path, query, None, None)
        try:
            if response.getheader("Content-Type", "") == "application/vnd.docker.raw-stream":
                while chunk := response.read1(65536):
                    yield 1, chunk
            else:
                yield from _frames(response.read)
        finally:
            connection.close()

    def is_sandboxlib(self) -> bool:
        try:
            version = self.call("GET", "/version")
        except (NoDaemon, DaemonError, OSError):
            return False
        return str((version.get("Platform") or {}).get("Name", "")).startswith("sandboxlib")

    def exec(self, container: str, argv, *, env: Optional[Dict[str, str]] = None) -> Iterator[Tuple[int, bytes]]:
        """Run ``argv`` in a running container: (stream, data) of its output; then ``exec_code``."""
        created = self.call(
            "POST",
            f"/containers/{container}/exec",
            body={
                "Cmd": list(argv),
                "AttachStdout": True,
                "AttachStderr": True,
                "Env": [f"{k}={v}" for k, v in (env or {}).items()],
            },
        )
        self.last_exec = created["Id"]
        yield from self._hijacked(f"/exec/{created['Id']}/start", b'{"Detach": false, "Tty": false}', True)

    def attach(self, container: str, stdin: Optional[int] = None) -> Iterator[Tuple[int, bytes]]:
        """(stream, data) of a container's output from now until its run ends; ``stdin``: an fd
        whose bytes go to the container's stdin (its end: the daemon ends it if ``StdinOnce``)."""
        found = self.call("GET", f"/containers/{container}/json")
        if not found["State"]["Running"]:  # (the daemon would wait for its next start, as docker start -a)
            raise DaemonError(409, "You cannot attach to a stopped container, start it first")
        tty = bool(found["Config"].get("Tty"))
        path = f"/containers/{container}/attach?stream=1&stdout=1&stderr=1" + ("&stdin=1" if stdin is not None else "")
        yield from self._hijacked(path, b"", not tty, stdin)

    def _hijacked(
        self, path: str, body: bytes, multiplexed: bool, stdin: Optional[int] = None
    ) -> Iterator[Tuple[int, bytes]]:
        """A POST answered with 101 UPGRADED: the output that follows, until EOF
        (``stdin``'s bytes sent meanwhile by a thread, then a half-close)."""
        sock = self._open(None)
        if stdin is not None and isinstance(sock, ssl.SSLSocket):  # (no half-close in TLS, nor a writer thread)
            sock.close()
            raise DaemonError(400, "attach -i over TLS is not supported: attach without -i")
        try:
            sock.sendall(
                f"POST /v1.44{path} HTTP/1.1\r\nHost: localhost\r\n"
                f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            reader = sock.makefile("rb")
            status = reader.readline().split(b" ", 2)
            if len(status) < 2 or status[1] not in (b"101", b"200"):
                raise DaemonError(int(status[1]) if len(status) > 1 else 500, f"POST {path} failed")
            while reader.readline() not in (b"\r\n", b""):
                pass
            if stdin is not None:  # (a daemon thread: a read of a terminal may block past our end)
                threading.Thread(target=_send_input, args=(stdin, sock), daemon=True).start()
            if multiplexed:
                yield from _frames(reader.read1)
            else:
                while chunk := reader.read1(65536):
                    yield 1, chunk
        finally:
            sock.close()

    def exec_code(self) -> int:
        return int(self.call("GET", f"/exec/{self.last_exec}/json")["ExitCode"] or 0)


def find_daemon() -> DaemonClient:
    """The daemon our command line talks to: ``SANDBOXLIB_HOST``, else ``DOCKER_HOST`` when a
    sandboxlib daemon answers there, else the default socket.  A ``tcp://`` host
    is reached with mutual TLS, as the docker CLI: ``DOCKER_TLS_VERIFY`` and
    the certificates of ``DOCKER_CERT_PATH``."""
    tls = client_files(os.environ)
    explicit = os.environ.get("SANDBOXLIB_HOST")
    if explicit:
        return DaemonClient(explicit, tls)
    docker_host = os.environ.get("DOCKER_HOST", "")
    # (a tcp:// one without DOCKER_TLS_VERIFY is not ours: a sandboxlib daemon serves no plain TCP)
    if docker_host.startswith("unix://") or (docker_host.startswith("tcp://") and tls is not None):
        candidate = DaemonClient(docker_host, tls)
        if candidate.is_sandboxlib():
            return candidate
    return DaemonClient(default_host())
