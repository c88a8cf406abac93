"""Docker/OCI seccomp profiles (JSON) -> :class:`~sandboxlib.security.seccomp.Seccomp`.

Reads what Docker reads: ``defaultAction``, ``defaultErrnoRet``,
``architectures`` or ``archMap`` (the entry of the native architecture and
its sub-architectures), and ``syscalls`` with ``names`` (or ``name``),
``action``, ``errnoRet``, ``args`` and ``includes``/``excludes`` (``caps``,
``arches``, ``minKernel``).  Every error names the file and the place.
"""

from __future__ import annotations

import errno as E
import json
import os
import platform
from typing import Any, Mapping, Tuple, Union

from ..errors import ConfigError
from ..native import binding
from .capabilities import normalize_capability
from .rules import ACTION_NAMES, Action, Op, SeccompArg, SeccompRule, check_syscall

__all__ = ["parse_profile", "native_arch"]

# platform.machine() -> libseccomp's name and Docker's (Go's) name of it.
_MACHINES = {
    "x86_64": ("x86_64", "amd64"),
    "aarch64": ("aarch64", "arm64"),
    "i686": ("x86", "x86"),
    "ppc64le": ("ppc64le", "ppc64le"),
    "s390x": ("s390x", "s390x"),
    "riscv64": ("riscv64", "riscv64"),
}
_UINT64 = (1 << 64) - 1


def native_arch() -> Tuple[str, str]:
    """(libseccomp name, Docker name) of the host's architecture."""
    machine = platform.machine()
    return _MACHINES.get(machine, (machine, machine))


class _Where:
    """Builds field names such as ``profile.json: syscalls[3].names[1]``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, place: str) -> str:
        return f"{self.source}: {place}" if self.source else place


def _read(profile: Union[str, os.PathLike, Mapping[str, Any]]) -> Tuple[Mapping[str, Any], str]:
    if isinstance(profile, Mapping):
        return profile, ""
    path = os.fspath(profile)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise ConfigError(path, f"cannot read the seccomp profile: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(path, f"not valid JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(path, "a seccomp profile is a JSON object")
    return data, path


def _action(name: object, errno: object, field: str) -> Tuple[Action, Any]:
    action = ACTION_NAMES.get(name) if isinstance(name, str) else None
    if action is None:
        raise ConfigError(field, f"unknown action {name!r}; known: {', '.join(sorted(ACTION_NAMES))}")
    if action in (Action.ERRNO, Action.TRACE):
        if errno is None:
            errno = E.EPERM
        if isinstance(errno, bool) or not isinstance(errno, int) or not 0 <= errno <= 0xFFFF:
            raise ConfigError(field, f"errnoRet must be an errno number, got {errno!r}")
        return action, errno
    return action, None


def _arg(data: object, field: str) -> SeccompArg:
    if not isinstance(data, Mapping):
        raise ConfigError(field, "expected an object with index, value, valueTwo and op")
    index, op = data.get("index"), data.get("op")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
        raise ConfigError(f"{field}.index", f"must be an argument index 0-5, got {index!r}")
    if not isinstance(op, str) or not op.startswith("SCMP_CMP_") or op[9:] not in Op.__members__:
        raise ConfigError(
            f"{field}.op", f"unknown operator {op!r}; known: {', '.join('SCMP_CMP_' + o for o in Op.__members__)}"
        )
    values = []
    for key in ("value", "valueTwo"):
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64:
            raise ConfigError(f"{field}.{key}", f"must be an unsigned 64-bit number, got {value!r}")
        values.append(value)
    return SeccompArg(index=index, op=Op[op[9:]], value=values[0], value_two=values[1])


def _filter(data: object, field: str) -> dict:
    """Docker's includes/excludes: caps, arches, minKernel."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(field, "expected an object with caps, arches or minKernel")
    out: dict = {}
    caps = data.get("caps") or []
    arches = data.get("arches") or []
    if not isinstance(caps, list) or not isinstance(arches, list):
        raise ConfigError(field, "caps and arches are lists of names")
    out["caps"] = frozenset(normalize_capability(c, f"{field}.caps[{i}]") for i, c in enumerate(caps))
    for i, arch in enumerate(arches):
        if not isinstance(arch, str):
            raise ConfigError(f"{field}.arches[{i}]", f"expected an architecture name, got {arch!r}")
    out["arches"] = frozenset(arches)
    kernel = data.get("minKernel")
    if kernel is not None and (not isinstance(kernel, str) or not _kernel_version(kernel)):
        raise ConfigError(f"{field}.minKernel", f"expected a version such as '4.8', got {kernel!r}")
    out["min_kernel"] = kernel
    return out


