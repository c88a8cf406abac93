"""Remote image references resolved as Docker resolves them
(distribution's ``ParseNormalizedNamed``): a first component with a ``.``
or a ``:``, or ``localhost``, is a registry host; anything else is on
Docker Hub, where a one-component name is in ``library/``.  So ``alpine`` is
``docker.io/library/alpine:latest`` and ``localhost:5000/team/app:1.2`` is
the repository ``team/app`` of the registry ``localhost:5000``."""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

import attrs

from ..errors import ConfigError
from ..images import reference

__all__ = ["RemoteReference", "resolve", "registry_host", "DOCKER_HUB"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's v2 API answers
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")  # distribution's path grammar: lower case


@attrs.frozen(kw_only=True)
class RemoteReference:
    """A reference with its registry spelled out.

    Attributes:
        registry: ``docker.io``, ``localhost:5000``, ``registry.example.com``.
        repository: the path in the registry (``library/alpine``).
        tag: the tag, or None when only a digest is given.
        digest: the manifest (or index) digest, or None.
    """

    registry: str
    repository: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    @property
    def api_host(self) -> str:
        """The host (and port) the v2 API answers on."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """The name as the image store keeps it (Docker's familiar form: ``alpine``, ``localhost:5000/app``)."""
        return reference.parse(f"{self.registry}/{self.repository}:latest").name or ""

    @property
    def store_tag(self) -> Optional[str]:
        """``name:tag`` for the store, or None for a reference by digest only."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def repo_digest(self, digest: str) -> str:
        """``name@digest`` (Docker's RepoDigests entry)."""
        return f"{self.name}@{digest}"

    @property
    def is_loopback(self) -> bool:
        """The registry is on this machine (plain HTTP is allowed only there)."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry
        host = host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        where = f"{self.registry}/{self.repository}"
        return f"{where}@{self.digest}" if self.digest else f"{where}:{self.tag}"


def _split_host(text: str):
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return (DOCKER_HUB if first in _HUB_ALIASES else first), rest
    return DOCKER_HUB, text


def resolve(text: str, field: str = "reference") -> RemoteReference:
    """Parse ``text`` into a :class:`RemoteReference`; raises ConfigError naming ``field``.

    ``name:tag@digest`` keeps both (the digest is what is pulled)."""
    if not isinstance(text, str) or not text:
        raise ConfigError(field, f"{text!r} is not an image reference")
    if text.startswith("sha256:"):
        raise ConfigError(field, f"{text!r}: a bare digest names no repository (give name@{text})")
    registry, path = _split_host(text)
    path, at, digest = path.partition("@")
    head, colon, tag = path.rpartition(":")
    if colon and "/" not in tag:
        path = head
    else:
        tag = "" if at else "latest"
    if not _REPOSITORY.fullmatch(path):
        raise ConfigError(
            field,
            f"{text!r}: invalid repository {path!r} (lower-case letters, digits, "
            "'.', '_', '-', components separated by '/')",
        )
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    checked = reference.parse(f"{registry}/{path}" + (f"@{digest}" if at else f":{tag}"), field)
    return RemoteReference(registry=registry, repository=path, tag=tag or None, digest=checked.digest if at else None)


_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?"
)


def registry_host(text: str, field: str = "registry") -> str:
    """A registry as login takes it (``localhost:5000``, ``https://reg.example.com/``, ``docker.io``)
    -> ``host[:port]`` (``docker.io`` for Docker Hub's names)."""
    host = text.split("://", 1)[-1].split("/", 1)[0] if isinstance(text, str) else ""
    if not _HOST.fullmatch(host):
        raise ConfigError(field, f"{text!r} is not a registry (HOST or HOST:PORT)")
    return DOCKER_HUB if host in _HUB_ALIASES else host
