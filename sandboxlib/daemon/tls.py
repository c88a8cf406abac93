"""Mutual TLS for a daemon on TCP (dockerd's ``--tlsverify``): the
daemon's context asks every client for a certificate signed by the CA and
refuses a handshake without one; the client's (our command line's) reads
Docker's ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` (``ca.pem``,
``cert.pem``, ``key.pem``, default ``~/.docker``).  There is no plain TCP:
anyone who reaches a daemon's API can run anything as its user."""

from __future__ import annotations

import os
import ssl
from typing import Mapping, Optional

import attrs

from ..errors import ConfigError

__all__ = ["TlsFiles", "client_context", "client_files", "server_context"]


def _readable_file(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ConfigError(attribute.name, f"{value!r} is not a readable file")


@attrs.frozen(kw_only=True)
class TlsFiles:
    """The CA that signs the other side's certificates, and our own certificate and key (PEM)."""

    ca: str = attrs.field(validator=_readable_file)
    cert: str = attrs.field(validator=_readable_file)
    key: str = attrs.field(validator=_readable_file)


def _load(context: ssl.SSLContext, files: TlsFiles) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=files.ca)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError("tlscacert", f"{files.ca}: not a PEM CA certificate ({err})") from None
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError("tlscert", f"{files.cert} with key {files.key}: {err}") from None
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """Clients must present a certificate the CA signed (``CERT_REQUIRED``)."""
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), files)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The daemon's certificate checked against the CA and the host name; ours presented."""
    return _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files)


def client_files(env: Mapping[str, str]) -> Optional[TlsFiles]:
    """As the docker CLI: with ``DOCKER_TLS_VERIFY`` set (not empty), the files of
    ``DOCKER_CERT_PATH`` (default ``~/.docker``); None without it."""
    if not env.get("DOCKER_TLS_VERIFY"):
        return None
    directory = env.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
    return TlsFiles(
        ca=os.path.join(directory, "ca.pem"),
        cert=os.path.join(directory, "cert.pem"),
        key=os.path.join(directory, "key.pem"),
    )
