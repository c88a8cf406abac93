"""Where a daemon listens (``unix:///path`` hosts, the default socket) and
the API version it speaks; no aiohttp here: the command line's client imports it."""

from __future__ import annotations

import os

from ..errors import ConfigError, UnsupportedError

__all__ = ["API_VERSION", "default_host", "socket_path"]

API_VERSION = "1.44"


def default_host() -> str:
    """Root: /run/sandboxlib/docker.sock; rootless: $XDG_RUNTIME_DIR/sandboxlib/docker.sock."""
    if os.geteuid() == 0:
        return "unix:///run/sandboxlib/docker.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sandboxlib-{os.geteuid()}"
    return f"unix://{runtime}/sandboxlib/docker.sock"


def socket_path(host: str) -> str:
    """The path of a ``unix://`` host (the only kind served)."""
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if path.startswith("/"):
            return path
    if host.startswith(("tcp://", "http://", "https://")):
        raise UnsupportedError(
            "a TCP listener (it would need mutual TLS, as dockerd's --tlsverify)", "listen on unix:///PATH"
        )
    raise ConfigError("host", f"{host!r} is not unix:///absolute/path")
