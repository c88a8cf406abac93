"""Image references: ``name[:tag]``, ``name@sha256:HEX``, or a bare digest
``sha256:HEX`` (a manifest digest or an image id)."""

from __future__ import annotations

import re
from typing import Optional

import attrs

from ..errors import ConfigError

__all__ = ["Reference", "parse", "check_digest"]

# Docker's grammar, simplified: lower-case path components separated by
# '/', an optional registry host[:port] first; tags as Docker allows them.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
_NAME = re.compile(rf"{_HOST}{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: str, field: str = "digest") -> str:
    """The digest if it is ``sha256:`` and 64 lower-case hex digits, else ConfigError."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ConfigError(field, f"{digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return digest


@attrs.frozen(kw_only=True)
class Reference:
    """A parsed reference.  ``name`` is None for a bare digest; ``tag`` is
    None when a digest is given instead."""

    name: Optional[str]
    tag: Optional[str] = None
    digest: Optional[str] = None

    def __str__(self) -> str:
        if self.name is None:
            return str(self.digest)
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def parse(text: str, field: str = "reference") -> Reference:
    """Parse ``text``; a name without tag or digest gets the tag ``latest``."""
    if not isinstance(text, str) or not text:
        raise ConfigError(field, f"{text!r} is not an image reference")
    if _DIGEST.fullmatch(text):
        return Reference(name=None, digest=text)
    for prefix in ("docker.io/library/", "docker.io/"):  # Docker's familiar names
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    name, at, digest = text.partition("@")
    if at:
        return Reference(name=_check_name(name, text, field), digest=check_digest(digest, field))
    head, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        name = head
        if not _TAG.fullmatch(tag):
            raise ConfigError(field, f"{text!r}: invalid tag {tag!r}")
    else:
        tag = "latest"
    return Reference(name=_check_name(name, text, field), tag=tag)


def _check_name(name: str, text: str, field: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > 255:
        raise ConfigError(
            field,
            f"{text!r}: invalid image name {name!r} (lower-case letters, digits, "
            "'.', '_', '-', components separated by '/')",
        )
    return name
