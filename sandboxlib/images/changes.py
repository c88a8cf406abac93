"""Dockerfile instructions as ``docker import --change`` takes them (``CMD
["python3", "app.py"]``, ``ENV A=1 B=2``, ``WORKDIR /app``), turned into
changes of an image's container config.

The instructions Docker's ``import --change`` applies: ``CMD``,
``ENTRYPOINT`` (JSON array, or shell form run by ``/bin/sh -c``), ``ENV``
(``K=V ...``, or the legacy ``K V``), ``EXPOSE`` (``80 53/udp``), ``LABEL``
(``K=V ...``), ``USER``, ``VOLUME`` (paths, or a JSON array) and ``WORKDIR``
(a relative path is relative to the one before, as in a Dockerfile).  Any
other (``RUN``, ``COPY``, ...) needs a build, and is a ConfigError."""

from __future__ import annotations

import json
import posixpath
import shlex
from typing import Any, Dict, Optional, Sequence, Tuple

from ..errors import ConfigError
from .imageconfig import container_config

__all__ = ["INSTRUCTIONS", "apply_changes"]

INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR")


def apply_changes(config: Dict[str, Any], changes: Optional[Sequence[str]], field: str = "changes") -> Dict[str, Any]:
    """``config`` (Docker's keys, checked) with the instructions of ``changes`` applied, in order."""
    if changes is None:
        return config
    if isinstance(changes, str) or not all(isinstance(c, str) for c in changes):
        raise ConfigError(field, f"must be a list of Dockerfile instructions such as ['CMD [\"sh\"]'], got {changes!r}")
    result = dict(config)
    for i, line in enumerate(changes):
        where = f"{field}[{i}]"
        word, _, rest = line.strip().partition(" ")
        instruction, rest = word.upper(), rest.strip()
        if instruction not in INSTRUCTIONS:
            raise ConfigError(
                where,
                f"{word or line!r} is not an instruction import can apply (one of {', '.join(INSTRUCTIONS)}; "
                "RUN, COPY and the like need a build)",
            )
        if not rest:
            raise ConfigError(where, f"{instruction} needs an argument")
        key, value = _APPLY[instruction](rest, result, where)
        result[key] = container_config({key: value}, where)[key]
    return result


def _command(rest: str, config: dict, where: str) -> list:
    """The exec form (a JSON array of strings) or the shell form (``/bin/sh -c REST``)."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            return ["/bin/sh", "-c", rest]  # as Docker: not JSON, so the shell form
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(where, f"the exec form must be a JSON array of strings, got {rest}")
        return value
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str, where: str, instruction: str) -> Dict[str, str]:
    """``K=V K2="v 2"`` (shell quoting), or ``ENV``'s legacy ``K V W`` (one pair)."""
    try:
        words = shlex.split(rest)
    except ValueError as err:
        raise ConfigError(where, f"{instruction} {rest}: {err}") from None
    if instruction == "ENV" and "=" not in words[0]:
        name, _, value = rest.partition(" ")
        return {name: value.strip()}
    bad = [w for w in words if "=" not in w or w.startswith("=")]
    if bad:
        raise ConfigError(where, f"{instruction} takes KEY=VALUE pairs, got {bad[0]!r}")
    return dict(w.split("=", 1) for w in words)


def _cmd(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "Cmd", _command(rest, config, where)


def _entrypoint(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "Entrypoint", _command(rest, config, where)


def _env(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    env.update(_pairs(rest, where, "ENV"))
    return "Env", [f"{k}={v}" for k, v in env.items()]


def _expose(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "ExposedPorts", list(config.get("ExposedPorts", {})) + rest.split()


def _label(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "Labels", {**config.get("Labels", {}), **_pairs(rest, where, "LABEL")}


def _user(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "User", rest


def _volume(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    paths = json.loads(rest) if rest.startswith("[") and _is_json(rest) else rest.split()
    return "Volumes", list(config.get("Volumes", {})) + (paths if isinstance(paths, list) else [paths])


def _workdir(rest: str, config: dict, where: str) -> Tuple[str, Any]:
    return "WorkingDir", posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/", rest))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_APPLY = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "LABEL": _label,
    "USER": _user,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
}
