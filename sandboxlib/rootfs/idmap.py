"""User-namespace id maps: which maps a container gets, and writing them
from the parent (directly, or through newuidmap/newgidmap for /etc/subuid
ranges)."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Generator, Optional, Tuple

import attrs

from ..config import IdMapping
from ..errors import ConfigError, SetupError, UnsupportedError
from ..native.host import HostInfo
from ..posix.interrupts import sigint_deferred
from ..posix.steps import run_program

if TYPE_CHECKING:
    from ..config import ContainerConfig

__all__ = ["IdMaps", "choose_maps", "write_maps", "ROOT_DEFAULT_HOST_ID"]

# As root, the container's ids 0..65535 map to this unprivileged host range
# by default (far above what useradd hands out as /etc/subuid ranges).
ROOT_DEFAULT_HOST_ID = 1_000_000_000
ROOT_DEFAULT_SIZE = 65536


@attrs.frozen(kw_only=True, cache_hash=True)
class IdMaps:
    uid_map: Tuple[IdMapping, ...]
    gid_map: Tuple[IdMapping, ...]
    setgroups: bool  # setgroups(2) allowed inside
    use_helpers: bool  # write through newuidmap/newgidmap

    def to_host_uid(self, uid: int) -> Optional[int]:
        return next((h for m in self.uid_map if (h := m.to_host(uid)) is not None), None)

    def to_host_gid(self, gid: int) -> Optional[int]:
        return next((h for m in self.gid_map if (h := m.to_host(gid)) is not None), None)


def _rootless_default(host: HostInfo) -> IdMaps:
    own_uid = (IdMapping(container=0, host=host.euid, size=1),)
    own_gid = (IdMapping(container=0, host=host.egid, size=1),)
    if host.subuid and host.subgid and host.newuidmap and host.newgidmap:
        return IdMaps(
            uid_map=own_uid + (IdMapping(container=1, host=host.subuid[0], size=host.subuid[1]),),
            gid_map=own_gid + (IdMapping(container=1, host=host.subgid[0], size=host.subgid[1]),),
            setgroups=False,
            use_helpers=True,
        )
    return IdMaps(uid_map=own_uid, gid_map=own_gid, setgroups=False, use_helpers=False)


def choose_maps(config: ContainerConfig, host: HostInfo) -> Optional[IdMaps]:
    """The id maps of the container, or None when it has no user namespace."""
    if not config.userns:
        if not host.is_root:
            raise ConfigError("userns", "userns=False needs root; rootless containers always get a user namespace")
        return None
    if host.max_user_namespaces == 0:
        raise userns_off()
    if config.uid_map or config.gid_map:
        if not (config.uid_map and config.gid_map):
            raise ConfigError(
                "uid_map" if not config.uid_map else "gid_map", "uid_map and gid_map must be given together"
            )
        single_own = len(config.uid_map) == 1 and config.uid_map[0].host == host.euid and config.uid_map[0].size == 1
        helpers = not host.is_root and not single_own
        if helpers and not (host.newuidmap and host.newgidmap):
            raise UnsupportedError(
                "newuidmap/newgidmap", "install Debian's uidmap package to map more than your own id"
            )
        return IdMaps(uid_map=config.uid_map, gid_map=config.gid_map, setgroups=host.is_root, use_helpers=helpers)
    if host.is_root:
        return _root_default()
    return _rootless_default(host)


def userns_off() -> UnsupportedError:
    """The error of a host whose user namespaces are off (user.max_user_namespaces 0)."""
    return UnsupportedError("user namespaces", "set the sysctl user.max_user_namespaces above 0")


@functools.lru_cache(maxsize=1)
def _root_default() -> IdMaps:
    """As root: container ids 0..65535 to the unprivileged range (made once: immutable)."""
    full = (IdMapping(container=0, host=ROOT_DEFAULT_HOST_ID, size=ROOT_DEFAULT_SIZE),)
    return IdMaps(uid_map=full, gid_map=full, setgroups=True, use_helpers=False)


def _write(path: str, data: bytes, field: str) -> None:
    """(Called with Ctrl-C deferred: between the open and the close it would lose the fd.
    Not through a file object: its making costs ~1.5 us of user time, this ~0.3.)"""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as err:
        text = data.decode()
        raise SetupError(err.errno, f"write({path!r}, {text.strip()!r})", step="IDMAP", field=field) from None


def _helper(tool: str, pid: int, maps: Tuple[IdMapping, ...], field: str) -> Generator[int, None, None]:
    args = [tool, str(pid)] + [str(v) for m in maps for v in (m.container, m.host, m.size)]
    proc = yield from run_program(args)
    if proc.returncode != 0:
        raise SetupError(
            1,
            f"{' '.join(args)} ({proc.stdout.decode(errors='replace').strip()})",
            step="IDMAP",
            field=field,
            hint="the ranges must be yours in /etc/subuid and /etc/subgid",
        )


def write_maps(pid: int, maps: IdMaps) -> Generator[int, None, None]:
    """Steps (``posix.steps``): write the maps of the child ``pid`` (parent
    side, before the go byte); the helpers' runs are waits."""
    if not maps.setgroups:
        with sigint_deferred():
            _write(f"/proc/{pid}/setgroups", b"deny", "userns")
    if maps.use_helpers:
        yield from _helper("newuidmap", pid, maps.uid_map, "uid_map")
        yield from _helper("newgidmap", pid, maps.gid_map, "gid_map")
        return
    uid_text, gid_text = _map_texts(maps)
    with sigint_deferred():  # (both writes in one window: no wait in it)
        _write(f"/proc/{pid}/uid_map", uid_text, "uid_map")
        _write(f"/proc/{pid}/gid_map", gid_text, "gid_map")


@functools.lru_cache(maxsize=64)  # (an IdMaps caches its hash)
def _map_texts(maps: IdMaps) -> Tuple[bytes, bytes]:
    """What uid_map and gid_map get written."""
    return _map_text(maps.uid_map), _map_text(maps.gid_map)


def _map_text(mappings: Tuple[IdMapping, ...]) -> bytes:
    return "".join(m.line() + "\n" for m in mappings).encode()
