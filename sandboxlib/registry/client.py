"""The HTTP side of the distribution API (Docker Registry HTTP API v2) for
one repository of one registry, on httpx: manifests (``HEAD`` before
``GET``), blobs streamed (resumed, retried and bounded: ``transfer.py``),
monolithic uploads of small blobs, chunked of large ones, cross-repository
mounts.  Every failure is a
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
from typing import BinaryIO, Iterator, Optional, Sequence, Tuple

import httpx

from ..errors import RegistryDataError, RegistryError, RegistryNotFound
from .auth import Authenticator
from .credentials import Credentials
from .hosts import host_of, is_certificate_failure, is_client_certificate_refusal, is_tls_refusal
from .names import RemoteReference
from .transfer import RETRY_STATUSES, BlobDownload, Retries

__all__ = ["Repository", "MANIFEST_LIMIT", "SCHEMA1_TYPES"]

MANIFEST_LIMIT = 4 << 20  # bytes; as containerd and the distribution spec's guidance
CONFIG_LIMIT = 16 << 20  # an image config blob
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_REDIRECTS = 5
CHUNK = 1 << 20
CHUNKED_UPLOAD_ABOVE = 64 << 20  # bytes; a larger blob goes up in PATCH chunks
UPLOAD_CHUNK = 16 << 20


class Repository:
    """One repository of a registry, over one HTTP connection pool; a context manager."""

    def __init__(
        self,
        ref: RemoteReference,
        *,
        push: bool = False,
        credentials: Optional[Credentials] = None,
        mirror: bool = False,
    ) -> None:
        """``push``: the requests will write (the token scope asks for push);
        ``credentials``: these rather than the stored ones (login); ``mirror``: a
        mirror, which is not waited for when it refuses connections (the next
        source is tried at once)."""
        self.registry, self.repository = ref.registry, ref.repository
        self.mirror = mirror
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}" if ref.repository else ""
        self.auth = Authenticator(ref, scope, self.error, credentials)
        self.host = host_of(ref)
        self.scheme = "https"  # until the registry turns out not to speak TLS (where that is allowed)
        self.http = httpx.Client(
            timeout=TIMEOUT,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            verify=self.host.ssl_context(),
            trust_env=not self.host.loopback,
            headers={"User-Agent": "sandboxlib"},
        )

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host.api_host}/v2/{self.repository}"

    def __enter__(self) -> Repository:
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
        """A streamed response whose status is in ``ok``, else the RegistryError for it.
        ``GET`` and ``HEAD`` are sent again after 429/5xx answers and resets (``transfer.Retries``)."""
        retries = Retries() if method in ("GET", "HEAD") else Retries(limit=0)
        answered = False
        while True:
            try:
                response = self._send(method, url, what, **kwargs)
                try:
                    if response.status_code in RETRY_STATUSES and retries.again(response):
                        continue
                    if response.status_code not in ok:
                        raise self._refusal(response, what)
                    answered = True
                    yield response
                    return
                finally:
                    response.close()
            except httpx.TooManyRedirects:
                raise self.error(None, f"{what}: more than {MAX_REDIRECTS} redirects") from None
            except httpx.TransportError as err:
                if is_client_certificate_refusal(err):
                    raise self.error(
                        None, f"{what}: the TLS handshake failed ({err}): {self.host.client_certificate_hint()}"
                    ) from None
                if answered or (self.mirror and isinstance(err, httpx.ConnectError)) or not retries.again(err):
                    raise self.error(None, f"{what}: {type(err).__name__}: {err}") from None
            except httpx.HTTPError as err:
                raise self.error(None, f"{what}: {type(err).__name__}: {err}") from None

    def _send(self, method: str, url: str, what: str, *, headers=None, content=None, params=None) -> httpx.Response:
        """Send with the credentials the registry is known to want; a 401 is answered once.
        ``content`` may be a function returning the body (called again for another try)."""
        headers = dict(headers or {})
        authorization = self.auth.header()
        if authorization:
            headers["Authorization"] = authorization
        response = self._send_once(method, url, what, headers, content, params)
        if response.status_code != 401:
            return response
        try:
            headers["Authorization"] = self.auth.answer(response, what)
        finally:
            response.close()
        return self._send_once(method, url, what, headers, content, params)

    def _send_once(self, method: str, url: str, what: str, headers, content, params=None) -> httpx.Response:
        """Send, falling back to plain HTTP once when that is allowed and the registry does not speak TLS."""

        def send(to: str) -> httpx.Response:
            body = content() if callable(content) else content
            request = self.http.build_request(method, to, headers=headers, content=body, params=params)
            return self.http.send(request, stream=True)

        try:
            return send(url)
        except httpx.ConnectError as err:
            secure = f"https://{self.host.api_host}/"
            if self.host.plain_http_allowed and is_tls_refusal(err) and url.startswith(secure):
                self.scheme = "http"
                return send(f"http://{self.host.api_host}/" + url[len(secure) :])
            if is_client_certificate_refusal(err):
                raise  # request() names it
            if is_certificate_failure(err):
                raise self.error(
                    None,
                    f"{what}: the TLS certificate of {self.host.api_host} is not trusted "
                    f"({err}); {self.host.certificate_hint()}",
                ) from None
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
        with self.request(
            "HEAD", f"{self.base}/manifests/{ref}", f"manifest {ref}", headers={"Accept": accept}
        ) as response:
            return response.headers.get("Docker-Content-Digest"), _media_type(response)

    def get_manifest(self, ref: str, accept: str) -> Tuple[bytes, str, Optional[str]]:
        """(bytes, media type, Docker-Content-Digest or None) of a manifest or index; one
        cut short (fewer bytes than its Content-Length) is asked for again, then a RegistryDataError."""
        what = f"manifest {ref}"
        retries = Retries()
        while True:
            with self.request("GET", f"{self.base}/manifests/{ref}", what, headers={"Accept": accept}) as response:
                data, complete = _read_complete(
                    response,
                    MANIFEST_LIMIT,
                    lambda: self.error(200, f"{what} is over {MANIFEST_LIMIT} bytes", RegistryDataError),
                )
                if complete:
                    return data, _media_type(response), response.headers.get("Docker-Content-Digest")
            if not retries.again():
                raise self.error(
                    200,
                    f"{what} was cut off: {len(data)} bytes of the {response.headers.get('Content-Length')} announced",
                    RegistryDataError,
                )

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> Optional[str]:
        """Upload a manifest under a tag or digest; returns the registry's Docker-Content-Digest."""
        with self.request(
            "PUT",
            f"{self.base}/manifests/{ref}",
            f"manifest {ref}",
            ok=(200, 201),
            content=data,
            headers={"Content-Type": media_type},
        ) as response:
            return response.headers.get("Docker-Content-Digest")

    # -- blobs ---------------------------------------------------------------------
    def download(self, digest: str, size: int, cancel=None) -> BlobDownload:
        """A blob of ``size`` bytes as a file-like stream, resumed after breaks, never
        read past ``size`` (see ``transfer.py``); close it when done."""
        return BlobDownload(self, digest, size, cancel)

    def small_blob(self, digest: str, limit: int = CONFIG_LIMIT) -> bytes:
        with self.request("GET", f"{self.base}/blobs/{digest}", f"blob {digest}") as response:
            return _read_capped(
                response, limit, lambda: self.error(200, f"blob {digest} is over {limit} bytes", RegistryDataError)
            )

    def has_blob(self, digest: str) -> bool:
        with contextlib.suppress(RegistryNotFound):
            with self.request("HEAD", f"{self.base}/blobs/{digest}", f"blob {digest}"):
                return True
        return False

    def upload_blob(self, digest: str, stream: BinaryIO, size: int, mount_from: Sequence[str] = ()) -> bool:
        """Put a blob into the repository: mounted from another repository of
        the registry that has it (``mount_from``, tried in order; True), else
        uploaded (False): monolithic (``POST``, ``PUT`` with the bytes) up to
        CHUNKED_UPLOAD_ABOVE bytes, in ``PATCH`` chunks of UPLOAD_CHUNK above."""
        what = f"upload of blob {digest}"
        url = None
        for source in mount_from:  # a 202 is an upload session instead: used below
            status, url = self._start_upload(what, {"mount": digest, "from": source})
            if status == 201:
                return True
        if url is None:
            _, url = self._start_upload(what, {})
        if size > CHUNKED_UPLOAD_ABOVE:
            url, stream, size = self._patch_chunks(url, stream, size, what), io.BytesIO(), 0
        url = url.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}

        def body() -> Iterator[bytes]:
            stream.seek(0)
            return _chunks(stream)

        with self.request("PUT", str(url), what, ok=(201,), content=body, headers=headers):
            pass
        return False

    def ping(self) -> None:
        """``GET /v2/``: the registry answers and takes the credentials (what login checks)."""
        with self.request("GET", f"{self.scheme}://{self.host.api_host}/v2/", "the API root"):
            pass

    def _start_upload(self, what: str, params: dict) -> Tuple[int, httpx.URL]:
        """``POST`` an upload session (or a mount); (status, the session's URL)."""
        with self.request("POST", f"{self.base}/blobs/uploads/", what, ok=(201, 202), params=params) as response:
            location = response.headers.get("Location")
            if not location:
                raise self.error(response.status_code, f"{what}: the answer has no Location")
            return response.status_code, response.url.join(location)

    def _patch_chunks(self, url: httpx.URL, stream: BinaryIO, size: int, what: str) -> httpx.URL:
        """The blob in ``PATCH`` requests of UPLOAD_CHUNK bytes (Content-Range:
        first-last); each answer's Location is where the next goes."""
        start = 0
        while start < size:
            data = stream.read(min(UPLOAD_CHUNK, size - start))
            if not data:
                raise self.error(None, f"{what}: the blob ended after {start} of {size} bytes")
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(data)),
                "Content-Range": f"{start}-{start + len(data) - 1}",
            }
            with self.request("PATCH", str(url), what, ok=(202,), content=data, headers=headers) as response:
                location = response.headers.get("Location")
                if not location:
                    raise self.error(response.status_code, f"{what}: the answer has no Location")
                url = response.url.join(location)
            start += len(data)
        return url


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


def _read_complete(response: httpx.Response, limit: int, too_big) -> Tuple[bytes, bool]:
    """(body, whether it is complete): a body that breaks off or is shorter than
    its Content-Length is incomplete."""
    data = bytearray()
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise too_big()
    except httpx.TransportError:
        return bytes(data), False
    length = response.headers.get("Content-Length", "")
    return bytes(data), not length.isdigit() or int(length) == response.num_bytes_downloaded


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def _error_text(body: bytes) -> str:
    """The registry's own error codes and messages (the spec's ``{"errors": [...]}``), if any."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        errors = json.loads(body)["errors"]
        return " (" + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3]) + ")"
    return ""
