"""Where a daemon listens (``unix:///path``, or ``tcp://HOST:PORT`` with
mutual TLS), the default socket and the API version it speaks; no aiohttp
here: the command line's client imports it."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from typing import Tuple

from ..errors import ConfigError

__all__ = ["API_VERSION", "DEFAULT_TLS_PORT", "default_host", "is_tcp", "socket_path", "tcp_address"]

API_VERSION = "1.44"
DEFAULT_TLS_PORT = 2376  # dockerd's port for TLS


def default_host() -> str:
    """Root: /run/sandboxlib/docker.sock; rootless: $XDG_RUNTIME_DIR/sandboxlib/docker.sock."""
    if os.geteuid() == 0:
        return "unix:///run/sandboxlib/docker.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sandboxlib-{os.geteuid()}"
    return f"unix://{runtime}/sandboxlib/docker.sock"


def is_tcp(host: str) -> bool:
    return host.startswith("tcp://")


def socket_path(host: str) -> str:
    """The path of a ``unix://`` host."""
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if path.startswith("/"):
            return path
    raise ConfigError("host", f"{host!r} is not unix:///absolute/path nor tcp://HOST:PORT")


def tcp_address(host: str) -> Tuple[str, int]:
    """(host, port) of a ``tcp://HOST[:PORT]`` host (the port defaults to 2376, as Docker's with TLS)."""
    if not is_tcp(host):
        raise ConfigError("host", f"{host!r} is not tcp://HOST:PORT")
    parsed = urllib.parse.urlsplit(host)
    try:
        port = parsed.port or DEFAULT_TLS_PORT
    except ValueError as err:
        raise ConfigError("host", f"{host!r}: {err}") from None
    name = parsed.hostname or ""
    if not name or parsed.path not in ("", "/"):
        raise ConfigError("host", f"{host!r} is not tcp://HOST:PORT")
    try:
        name = str(ipaddress.ip_address(name))
    except ValueError:
        pass  # a host name
    return name, port
