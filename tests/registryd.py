"""A private registry from Debian's docker-registry (the CNCF distribution
registry 2.8) for the registry tests, and a small fault-injecting proxy.

The registry listens on a loopback port with its storage in its own
directory, runs as a child of the test run (SIGTERM if the run dies),
and ``close()`` stops it by its pid and removes its directory.  The proxy
is a threaded HTTP server on loopback that forwards to the registry and
spoils what it is told to (a blob corrupted or cut short, a manifest
replaced); ``close()`` joins its threads, so it leaves no socket behind."""

from __future__ import annotations

import contextlib
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
from typing import Dict, Iterator, Optional, Tuple

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
{tls}{auth}{proxy}"""
PROXY = """proxy:
  remoteurl: {upstream}
"""
TLS = """  tls:
    certificate: {top}/server.crt
    key: {top}/server.key
"""
CLIENT_CAS = """    clientcas:
      - {top}/client-ca.crt
"""


class RegistryError(Exception):
    """The registry did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry on ``127.0.0.1:port`` with everything under ``top``; ``host`` is ``127.0.0.1:PORT``."""

    def __init__(
        self,
        top: str,
        tls: Optional[Tuple[bytes, bytes]] = None,
        auth: str = "",
        mirror_of: str = "",
        client_ca: Optional[bytes] = None,
    ) -> None:
        """``tls``: (certificate PEM, key PEM) to serve HTTPS with (see tests/tlskit.py);
        ``auth``: the config's ``auth:`` section (``{top}`` is replaced), see htpasswd_auth and
        TokenIssuer.auth_config; ``mirror_of``: a URL (``http://127.0.0.1:PORT``): the registry
        is a pull-through cache of that one (distribution's ``proxy: remoteurl``); ``client_ca``: a CA
        certificate (PEM) with ``tls``: clients must show a certificate it signed (mutual TLS)."""
        if not os.path.exists(REGISTRY):
            raise RegistryError("docker-registry is not installed (apt-get install docker-registry, or make test)")
        self.top, self.port = top, free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        if tls:
            for name, data in zip(("server.crt", "server.key"), tls):
                with open(f"{top}/{name}", "wb") as f:
                    f.write(data)
        if client_ca:
            with open(f"{top}/client-ca.crt", "wb") as f:
                f.write(client_ca)
        with open(f"{top}/config.yml", "w") as f:
            f.write(
                CONFIG.format(
                    top=top,
                    port=self.port,
                    tls=(TLS + (CLIENT_CAS if client_ca else "")).format(top=top) if tls else "",
                    auth=auth.replace("{top}", top),
                    proxy=PROXY.format(upstream=mirror_of) if mirror_of else "",
                )
            )
        self._log = open(f"{top}/registry.log", "wb")
        env = {"PATH": "/usr/bin:/bin", "HOME": top}  # no REGISTRY_* overrides from our environment
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [REGISTRY, "serve", f"{top}/config.yml"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_up(30, mutual=client_ca is not None)
        except BaseException:
            self.close()
            raise

    def _wait_up(self, seconds: float, mutual: bool = False) -> None:
        """Until ``GET /v2/`` answers (with mutual TLS, which the probe has no
        certificate for: until the port takes connections)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RegistryError(f"docker-registry exited with status {self._proc.returncode}: {self.log()}")
            try:
                if mutual:
                    socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                    return
                with urllib.request.urlopen(
                    f"{self.scheme}://{self.host}/v2/", timeout=2, context=_unverified()
                ) as answer:
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
    lines = [
        subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        for user, password in users.items()
    ]
    with open(f"{top}/htpasswd", "w") as f:
        f.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """``os.environ`` with ``variables`` set, restored after (in a rootless worker's
    check function too: the worker has its own environment)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


ONCE = ("cut", "429", "503")  # faults that strike the first matching request only
ENDLESS_LIMIT = 256 << 20  # what "endless" sends at most, if the client never stops reading
SLOW = 0.5


class FaultProxy:
    """Forwards to ``upstream`` (``host:port``); ``faults`` maps a path suffix
    (``blobs/sha256:...``, ``manifests/1``) to a fault:

    - ``corrupt``: the last byte flipped; ``truncate``: half the body under the
      whole body's Content-Length; ``schema1``: a schema 1 manifest instead;
    - ``cut``: half the body, then the connection closes (once);
    - ``429``/``503``: that status instead of an answer (once);
    - ``endless``: the body, then zeros without end (no Content-Length);
    - ``no-range``: the Range header is dropped (the registry answers 200);
    - ``slow``: the answer waits SLOW seconds;
    - ``stall``: half the body, then nothing until the proxy closes;
    - ``redirect``: ``307`` to ``redirect_to`` + the path (blob storage elsewhere);
    - several joined by ``+`` (``truncate+no-range``).

    ``upstream_tls``: an ssl context: the upstream speaks HTTPS (the proxy plain
    HTTP); ``inject``: headers added to every request sent upstream (a storage
    server's own credentials, as a signed URL carries them).

    ``requests`` lists (method, path) of what was asked; ``log`` has one dict per
    request: method, path, range (the header or None), sent (body bytes written),
    authorization (the header or None).
    ``most_blob_gets`` is the most blob GETs that were in flight at once."""

    def __init__(
        self,
        upstream: str,
        faults: Dict[str, str],
        *,
        upstream_tls: Optional[ssl.SSLContext] = None,
        inject: Optional[Dict[str, str]] = None,
        redirect_to: str = "",
    ) -> None:
        self.upstream, self.faults, self.requests, self.log = upstream, dict(faults), [], []
        self.upstream_tls, self.inject, self.redirect_to = upstream_tls, dict(inject or {}), redirect_to
        self._lock = threading.Lock()
        self.blob_gets = self.most_blob_gets = 0
        self.closing = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy")
        self.thread.start()

    def fault(self, path: str) -> Optional[str]:
        with self._lock:
            suffix, kind = next(((s, k) for s, k in self.faults.items() if path.endswith(s)), (None, None))
            if kind in ONCE:
                del self.faults[suffix]
            return kind

    def sent(self, suffix: str) -> list:
        """(range header, body bytes sent) of each GET of a path ending in ``suffix``."""
        return [(e["range"], e["sent"]) for e in self.log if e["method"] == "GET" and e["path"].endswith(suffix)]

    def close(self) -> None:
        self.closing.set()
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

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(length) if length else None
            entry = {
                "method": self.command,
                "path": self.path,
                "range": self.headers.get("Range"),
                "sent": 0,
                "authorization": self.headers.get("Authorization"),
            }
            with proxy._lock:
                proxy.requests.append((self.command, self.path))
                proxy.log.append(entry)
            kinds = (proxy.fault(self.path.split("?")[0]) or "").split("+")
            counted = self.command == "GET" and "/blobs/sha256:" in self.path
            with proxy._lock:
                proxy.blob_gets += counted
                proxy.most_blob_gets = max(proxy.most_blob_gets, proxy.blob_gets)
            try:
                self._spoil(entry, kinds, body_in)
            finally:
                with proxy._lock:
                    proxy.blob_gets -= counted

        def _spoil(self, entry: dict, kinds: list, body_in) -> None:
            if "slow" in kinds:
                time.sleep(SLOW)
            if "redirect" in kinds:
                return self._answer(entry, 307, {"Location": proxy.redirect_to + self.path}, b"")
            if "schema1" in kinds:
                return self._answer(entry, 200, {"Content-Type": SCHEMA1_TYPE}, SCHEMA1)
            status = next((int(k) for k in kinds if k in ("429", "503")), None)
            if status is not None:
                return self._answer(entry, status, {"Content-Type": "text/plain"}, b"try again\n")
            # Host kept: the registry names itself in Location headers as the proxy
            dropped = ("connection",) + (("range",) if "no-range" in kinds else ())
            status, out, body = self._upstream(dropped, body_in)
            if "corrupt" in kinds and body:
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            if ("truncate" in kinds or "cut" in kinds or "stall" in kinds) and body:
                out["Content-Length"] = str(len(body))
                body = body[: len(body) // 2]
            if "endless" in kinds:
                out.pop("Content-Length", None)
                return self._answer(entry, status, out, body, endless=True)
            self._answer(entry, status, out, body, stall="stall" in kinds)

        def _upstream(self, dropped, body_in):
            if proxy.upstream_tls is not None:
                upstream = http.client.HTTPSConnection(proxy.upstream, timeout=30, context=proxy.upstream_tls)
            else:
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                headers.update(proxy.inject)
                upstream.request(self.command, self.path, body=body_in, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                out = {k: v for k, v in answer.getheaders() if k.lower() not in ("connection", "transfer-encoding")}
                return answer.status, out, body
            finally:
                upstream.close()

        def _answer(
            self, entry: dict, status: int, headers: dict, body: bytes, endless: bool = False, stall: bool = False
        ) -> None:
            self.send_response(status)
            if not endless:
                headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            try:
                self.wfile.write(body)
                entry["sent"] += len(body)
                zeros = bytes(1 << 16)
                if stall:
                    proxy.closing.wait(60)
                while endless and entry["sent"] < ENDLESS_LIMIT:
                    self.wfile.write(zeros)
                    entry["sent"] += len(zeros)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
