"""A private registry from Debian's docker-registry (the CNCF distribution
registry 2.8) for the registry tests, and a small fault-injecting proxy.

The registry listens on a loopback port with its storage in its own
directory, runs as a child of the test run (SIGTERM if the run dies),
and ``close()`` stops it by its pid and removes its directory.  The proxy
is a threaded HTTP server on loopback that forwards to the registry and
spoils what it is told to (a blob corrupted or cut short, a manifest
replaced); ``close()`` joins its threads, so it leaves no socket behind."""
from __future__ import annotations

import ctypes
import http.client
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, Optional, Tuple

REGISTRY = "/usr/bin/docker-registry"
PR_SET_PDEATHSIG = 1
CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {top}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: sandboxlib-tests
{tls}{auth}"""
TLS = """  tls:
    certificate: {top}/server.crt
    key: {top}/server.key
"""


class RegistryError(Exception):
    """The registry did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry on ``127.0.0.1:port`` with everything under ``top``; ``host`` is ``127.0.0.1:PORT``."""

    def __init__(self, top: str, tls: Optional[Tuple[bytes, bytes]] = None, auth: str = "") -> None:
        """``tls``: (certificate PEM, key PEM) to serve HTTPS with (see tests/tlskit.py);
        ``auth``: the config's ``auth:`` section (``{top}`` is replaced), see htpasswd_auth and
        TokenIssuer.auth_config."""
        if not os.path.exists(REGISTRY):
            raise RegistryError("docker-registry is not installed (apt-get install docker-registry, or make test)")
        self.top, self.port = top, free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        if tls:
            for name, data in zip(("server.crt", "server.key"), tls):
                with open(f"{top}/{name}", "wb") as f:
                    f.write(data)
        with open(f"{top}/config.yml", "w") as f:
            f.write(CONFIG.format(top=top, port=self.port, tls=TLS.format(top=top) if tls else "",
                                  auth=auth.replace("{top}", top)))
        self._log = open(f"{top}/registry.log", "wb")
        env = {"PATH": "/usr/bin:/bin", "HOME": top}   # no REGISTRY_* overrides from our environment
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [REGISTRY, "serve", f"{top}/config.yml"], stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=self._log, env=env, preexec_fn=_die_with_parent)
        try:
            self._wait_up(30)
        except BaseException:
            self.close()
            raise

    def _wait_up(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RegistryError(f"docker-registry exited with status {self._proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=2,
                                            context=_unverified()) as answer:
                    if answer.status == 200:
                        return
            except urllib.error.HTTPError as err:  # up, and wants credentials
                if err.code == 401:
                    return
                raise RegistryError(f"docker-registry answered {err.code}: {self.log()}") from None
            except OSError:
                time.sleep(0.05)
        raise RegistryError(f"docker-registry did not answer within {seconds:.0f} s: {self.log()}")

    def log(self) -> str:
        with open(f"{self.top}/registry.log", errors="replace") as f:
            return f.read()[-2000:]

    def close(self) -> None:
        """Stop the registry and remove its directory (idempotent)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            self._log.close()
            shutil.rmtree(self.top, ignore_errors=True)


HTPASSWD_AUTH = """auth:
  htpasswd:
    realm: sandboxlib-test
    path: {top}/htpasswd
"""


def write_htpasswd(top: str, users: Dict[str, str]) -> None:
    """{top}/htpasswd for HTPASSWD_AUTH, bcrypt as distribution wants (Debian's apache2-utils)."""
    lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True,
                            timeout=30).stdout.strip() for user, password in users.items()]
    with open(f"{top}/htpasswd", "w") as f:
        f.write("\n".join(lines) + "\n")


def _unverified():
    """For the start-up probe only: is the registry up (the tests verify its certificate themselves)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# -- the fault proxy ----------------------------------------------------------------------
SCHEMA1 = b"""{"schemaVersion": 1, "name": "team/old", "tag": "1", "architecture": "amd64",
 "fsLayers": [], "history": [], "signatures": []}"""
SCHEMA1_TYPE = "application/vnd.docker.distribution.manifest.v1+prettyjws"


class FaultProxy:
    """Forwards to ``upstream`` (``host:port``); ``faults`` maps a path suffix
    (``blobs/sha256:...``, ``manifests/1``) to ``corrupt``, ``truncate`` or ``schema1``.
    ``requests`` lists (method, path) of what was asked."""

    def __init__(self, upstream: str, faults: Dict[str, str]) -> None:
        self.upstream, self.faults, self.requests = upstream, dict(faults), []
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy")
        self.thread.start()

    def fault(self, path: str) -> Optional[str]:
        return next((kind for suffix, kind in self.faults.items() if path.endswith(suffix)), None)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()  # joins the handler threads


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for them: no socket outlives the proxy
    block_on_close = True


def _handler(proxy: FaultProxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._forward()

        def do_GET(self) -> None:
            self._forward()

        def _forward(self) -> None:
            proxy.requests.append((self.command, self.path))
            kind = proxy.fault(self.path.split("?")[0])
            if kind == "schema1":
                return self._answer(200, {"Content-Type": SCHEMA1_TYPE}, SCHEMA1)
            upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                out = {k: v for k, v in answer.getheaders() if k.lower() not in ("connection", "transfer-encoding")}
            finally:
                upstream.close()
            if kind == "corrupt" and body:
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            if kind == "truncate" and body:
                out["Content-Length"] = str(len(body))
                body = body[:len(body) // 2]
            self._answer(answer.status, out, body)

        def _answer(self, status: int, headers: dict, body: bytes) -> None:
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
    return Handler
