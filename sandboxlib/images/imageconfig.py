"""An image's container config (the OCI config's ``config`` object) as users
give it: ``import_rootfs(config=)``, ``from_directory(config=)`` and
``commit(changes=)``, checked when given, not at the first start.

One spelling, Docker's (``Cmd``, ``Entrypoint``, ``Env``, ``WorkingDir``,
``User``, ``ExposedPorts``, ``Labels``, ``Volumes``), with the lowercase forms
as aliases (``cmd``, ``workingdir``, and ``docker commit --change``'s
``workdir``).  ``Volumes`` is kept in the image, as Docker keeps it; a
container of the image gets no anonymous volumes from it (name volumes with
``volumes=``)."""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError

__all__ = ["KEYS", "container_config"]

KEYS = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes")
_ALIASES = {key.lower(): key for key in KEYS}
_ALIASES.update(workdir="WorkingDir", working_dir="WorkingDir", exposed_ports="ExposedPorts")
_PORT = re.compile(r"[0-9]{1,5}(/(tcp|udp|sctp))?")


def _strings(value: Any, where: str) -> list:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) for v in value)
    ):
        example = f" such as [{value!r}]" if isinstance(value, str) else ""
        raise ConfigError(where, f"must be a list of strings{example}, got {value!r}")
    return list(value)


def _env(value: Any, where: str) -> list:
    if isinstance(value, Mapping):
        value = [f"{k}={v}" for k, v in value.items()]
    items = _strings(value, where)
    bad = [v for v in items if "=" not in v or v.startswith("=")]
    if bad:
        raise ConfigError(where, f"entries must be 'NAME=VALUE' strings (or give a dict), got {bad[0]!r}")
    return items


def _working_dir(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(where, f"must be an absolute path in the container, got {value!r}")
    return value


def _user(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string such as 'app', '1000' or '1000:1000', got {value!r}")
    return value


def _ports(value: Any, where: str) -> dict:
    ports = list(value) if isinstance(value, (list, tuple, Mapping)) else None
    if ports is None or not all(isinstance(p, str) and _PORT.fullmatch(p) for p in ports):
        raise ConfigError(
            where, f"must be ports such as ['80/tcp', '53/udp'] (or Docker's dict of them), got {value!r}"
        )
    return {p if "/" in p else p + "/tcp": {} for p in ports}


def _volumes(value: Any, where: str) -> dict:
    paths = list(value) if isinstance(value, (list, tuple, Mapping)) else None
    if paths is None or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise ConfigError(where, f"must be absolute paths such as ['/data'] (or Docker's dict of them), got {value!r}")
    return {p: {} for p in paths}


def _labels(value: Any, where: str) -> dict:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(where, f"must be a dict of strings to strings, got {value!r}")
    return dict(value)


_CHECKS = {
    "Cmd": _strings,
    "Entrypoint": _strings,
    "Env": _env,
    "WorkingDir": _working_dir,
    "User": _user,
    "ExposedPorts": _ports,
    "Labels": _labels,
    "Volumes": _volumes,
}


def container_config(value: Optional[Mapping[str, Any]], field: str) -> Dict[str, Any]:
    """The checked config, Docker's keys; a ConfigError naming ``field[key]`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"must be a dict such as {{'Cmd': ['sh']}}, got {value!r}")
    found: Dict[str, Any] = {}
    for key, item in value.items():
        name = _ALIASES.get(key.lower()) if isinstance(key, str) else None
        if name is None:
            raise ConfigError(
                f"{field}[{key!r}]", f"unknown key; one of {', '.join(KEYS)} (or their lowercase forms, and workdir)"
            )
        if name in found:
            raise ConfigError(f"{field}[{key!r}]", f"{name} is given twice")
        found[name] = _CHECKS[name](item, f"{field}[{key!r}]")
        _no_nul(found[name], f"{field}[{key!r}]")
    return found


def _no_nul(value: Any, where: str) -> None:
    """No NUL byte in a string of ``value``: no command, environment or path can hold one
    (the container's start failed with the init's bare EINVAL)."""
    texts = [value] if isinstance(value, str) else [*value, *value.values()] if isinstance(value, dict) else value
    bad = next((t for t in texts if isinstance(t, str) and "\x00" in t), None)
    if bad is not None:
        raise ConfigError(where, f"{bad!r} contains a NUL byte")
