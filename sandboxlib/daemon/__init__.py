"""The daemon: Docker's Engine API (1.44) over a UNIX socket (or TCP with mutual TLS), so that the
``docker`` CLI, docker-py and testcontainers drive sandboxlib containers;
and the small client sandboxlib's own command line uses.  aiohttp (the
``daemon`` extra) is imported only by ``serve``."""

from __future__ import annotations

from typing import Any

from .client import DaemonClient, DaemonError, NoDaemon, find_daemon
from .hosts import API_VERSION, default_host
from .tls import TlsFiles

__all__ = ["API_VERSION", "DaemonClient", "DaemonError", "NoDaemon", "TlsFiles", "default_host", "find_daemon", "serve"]


async def serve(host: str, **options: Any) -> None:
    """Serve the Engine API on ``host`` until SIGTERM or SIGINT (see ``service.serve``)."""
    from .service import serve as serve_forever

    await serve_forever(host, **options)
