"""How to reach one registry: TLS verified against the system's CA
certificates plus the registry's own from a ``certs.d`` directory, and plain
HTTP only where it is allowed.

CA certificates (Docker's ``certs.d`` layout): a directory per registry,
named as the registry is (``HOST`` or ``HOST:PORT``), whose ``*.crt`` files
are CA certificates (PEM) trusted for that registry in addition to the
system's.  The ``certs.d`` directories, all of them searched, in order:

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
``insecure-registries``)."""

from __future__ import annotations

import glob
import os
import ssl
from typing import Optional, Tuple

import attrs

from .names import RemoteReference
from .settings import registry_settings

__all__ = ["Host", "host_of", "certs_d_dirs", "is_tls_refusal", "is_certificate_failure"]

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
        insecure: named insecure: TLS not verified, plain HTTP allowed.
        loopback: on this machine: plain HTTP allowed.
    """

    api_host: str
    ca_files: Tuple[str, ...]
    insecure: bool
    loopback: bool

    @property
    def plain_http_allowed(self) -> bool:
        return self.insecure or self.loopback

    def ssl_context(self):
        """The verification for HTTPS: an ssl context, or False (insecure)."""
        if self.insecure:
            return False
        context = ssl.create_default_context()
        for path in self.ca_files:
            context.load_verify_locations(cafile=path)
        return context

    def certificate_hint(self) -> str:
        """Where a CA certificate for this registry would be looked for."""
        places = ", ".join(os.path.join(d, self.api_host, "ca.crt") for d in certs_d_dirs())
        return f"a CA certificate for it is looked for in {places}"


def host_of(ref: RemoteReference, api_host: Optional[str] = None) -> Host:
    """The transport settings of the registry of ``ref`` (or of ``api_host``, a redirect's)."""
    api_host = api_host or ref.api_host
    ca_files = []
    for top in certs_d_dirs():
        ca_files += sorted(glob.glob(os.path.join(glob.escape(os.path.join(top, api_host)), "*.crt")))
    return Host(
        api_host=api_host,
        ca_files=tuple(ca_files),
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


def is_tls_refusal(err: BaseException) -> bool:
    """The TLS handshake failed for another reason than the certificate (a server
    speaking plain HTTP answers the handshake with an HTTP error: WRONG_VERSION_NUMBER)."""
    return not is_certificate_failure(err) and any(isinstance(e, ssl.SSLError) for e in _causes(err))
