"""Answering a registry's ``401``: the ``WWW-Authenticate`` challenge read
(``Basic realm=...`` or ``Bearer realm=...,service=...,scope=...``), the
credentials found (:mod:`sandboxlib.registry.credentials`), and for
``Bearer`` a token fetched from the realm, which may be on another host
(Docker's token protocol: ``GET realm?service=S&scope=S``, the credentials
as basic auth, or none for anonymous access; with an identity token from
``config.json``, OAuth2's refresh grant instead, as Docker does: ``POST realm``
with ``grant_type=refresh_token``, the token, ``service``, ``scope`` and
``client_id`` as a form).

Tokens are cached for the process, per realm, service, scope and
credentials, for their ``expires_in`` (60 s when not given, as the spec
says); a request refused with a cached token fetches a new one once (a
token revoked or expired early), and a second refusal is a
:class:`~sandboxlib.errors.RegistryAuthError`.  The challenge a registry
answered with is remembered for the process too, so later requests carry
their credentials or token from the start (a warm pull stays one request).
Secrets never appear in exceptions."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from typing import Dict, Optional, Tuple

import httpx

from ..errors import RegistryAuthError
from . import credentials as stored
from .credentials import Credentials
from .hosts import host_of
from .names import RemoteReference

__all__ = ["parse_challenge", "Authenticator", "forget_tokens"]

CLIENT_ID = "sandboxlib"  # OAuth2's client_id in a refresh grant (Docker sends "docker")
DEFAULT_EXPIRY = 60  # seconds, when the token service does not say
EXPIRY_MARGIN = 10  # a token is renewed this long before it expires
TOKEN_LIMIT = 1 << 20  # bytes of a token answer
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')

_lock = threading.Lock()
_tokens: Dict[Tuple[str, str, str, str], Tuple[str, float]] = {}
_challenges: Dict[str, Tuple[str, Dict[str, str]]] = {}


def parse_challenge(header: Optional[str]) -> Optional[Tuple[str, Dict[str, str]]]:
    """``Bearer realm="https://auth",service="reg",scope="repository:a:pull,push"`` ->
    ("bearer", {"realm": ..., "service": ..., "scope": ...}); None when there is none."""
    if not header or not header.strip():
        return None
    scheme, _, rest = header.strip().partition(" ")
    params: Dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pos = match.end()
    return scheme.lower(), params


def _covers(mine: str, asked: str) -> bool:
    """``repository:a:pull,push`` covers ``repository:a:pull``."""
    resource, _, actions = mine.rpartition(":")
    asked_resource, _, asked_actions = asked.rpartition(":")
    return resource == asked_resource and set(asked_actions.split(",")) <= set(actions.split(","))


def forget_tokens() -> None:
    """Drop the cached tokens and challenges (after a logout)."""
    with _lock:
        _tokens.clear()
        _challenges.clear()


class Authenticator:
    """The credentials side of one repository's requests.

    ``scope`` is what the requests need (``repository:team/app:pull``);
    ``credentials`` given explicitly (``login``) replace the stored ones."""

    def __init__(self, ref: RemoteReference, scope: str, error, credentials: Optional[Credentials] = None) -> None:
        self.ref, self.scope, self.error = ref, scope, error
        self._explicit = credentials
        self._credentials: Optional[Credentials] = credentials
        self._looked_up = credentials is not None
        self._lookup_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Authenticator({self.ref.registry!r}, {self.scope!r})"

    @property
    def credentials(self) -> Optional[Credentials]:
        with self._lookup_lock:  # the worker threads of a pull or push: one helper call
            if not self._looked_up:
                self._credentials, self._looked_up = stored.lookup(self.ref.registry), True
        return self._credentials

    def _identity(self) -> str:
        creds = self.credentials
        if creds is None:
            return "anonymous"
        return hashlib.sha256(f"{creds.username}\0{creds.password}\0{creds.identity_token}".encode()).hexdigest()

    def header(self) -> Optional[str]:
        """The Authorization header to send now, if the registry is known to want one."""
        with _lock:
            challenge = _challenges.get(self.ref.api_host)
        if challenge is None:
            return None
        scheme, params = challenge
        if scheme == "basic":
            return self._basic()
        with _lock:
            cached = _tokens.get(self._key(params))
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        return None

    def _key(self, params: Dict[str, str]) -> Tuple[str, str, str, str]:
        return params.get("realm", ""), params.get("service", ""), self.scope, self._identity()

    def _basic(self) -> Optional[str]:
        creds = self.credentials
        if creds is None or (creds.identity_token and not creds.password):  # an identity token alone
            return None
        return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()

    def answer(self, response: httpx.Response, what: str) -> str:
        """The Authorization header for another try after the 401 ``response``,
        or the RegistryAuthError to raise."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        if challenge is None or challenge[0] not in ("basic", "bearer"):
            raise self.error(
                401,
                f"{what}: 401 Unauthorized with no Basic or Bearer challenge "
                f"({challenge[0] if challenge else 'no WWW-Authenticate'})",
                RegistryAuthError,
            )
        scheme, params = challenge
        sent = response.request.headers.get("Authorization")
        with _lock:
            _challenges[self.ref.api_host] = challenge
            if scheme == "bearer" and sent:  # the token was refused: not to be used again
                _tokens.pop(self._key(params), None)
        if scheme == "basic":
            header = self._basic()
            if header is None:
                raise self.error(
                    401,
                    f"{what}: the registry wants credentials and none are stored for "
                    f"{self.ref.registry} ({self.login_hint()})",
                    RegistryAuthError,
                )
            if sent == header:
                raise self.refused(what)
            return header
        if sent is not None and sent.startswith("Basic "):
            raise self.refused(what)
        return f"Bearer {self._fetch_token(params, what)}"

    def login_hint(self) -> str:
        return f"log in with sandboxlib.login or `sandboxlib login {self.ref.registry}`"

    def refused(self, what: str, status: int = 401) -> RegistryAuthError:
        creds = self.credentials
        if creds is not None and creds.identity_token:
            who = "the identity token stored" + (f" for {creds.username!r}" if creds.password else "")
        else:
            who = f"the credentials of {creds.username!r}" if creds else "anonymous access"
        hint = "" if creds else f" ({self.login_hint()})"
        return self.error(status, f"{what}: the registry refused {who}{hint}", RegistryAuthError)

    def _fetch_token(self, params: Dict[str, str], what: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise self.error(401, f"{what}: a Bearer challenge without a realm", RegistryAuthError)
        realm_url = httpx.URL(realm)
        realm_host = host_of(self.ref, realm_url.netloc.decode("ascii"))
        if realm_url.scheme != "https" and not (realm_url.scheme == "http" and realm_host.plain_http_allowed):
            raise self.error(
                401,
                f"{what}: the token realm {realm} is not HTTPS (credentials are not sent "
                "in clear but to a loopback or insecure host)",
                RegistryAuthError,
            )
        scopes = [self.scope] if self.scope else []
        if params.get("scope") and not _covers(self.scope, params["scope"]):
            scopes.append(params["scope"])
        service = [("service", params["service"])] if params.get("service") else []
        headers = {"User-Agent": "sandboxlib"}
        creds = self.credentials
        try:
            with httpx.Client(
                verify=realm_host.ssl_context(),
                timeout=httpx.Timeout(30.0, connect=10.0),
                trust_env=not realm_host.loopback,
            ) as client:
                if creds is not None and creds.identity_token:  # OAuth2's refresh grant (RFC 6749 6)
                    form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token)]
                    form += service + [("scope", " ".join(scopes)), ("client_id", CLIENT_ID)]
                    answer = client.post(realm_url, data=dict(form), headers=headers)
                else:
                    basic = self._basic()
                    if basic:
                        headers["Authorization"] = basic
                    answer = client.get(
                        realm_url.copy_merge_params(service + [("scope", s) for s in scopes]), headers=headers
                    )
        except httpx.HTTPError as err:
            raise self.error(
                None, f"{what}: the token service {realm_url.host}: {type(err).__name__}", RegistryAuthError
            ) from None
        refusals = (400, 401, 403) if creds is not None and creds.identity_token else (401, 403)  # 400: invalid_grant
        if answer.status_code in refusals:
            raise self.refused(f"{what}: the token service {realm_url.host}", answer.status_code)
        if answer.status_code != 200 or len(answer.content) > TOKEN_LIMIT:
            raise self.error(
                answer.status_code,
                f"{what}: the token service {realm_url.host} answered {answer.status_code} {answer.reason_phrase}",
                RegistryAuthError,
            )
        try:
            document = answer.json()
            token = document.get("token") or document.get("access_token")
            expires = float(document.get("expires_in") or DEFAULT_EXPIRY)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self.error(200, f"{what}: the token service {realm_url.host} answered no token", RegistryAuthError)
        with _lock:
            _tokens[self._key(params)] = (token, time.monotonic() + max(expires - EXPIRY_MARGIN, 1.0))
        return token
