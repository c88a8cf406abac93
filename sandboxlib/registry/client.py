"""The HTTP side of the distribution API (Docker Registry HTTP API v2) for
one repository of one registry, on httpx: manifests (``HEAD`` before
``GET``), blobs streamed, monolithic uploads.  Every failure is a
:class:`~sandboxlib.errors.RegistryError` naming registry, repository and
HTTP status.

Transport (:mod:`sandboxlib.registry.hosts`): HTTPS verified against the
system's CA certificates and the registry's own in ``certs.d``; plain HTTP
only for a registry on loopback or named insecure, and only when it does not
speak TLS.  Proxy variables of the environment are not used for loopback
registries (they are on this machine).  Credentials (:mod:`.auth`): a 401 is
answered once with basic credentials or a bearer token; redirects to another
host (blob storage) never carry them."""
from __future__ import annotations

import contextlib
import io
import json
from typing import BinaryIO, Callable, Iterator, Optional, Tuple

import httpx

from ..errors import RegistryAuthError, RegistryDataError, RegistryError, RegistryNotFound
from .auth import Authenticator
from .credentials import Credentials
from .hosts import host_of, is_certificate_failure, is_tls_refusal
from .names import RemoteReference

__all__ = ["Repository", "MANIFEST_LIMIT", "SCHEMA1_TYPES"]

MANIFEST_LIMIT = 4 << 20   # bytes; as containerd and the distribution spec's guidance
CONFIG_LIMIT = 16 << 20    # an image config blob
SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+json",
                 "application/vnd.docker.distribution.manifest.v1+prettyjws")
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_REDIRECTS = 5
CHUNK = 1 << 20


