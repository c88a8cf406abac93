"""How to reach one registry: TLS verified against the system's CA
certificates plus the registry's own from a ``certs.d`` directory, a client
certificate from there when one is given, and plain HTTP only where it is
allowed.

Docker's ``certs.d`` layout: a directory per registry, named as the registry
is (``HOST`` or ``HOST:PORT``), whose ``*.crt`` files are CA certificates
(PEM) trusted for that registry in addition to the system's, and whose
``NAME.cert`` and ``NAME.key`` pairs are client certificates and their keys
(PEM; a ``.cert`` without its ``.key``, or the reverse, is an error, as in
Docker), sent when the registry asks for one (mutual TLS); the first pair by
name is used.  The ``certs.d`` directories, all of them searched, in order:

- ``$SANDBOXLIB_CERTS_D`` (one or more directories separated by ``:``) when
  set: then only these (tests, sandboxes, a user who wants none of the others);
- else ``$XDG_CONFIG_HOME/containers/certs.d`` (``~/.config/containers/certs.d``,
  the per-user place podman and skopeo read), ``/etc/containers/certs.d`` and
  ``/etc/docker/certs.d``.

Plain HTTP: only for a registry on the loopback interface (``localhost``,
``127.0.0.0/8``, ``[::1]``) and for registries named insecure in the
registries file (see :mod:`sandboxlib.registry.settings`).  Such a registry
is still tried over HTTPS first, and HTTP is used only when the registry does
not speak TLS at all; a loopback registry that speaks TLS is verified like
any other (a certificate that fails is an error, never a quiet fall back),
while a registry named insecure is not verified (as Docker's
``insecure-registries``).

Loading CA certificates costs 20-200 ms (the system bundle is parsed each
time), so the SSL context of a set of certificate files is made once per
process and shared by every client: it is a function of the files' paths
and contents, keyed by their paths, sizes and modification times."""

from __future__ import annotations

import functools
import glob
import os
import ssl
from typing import List, Optional, Tuple

import attrs

from ..errors import ConfigError
from .names import RemoteReference
from .settings import registry_settings

__all__ = [
    "Host",
    "host_of",
    "certs_d_dirs",
    "is_tls_refusal",
    "is_certificate_failure",
    "is_client_certificate_refusal",
]

CERTS_D_ENV = "SANDBOXLIB_CERTS_D"
SYSTEM_CERTS_D = ("/etc/containers/certs.d", "/etc/docker/certs.d")


def certs_d_dirs() -> Tuple[str, ...]:
    """The certs.d directories searched, in order (see the module's docstring)."""
    chosen = os.environ.get(CERTS_D_ENV)
    if chosen:
        return tuple(d for d in chosen.split(":") if d)
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return (os.path.join(config, "containers", "certs.d"),) + SYSTEM_CERTS_D


@attrs.frozen(kw_only=True)
class Host:
    """The transport for one registry (``api_host`` is ``HOST[:PORT]``).

    Attributes:
        api_host: where the v2 API answers.
        ca_files: the registry's own CA certificates (from certs.d).
        client_cert: (certificate, key) files of the client certificate, or None.
        insecure: named insecure: TLS not verified, plain HTTP allowed.
        loopback: on this machine: plain HTTP allowed.
    """

    api_host: str
    ca_files: Tuple[str, ...]
    insecure: bool
    loopback: bool
    client_cert: Optional[Tuple[str, str]] = None

    @property
    def plain_http_allowed(self) -> bool:
        return self.insecure or self.loopback

    def ssl_context(self):
        """The TLS side of HTTPS: an ssl context (shared: see the module), or False
        (insecure, no client certificate: nothing to verify or send)."""
        if self.insecure and self.client_cert is None:
            return False
        files = self.ca_files + (self.client_cert or ())
        return _context(self.insecure, tuple(_identity(path) for path in files), len(self.ca_files))

    def client_certificate_hint(self) -> str:
        """What was sent of a client certificate, and where one would be looked for."""
        if self.client_cert:
            return f"it refused the client certificate {self.client_cert[0]}"
        places = ", ".join(os.path.join(d, self.api_host) for d in certs_d_dirs())
        return f"it wants a client certificate: client.cert and client.key in one of {places}"

    def certificate_hint(self) -> str:
        """Where a CA certificate for this registry would be looked for."""
        places = ", ".join(os.path.join(d, self.api_host, "ca.crt") for d in certs_d_dirs())
        return f"a CA certificate for it is looked for in {places}"


def _identity(path: str) -> Tuple[str, int, int]:
    """What the context made of a file depends on: its path, size and modification time."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise ConfigError("certs.d", f"{path}: {err.strerror}") from None
    return path, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _context(insecure: bool, files: Tuple[Tuple[str, int, int], ...], cas: int) -> ssl.SSLContext:
    """The SSL context of these CA files (the first ``cas``) and client certificate and key (the rest)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for path, _, _ in files[:cas]:
        try:
            context.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError("certs.d", f"{path} is not a PEM CA certificate ({err})") from None
    if files[cas:]:
        cert, key = files[cas][0], files[cas + 1][0]
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                "certs.d", f"{cert} and {key} are not a PEM client certificate and its key ({err})"
            ) from None
    return context


def _client_cert(directories: List[str]) -> Optional[Tuple[str, str]]:
    """The first ``NAME.cert``/``NAME.key`` pair of these certs.d directories, checked as Docker does."""
    pairs = []
    for top in directories:
        certs = sorted(glob.glob(os.path.join(glob.escape(top), "*.cert")))
        keys = sorted(glob.glob(os.path.join(glob.escape(top), "*.key")))
        for cert in certs:
            if cert[: -len(".cert")] + ".key" not in keys:
                raise ConfigError("certs.d", f"the client certificate {cert} has no key (NAME.key beside it)")
            pairs.append((cert, cert[: -len(".cert")] + ".key"))
        for key in keys:
            if key[: -len(".key")] + ".cert" not in certs:
                raise ConfigError("certs.d", f"the client key {key} has no certificate (NAME.cert beside it)")
    return pairs[0] if pairs else None


def host_of(ref: RemoteReference, api_host: Optional[str] = None) -> Host:
    """The transport settings of the registry of ``ref`` (or of ``api_host``, a redirect's)."""
    api_host = api_host or ref.api_host
    directories = [os.path.join(top, api_host) for top in certs_d_dirs()]
    ca_files: List[str] = []
    for top in directories:
        ca_files += sorted(glob.glob(os.path.join(glob.escape(top), "*.crt")))
    return Host(
        api_host=api_host,
        ca_files=tuple(ca_files),
        client_cert=_client_cert(directories),
        insecure=ref.registry in registry_settings().insecure or api_host in registry_settings().insecure,
        loopback=ref.is_loopback,
    )


def _causes(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_certificate_failure(err: BaseException) -> bool:
    """The server's certificate was not trusted."""
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(err))


CLIENT_CERTIFICATE_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA")


def is_client_certificate_refusal(err: BaseException) -> bool:
    """The server ended the handshake over our client certificate (none, or one it does not trust)."""
    return any(
        isinstance(e, ssl.SSLError) and any(alert in str(e.reason) for alert in CLIENT_CERTIFICATE_ALERTS)
        for e in _causes(err)
    )


def is_tls_refusal(err: BaseException) -> bool:
    """The TLS handshake failed for another reason than the certificate (a server
    speaking plain HTTP answers the handshake with an HTTP error: WRONG_VERSION_NUMBER)."""
    if is_certificate_failure(err) or is_client_certificate_refusal(err):
        return False
    return any(isinstance(e, ssl.SSLError) for e in _causes(err))
