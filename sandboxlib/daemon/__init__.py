"""The daemon: Docker's Engine API (1.44) over a UNIX socket, so that the
``docker`` CLI, docker-py and testcontainers drive sandboxlib containers."""

from .server import API_VERSION, default_host
from .service import serve

__all__ = ["API_VERSION", "default_host", "serve"]
