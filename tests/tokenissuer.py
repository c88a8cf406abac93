"""The token issuer for distribution's ``auth: token`` (Docker's token
protocol): the one server of the registry tests that is not run for real,
since none is packaged.  A threaded HTTP server on loopback that checks basic
credentials and answers ``GET /token?service=S&scope=S...`` with a JWT
(ES256) granting the scopes asked for, signed by a key whose certificate
(made by the tests' CA, sent in the ``x5c`` header) the registry trusts
through its ``rootcertbundle``.

It also takes OAuth2's refresh grant, as Docker's token servers do (``POST
/token`` with ``grant_type=refresh_token``, ``refresh_token``, ``service``,
``scope`` space-separated and ``client_id`` as a form): ``refresh_tokens``
maps the identity tokens it knows to their users; an unknown one is OAuth2's
``400 invalid_grant``.

Its realm is ``http://localhost:PORT/token`` while the registry is at
``127.0.0.1:PORT``: a realm on another host.  ``requests`` lists (user or
None, scopes) of what was asked (for a refresh grant, the user is
``refresh:USER``, or ``refresh:?`` for an unknown token); ``spoil`` makes the
next tokens signed by a key the registry does not trust (a token refused)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

SERVICE = "sandboxlib-test-registry"
ISSUER = "sandboxlib-test-issuer"
AUTH_CONFIG = """auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {{top}}/token-ca.crt
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Token server for ``users`` ({name: password}); ``ca`` (tests/tlskit.CA) signs its key's certificate."""

    def __init__(self, ca, users: Dict[str, str], expires_in: int = 300) -> None:
        from .tlskit import CA

        self.ca, self.users, self.expires_in = ca, dict(users), expires_in
        self.requests: List[Tuple[Optional[str], Tuple[str, ...]]] = []
        self.refresh_tokens: Dict[str, str] = {}
        self.spoil = 0
        cert_pem, key_pem = ca.issue("token-issuer")
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        self.key = serialization.load_pem_private_key(key_pem, password=None)
        self.stranger = CA("a CA the registry does not trust")
        stranger_cert, stranger_key = self.stranger.issue("token-issuer")
        self.stranger_cert = x509.load_pem_x509_certificate(stranger_cert)
        self.stranger_key = serialization.load_pem_private_key(stranger_key, password=None)
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.realm = f"http://localhost:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, name="token-issuer")
        self.thread.start()

    def auth_config(self) -> str:
        """The registry's ``auth:`` section (the CA file goes to {top}/token-ca.crt: see write_bundle)."""
        return AUTH_CONFIG.format(realm=self.realm, service=SERVICE, issuer=ISSUER)

    def write_bundle(self, top: str) -> None:
        with open(f"{top}/token-ca.crt", "wb") as f:
            f.write(self.ca.pem)

    def token(self, user: Optional[str], scopes: Tuple[str, ...]) -> str:
        spoiled = self.spoil > 0
        if spoiled:
            self.spoil -= 1
        cert, key = (self.stranger_cert, self.stranger_key) if spoiled else (self.cert, self.key)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and user is not None:  # anonymous: a token that grants nothing
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": f"t{now}-{len(self.requests)}",
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


def _handler(issuer: TokenIssuer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            user = self._user()
            if url.path != "/token" or query.get("service") != [SERVICE]:
                return self._answer(400, {"errors": [{"code": "bad request"}]})
            scopes = tuple(query.get("scope", []))
            issuer.requests.append((user, scopes))
            if user is False:
                return self._answer(401, {"details": "wrong user name or password"})
            self._answer(200, {"token": issuer.token(user, scopes), "expires_in": issuer.expires_in})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            one = {key: values[0] for key, values in form.items()}
            if urllib.parse.urlsplit(self.path).path != "/token" or one.get("service") != SERVICE:
                return self._answer(400, {"error": "invalid_request"})
            if one.get("grant_type") != "refresh_token" or not one.get("client_id"):
                return self._answer(400, {"error": "unsupported_grant_type"})
            scopes = tuple(one.get("scope", "").split())
            user = issuer.refresh_tokens.get(one.get("refresh_token", ""))
            issuer.requests.append((f"refresh:{user or '?'}", scopes))
            if user is None:
                return self._answer(400, {"error": "invalid_grant"})
            token = issuer.token(user, scopes)
            self._answer(200, {"access_token": token, "expires_in": issuer.expires_in, "scope": " ".join(scopes)})

        def _user(self):
            """The user name, None for anonymous, False for wrong credentials."""
            header = self.headers.get("Authorization")
            if not header:
                return None
            try:
                user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
            except (IndexError, ValueError):
                return False
            return user if issuer.users.get(user) == password else False

        def _answer(self, status: int, document: dict) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
