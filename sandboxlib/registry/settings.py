"""The registries file: per-registry settings that are not credentials.

A small JSON file, the first of these that exists:

- ``$SANDBOXLIB_REGISTRIES`` (a path; when set, only this file, which must exist);
- ``$XDG_CONFIG_HOME/sandboxlib/registries.json`` (``~/.config/sandboxlib/registries.json``);
- ``/etc/sandboxlib/registries.json``.

Its format (every key optional)::

    {"insecure": ["registry.lan:5000", "10.0.0.7"],
     "mirrors": {"docker.io": ["mirror.gcr.io", "registry.lan:5000/hub"]}}

``insecure`` names registries (as in references: ``HOST`` or ``HOST:PORT``)
that may be reached over plain HTTP, and whose TLS certificate is not
verified (Docker's ``insecure-registries``).  Registries on loopback may use
plain HTTP without being named.

``mirrors`` maps a registry (``docker.io`` for Docker Hub) to its mirrors,
tried in order for pulls before the registry itself (pushes always go to the
registry): ``HOST[:PORT]`` or ``HOST[:PORT]/PREFIX`` (the mirror keeps the
repositories under that path), an ``https://`` or ``http://`` in front is
dropped (the scheme is chosen as for any registry: see ``hosts.py``).  A
mirror that fails (unreachable, refusing, lacking the image, sending what it
should not) is passed over with a warning (logger ``sandboxlib``) and the
next tried (one refusing connections at once: it is not retried with
back-off as a registry is); the image keeps the registry's own name and repo digest.  These
are Docker's ``registry-mirrors`` in ``daemon.json`` (which are for Docker
Hub only: ``{"mirrors": {"docker.io": [...]}}`` here) and the ``location``
of each ``[[registry.mirror]]`` of containers' ``registries.conf`` (for any
registry).  A mirror reached over plain HTTP or with its own CA needs the
same ``insecure`` entry or ``certs.d`` directory as a registry would.

Unknown keys are errors (a misspelt key would otherwise be ignored in silence)."""

from __future__ import annotations

import json
import os
import re
from typing import Mapping, Optional, Tuple

import attrs

from ..errors import ConfigError
from .names import registry_host

__all__ = ["RegistrySettings", "registry_settings", "settings_path"]

SETTINGS_ENV = "SANDBOXLIB_REGISTRIES"
SYSTEM_SETTINGS = "/etc/sandboxlib/registries.json"


@attrs.frozen(kw_only=True)
class RegistrySettings:
    """What the registries file says; ``path`` is the file read, or None (no file)."""

    path: Optional[str] = None
    insecure: Tuple[str, ...] = ()
    mirrors: Mapping[str, Tuple[str, ...]] = attrs.field(factory=dict)

    def mirrors_of(self, registry: str) -> Tuple[str, ...]:
        """The mirrors of ``registry`` (``HOST[:PORT][/PREFIX]``), in the order to try them."""
        return self.mirrors.get(registry, ())


KNOWN_KEYS = ("insecure", "mirrors")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_REGISTRY = re.compile(_HOST)
_MIRROR = re.compile(rf"{_HOST}(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


def settings_path() -> Optional[str]:
    """The registries file in force, or None when there is none."""
    chosen = os.environ.get(SETTINGS_ENV)
    if chosen:
        return chosen
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    for path in (os.path.join(config, "sandboxlib", "registries.json"), SYSTEM_SETTINGS):
        if os.path.exists(path):
            return path
    return None


def registry_settings() -> RegistrySettings:
    """The registries file, read now (it is small, and a change applies to the next pull)."""
    path = settings_path()
    if path is None:
        return RegistrySettings()
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read(1 << 20))
    except OSError as err:
        raise ConfigError(SETTINGS_ENV, f"the registries file {path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(SETTINGS_ENV, f"the registries file {path} is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(SETTINGS_ENV, f"the registries file {path} is not a JSON object")
    unknown = sorted(set(document) - set(KNOWN_KEYS))
    if unknown:
        known = ", ".join(repr(k) for k in KNOWN_KEYS)
        raise ConfigError(SETTINGS_ENV, f"the registries file {path}: unknown key {unknown[0]!r} (known: {known})")
    insecure = document.get("insecure", [])
    if not isinstance(insecure, list) or not all(isinstance(h, str) and h and "/" not in h for h in insecure):
        raise ConfigError(
            SETTINGS_ENV, f"the registries file {path}: 'insecure' must be a list of registry hosts (HOST or HOST:PORT)"
        )
    return RegistrySettings(path=path, insecure=tuple(insecure), mirrors=_mirrors(document.get("mirrors", {}), path))


def _mirrors(section, path: str) -> Mapping[str, Tuple[str, ...]]:
    """``{"docker.io": ["https://mirror.gcr.io/"]}`` -> ``{"docker.io": ("mirror.gcr.io",)}``, checked."""
    where = f"the registries file {path}: 'mirrors'"
    if not isinstance(section, dict):
        raise ConfigError(SETTINGS_ENV, f"{where} must map registries to lists of mirrors")
    found = {}
    for registry, mirrors in section.items():
        if not isinstance(registry, str) or not _REGISTRY.fullmatch(registry):
            raise ConfigError(SETTINGS_ENV, f"{where}: {registry!r} is not a registry (HOST or HOST:PORT)")
        if not isinstance(mirrors, list):
            raise ConfigError(SETTINGS_ENV, f"{where}[{registry!r}] must be a list of mirrors")
        locations = []
        for mirror in mirrors:
            location = re.sub(r"^https?://", "", mirror).rstrip("/") if isinstance(mirror, str) else ""
            if not _MIRROR.fullmatch(location):
                raise ConfigError(
                    SETTINGS_ENV, f"{where}[{registry!r}]: {mirror!r} is not a mirror (HOST[:PORT][/PREFIX])"
                )
            locations.append(location)
        found[registry_host(registry)] = tuple(locations)  # index.docker.io is docker.io
    return found
