"""The registries file: per-registry settings that are not credentials.

A small JSON file, the first of these that exists:

- ``$SANDBOXLIB_REGISTRIES`` (a path; when set, only this file, which must exist);
- ``$XDG_CONFIG_HOME/sandboxlib/registries.json`` (``~/.config/sandboxlib/registries.json``);
- ``/etc/sandboxlib/registries.json``.

Its format (every key optional)::

    {"insecure": ["registry.lan:5000", "10.0.0.7"]}

``insecure`` names registries (as in references: ``HOST`` or ``HOST:PORT``)
that may be reached over plain HTTP, and whose TLS certificate is not
verified (Docker's ``insecure-registries``).  Registries on loopback may use
plain HTTP without being named.  Unknown keys are errors (a misspelt key
would otherwise be ignored in silence)."""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

import attrs

from ..errors import ConfigError

__all__ = ["RegistrySettings", "registry_settings", "settings_path"]

SETTINGS_ENV = "SANDBOXLIB_REGISTRIES"
SYSTEM_SETTINGS = "/etc/sandboxlib/registries.json"


@attrs.frozen(kw_only=True)
class RegistrySettings:
    """What the registries file says; ``path`` is the file read, or None (no file)."""

    path: Optional[str] = None
    insecure: Tuple[str, ...] = ()


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
    unknown = sorted(set(document) - {"insecure"})
    if unknown:
        raise ConfigError(SETTINGS_ENV, f"the registries file {path}: unknown key {unknown[0]!r} (known: 'insecure')")
    insecure = document.get("insecure", [])
    if not isinstance(insecure, list) or not all(isinstance(h, str) and h and "/" not in h for h in insecure):
        raise ConfigError(
            SETTINGS_ENV, f"the registries file {path}: 'insecure' must be a list of registry hosts (HOST or HOST:PORT)"
        )
    return RegistrySettings(path=path, insecure=tuple(insecure))