class Repository:
    """One repository of a registry, over one HTTP connection pool; a context manager."""

    def __init__(self, ref: RemoteReference, *, push: bool = False,
                 credentials: Optional[Credentials] = None) -> None:
        """``push``: the requests will write (the token scope asks for push);
        ``credentials``: these rather than the stored ones (login)."""
        self.registry, self.repository = ref.registry, ref.repository
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}" if ref.repository else ""
        self.auth = Authenticator(ref, scope, self.error, credentials)
        self.host = host_of(ref)
        self.scheme = "https"  # until the registry turns out not to speak TLS (where that is allowed)
        self.http = httpx.Client(timeout=TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                 verify=self.host.ssl_context(), trust_env=not self.host.loopback,
                                 headers={"User-Agent": "sandboxlib"})

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host.api_host}/v2/{self.repository}"

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def error(self, status: Optional[int], detail: str, kind=RegistryError) -> RegistryError:
        return kind(self.registry, self.repository, status, detail)

    # -- requests --------------------------------------------------------------
    @contextlib.contextmanager
    def request(self, method: str, url: str, what: str, *, ok=(200,), **kwargs) -> Iterator[httpx.Response]:
        """A streamed response whose status is in ``ok``, else the RegistryError for it."""
        try:
            response = self._send(method, url, what, **kwargs)
            try:
                if response.status_code not in ok:
                    raise self._refusal(response, what)
                yield response
            finally:
                response.close()
        except httpx.TooManyRedirects:
            raise self.error(None, f"{what}: more than {MAX_REDIRECTS} redirects") from None
        except httpx.HTTPError as err:
            raise self.error(None, f"{what}: {type(err).__name__}: {err}") from None

    def _send(self, method: str, url: str, what: str, *, headers=None, content=None) -> httpx.Response:
        """Send with the credentials the registry is known to want; a 401 is answered once.
        ``content`` may be a function returning the body (called again for another try)."""
        headers = dict(headers or {})
        authorization = self.auth.header()
        if authorization:
            headers["Authorization"] = authorization
        response = self._send_once(method, url, what, headers, content)
        if response.status_code != 401:
            return response
        try:
            headers["Authorization"] = self.auth.answer(response, what)
        finally:
            response.close()
        return self._send_once(method, url, what, headers, content)

    def _send_once(self, method: str, url: str, what: str, headers, content) -> httpx.Response:
        """Send, falling back to plain HTTP once when that is allowed and the registry does not speak TLS."""
        def send(to: str) -> httpx.Response:
            body = content() if callable(content) else content
            return self.http.send(self.http.build_request(method, to, headers=headers, content=body), stream=True)
        try:
            return send(url)
        except httpx.ConnectError as err:
            secure = f"https://{self.host.api_host}/"
            if self.host.plain_http_allowed and is_tls_refusal(err) and url.startswith(secure):
                self.scheme = "http"
                return send(f"http://{self.host.api_host}/" + url[len(secure):])
            if is_certificate_failure(err):
                raise self.error(None, f"{what}: the TLS certificate of {self.host.api_host} is not trusted "
                                       f"({err}); {self.host.certificate_hint()}") from None
            raise

    def _refusal(self, response: httpx.Response, what: str) -> RegistryError:
        status = response.status_code
        body = b""
        if response.request.method != "HEAD":
            with contextlib.suppress(httpx.HTTPError):
                body = _read_capped(response, 4096, lambda: None)
        detail = f"{what}: {status} {response.reason_phrase}" + _error_text(body)
        if status in (401, 403):
            return self.auth.refused(f"{what}: {status} {response.reason_phrase}{_error_text(body)}", status)
        if status == 404:
            return self.error(status, detail, RegistryNotFound)
        return self.error(status, detail)

    # -- manifests ---------------------------------------------------------------
    def head_manifest(self, ref: str, accept: str) -> Tuple[Optional[str], str]:
        """(Docker-Content-Digest or None, media type) of a manifest, without its body."""
        with self.request("HEAD", f"{self.base}/manifests/{ref}", f"manifest {ref}",
                          headers={"Accept": accept}) as response:
            return response.headers.get("Docker-Content-Digest"), _media_type(response)

    def get_manifest(self, ref: str, accept: str) -> Tuple[bytes, str, Optional[str]]:
        """(bytes, media type, Docker-Content-Digest or None) of a manifest or index."""
        what = f"manifest {ref}"
        with self.request("GET", f"{self.base}/manifests/{ref}", what, headers={"Accept": accept}) as response:
            data = _read_capped(response, MANIFEST_LIMIT, lambda: self.error(
                200, f"{what} is over {MANIFEST_LIMIT} bytes", RegistryDataError))
            return data, _media_type(response), response.headers.get("Docker-Content-Digest")

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> Optional[str]:
        """Upload a manifest under a tag or digest; returns the registry's Docker-Content-Digest."""
        with self.request("PUT", f"{self.base}/manifests/{ref}", f"manifest {ref}", ok=(200, 201),
                          content=data, headers={"Content-Type": media_type}) as response:
            return response.headers.get("Docker-Content-Digest")

    # -- blobs ---------------------------------------------------------------------
    @contextlib.contextmanager
    def blob(self, digest: str) -> Iterator["BlobStream"]:
        """A blob's bytes as a file-like stream (redirects to blob storage followed)."""
        with self.request("GET", f"{self.base}/blobs/{digest}", f"blob {digest}") as response:
            yield BlobStream(self, response, digest)

    def small_blob(self, digest: str, limit: int = CONFIG_LIMIT) -> bytes:
        with self.request("GET", f"{self.base}/blobs/{digest}", f"blob {digest}") as response:
            return _read_capped(response, limit, lambda: self.error(
                200, f"blob {digest} is over {limit} bytes", RegistryDataError))

    def has_blob(self, digest: str) -> bool:
        with contextlib.suppress(RegistryNotFound):
            with self.request("HEAD", f"{self.base}/blobs/{digest}", f"blob {digest}"):
                return True
        return False

    def upload_blob(self, digest: str, stream: BinaryIO, size: int) -> None:
        """A monolithic upload: ``POST`` an upload session, ``PUT`` the bytes with their digest."""
        what = f"upload of blob {digest}"
        with self.request("POST", f"{self.base}/blobs/uploads/", what, ok=(202,)) as response:
            location = response.headers.get("Location")
            if not location:
                raise self.error(response.status_code, f"{what}: the answer has no Location")
            url = response.url.join(location)
        url = url.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}

        def body() -> Iterator[bytes]:
            stream.seek(0)
            return _chunks(stream)
        with self.request("PUT", str(url), what, ok=(201,), content=body, headers=headers):
            pass

    def ping(self) -> None:
        """``GET /v2/``: the registry answers and takes the credentials (what login checks)."""
        with self.request("GET", f"{self.scheme}://{self.host.api_host}/v2/", "the API root"):
            pass


class BlobStream(io.RawIOBase):
    """A blob download read like a file (what the store's importer reads);
    a transfer that breaks off is a RegistryDataError."""

    def __init__(self, repository: Repository, response: httpx.Response, digest: str) -> None:
        self.repository, self.digest = repository, digest
        self.chunks = response.iter_bytes(CHUNK)
        self.pending = b""
        self.done = 0
        self.on_read: Callable[[int], None] = lambda done: None
        length = response.headers.get("Content-Length")
        self.total = int(length) if length and length.isdigit() else None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return b""
            except httpx.HTTPError as err:
                raise self.repository.error(200, f"blob {self.digest}: the transfer broke off after "
                                                  f"{self.done} bytes ({type(err).__name__}: {err})",
                                            RegistryDataError) from None
        cut = len(self.pending) if size is None or size < 0 else size
        data, self.pending = self.pending[:cut], self.pending[cut:]
        self.done += len(data)
        self.on_read(self.done)
        return data


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def _read_capped(response: httpx.Response, limit: int, too_big) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            error = too_big()
            if error is None:
                break
            raise error
    return bytes(data[:limit])


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def _error_text(body: bytes) -> str:
    """The registry's own error codes and messages (the spec's ``{"errors": [...]}``), if any."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        errors = json.loads(body)["errors"]
        return " (" + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3]) + ")"
    return ""