def _kernel_version(text: str) -> Tuple[int, ...]:
    parts = []
    for part in text.split("-")[0].split(".")[:3]:
        if not part.isdigit():
            return ()
        parts.append(int(part))
    return tuple(parts)


def _rule(data: object, where: _Where, place: str) -> SeccompRule:
    if not isinstance(data, Mapping):
        raise ConfigError(where(place), "expected an object with names and action")
    if data.get("name") and data.get("names"):
        raise ConfigError(where(place), "give either name or names, not both")
    names = [data["name"]] if data.get("name") else data.get("names")
    if not isinstance(names, list) or not names:
        raise ConfigError(where(f"{place}.names"), "expected a non-empty list of syscall names")
    checked = tuple(check_syscall(n, where(f"{place}.names[{i}]")) for i, n in enumerate(names))
    action, errno = _action(data.get("action"), data.get("errnoRet"), where(f"{place}.action"))
    args = data.get("args") or []
    if not isinstance(args, list) or len(args) > 6:
        raise ConfigError(where(f"{place}.args"), "expected a list of at most 6 conditions")
    conds = tuple(_arg(a, where(f"{place}.args[{i}]")) for i, a in enumerate(args))
    inc = _filter(data.get("includes"), where(f"{place}.includes"))
    exc = _filter(data.get("excludes"), where(f"{place}.excludes"))
    return SeccompRule(
        names=checked,
        action=action,
        errno=errno,
        args=conds,
        caps=inc.get("caps", frozenset()),
        arches=inc.get("arches", frozenset()),
        min_kernel=inc.get("min_kernel"),
        not_caps=exc.get("caps", frozenset()),
        not_arches=exc.get("arches", frozenset()),
        not_min_kernel=exc.get("min_kernel"),
        origin=where(place),
    )


def _scmp_arch(name: object, field: str) -> str:
    """``SCMP_ARCH_X86_64`` -> ``x86_64`` (libseccomp's name), checked."""
    if not isinstance(name, str) or not name.startswith("SCMP_ARCH_"):
        raise ConfigError(field, f"expected an architecture such as SCMP_ARCH_X86_64, got {name!r}")
    arch = name[10:].lower()
    if not binding.seccomp_arch(arch):
        raise ConfigError(field, f"unknown architecture {name!r}")
    return arch


def _architectures(data: Mapping[str, Any], where: _Where) -> Tuple[str, ...]:
    """``architectures``, or the native entry of ``archMap`` with its sub-architectures."""
    if data.get("architectures") and data.get("archMap"):
        raise ConfigError(where("architectures"), "give either architectures or archMap, not both")
    if data.get("architectures"):
        listed = data["architectures"]
        if not isinstance(listed, list):
            raise ConfigError(where("architectures"), "expected a list")
        return tuple(_scmp_arch(a, where(f"architectures[{i}]")) for i, a in enumerate(listed))
    arch_map = data.get("archMap") or []
    if not isinstance(arch_map, list):
        raise ConfigError(where("archMap"), "expected a list")
    for i, entry in enumerate(arch_map):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("subArchitectures") or [], list):
            raise ConfigError(where(f"archMap[{i}]"), "expected {architecture, subArchitectures}")
        main = _scmp_arch(entry.get("architecture"), where(f"archMap[{i}].architecture"))
        subs = tuple(
            _scmp_arch(a, where(f"archMap[{i}].subArchitectures[{j}]"))
            for j, a in enumerate(entry.get("subArchitectures") or [])
        )
        if main == native_arch()[0]:
            return (main,) + subs
    return ()


def parse_profile(profile: Union[str, os.PathLike, Mapping[str, Any]]) -> dict:
    """The fields of the :class:`~sandboxlib.security.seccomp.Seccomp` of a Docker/OCI profile (a path or a
    parsed dict)."""
    data, source = _read(profile)
    where = _Where(source)
    if data.get("listenerPath"):
        raise ConfigError(where("listenerPath"), "seccomp user notification is not supported")
    if data.get("flags"):  # fail closed: SECCOMP_FILTER_FLAG_* would change what the filter does
        raise ConfigError(where("flags"), f"seccomp filter flags are not supported, got {data['flags']!r}")
    action, errno = _action(data.get("defaultAction"), data.get("defaultErrnoRet"), where("defaultAction"))
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ConfigError(where("syscalls"), "expected a list of rules")
    rules = tuple(_rule(rule, where, f"syscalls[{i}]") for i, rule in enumerate(syscalls))
    return {
        "default_action": action,
        "default_errno": errno if errno is not None else E.EPERM,
        "architectures": _architectures(data, where),
        "rules": rules,
        "source": source,
    }
