"""Registries: pull and push images over the OCI distribution API (Docker
Registry HTTP API v2), with references resolved as Docker resolves them.
The HTTP client (httpx, and with it ssl) is imported only when a registry
is used, not by ``import sandboxlib``."""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import ConfigError
from ..images import Image, ImageStore
from .names import RemoteReference, registry_host, resolve
from .progress import Phase, Progress

__all__ = ["RemoteReference", "resolve", "pull", "push", "login", "logout", "Phase", "Progress"]


def pull(
    store: ImageStore,
    ref: str,
    *,
    platform: Optional[str] = None,
    progress: Optional[Callable[[Progress], None]] = None,
) -> Image:
    """Pull ``ref`` into ``store`` (see :meth:`sandboxlib.ImageStore.pull`)."""
    from .pulling import pull as pull_image

    return pull_image(store, ref, platform=platform, progress=progress)


def push(store: ImageStore, src: str, dest: Optional[str] = None) -> str:
    """Push ``src`` from ``store`` to ``dest`` (see :meth:`sandboxlib.ImageStore.push`)."""
    from .pushing import push as push_image

    return push_image(store, src, dest)


def login(registry: str, username: str, password: str) -> str:
    """Check ``username`` and ``password`` against ``registry`` (``localhost:5000``,
    ``docker.io``), then keep them as ``docker login`` does: in the credential
    helper that ``~/.docker/config.json`` names for it, else in that file's
    ``auths`` (mode 0600).  Returns where they were stored.

    Raises:
        RegistryAuthError: the registry refused them (the message names the user, never the password).
        RegistryError: the registry could not be reached.
    """
    from .client import Repository
    from .credentials import Credentials, store

    host = registry_host(registry)
    credentials = Credentials(username, password)
    if not username or not password:
        raise ConfigError("username" if not username else "password", "must not be empty")
    with Repository(RemoteReference(registry=host, repository=""), credentials=credentials) as repo:
        repo.ping()
    return store(host, credentials)


def logout(registry: str) -> bool:
    """Forget the stored credentials for ``registry`` (as ``docker logout``); False if there were none."""
    from .auth import forget_tokens
    from .credentials import erase

    found = erase(registry_host(registry))
    forget_tokens()
    return found
