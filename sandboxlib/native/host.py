"""Facts about the host that decide how a container can be built."""

from __future__ import annotations

import functools
import os
import pwd
from typing import NamedTuple, Optional, Tuple

__all__ = ["HostInfo", "probe_host", "subordinate_range"]


class HostInfo(NamedTuple):
    """What this process may do on this host (facts read, not options checked: a
    NamedTuple, cheaper to define than an attrs class in a short-lived program).

    Attributes:
        euid, egid: who we are.
        user_name: our login name (for /etc/subuid), or None.
        subuid, subgid: our (start, count) subordinate id ranges, or None.
        newuidmap, newgidmap: paths of the setuid helpers, or None.
        max_user_namespaces: the kernel's limit (0: user namespaces are off;
            None: not read, see ``probe_host``).
    """

    euid: int
    egid: int
    user_name: Optional[str]
    subuid: Optional[Tuple[int, int]]
    subgid: Optional[Tuple[int, int]]
    newuidmap: Optional[str]
    newgidmap: Optional[str]
    max_user_namespaces: Optional[int]

    @property
    def is_root(self) -> bool:
        return self.euid == 0


def subordinate_range(path: str, user_name: Optional[str], uid: int) -> Optional[Tuple[int, int]]:
    """The first ``name:start:count`` range of ``path`` for this user (by name or uid)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in {user_name, str(uid)}:
            try:
                start, count = int(parts[1]), int(parts[2])
            except ValueError:
                continue
            if count > 0:
                return start, count
    return None


def _read_int(path: str, default: int) -> int:
    try:  # unbuffered binary: the text layers took 3/4 of the probe's time
        with open(path, "rb", buffering=0) as f:  # (a file object: no fd lost to a Ctrl-C)
            return int(f.read(64))
    except (OSError, ValueError):
        return default


def max_user_namespaces() -> int:
    """The kernel's limit on user namespaces (0: they are off)."""
    return _read_int("/proc/sys/user/max_user_namespaces", 1)


def probe_host(*, userns_limit: bool = True) -> HostInfo:
    """What this process may do, probed now (a container start asks each
    time, so nothing is kept between two users of the library: a few us as
    root; 0.1 ms rootless, which reads the user database, /etc/subuid,
    /etc/subgid and PATH).  Without ``userns_limit`` the sysctl is not read
    (~20 us: a /proc/sys open): a start reads it only if the kernel refuses
    its clone (``max_user_namespaces``)."""
    euid, egid = os.geteuid(), os.getegid()
    max_userns = max_user_namespaces() if userns_limit else None
    if euid == 0:  # root maps ids itself: no sub-ids, no helpers
        return _root_host(egid, max_userns)
    import shutil  # (rootless only: ~5 ms of imports that root's OCI runtime create need not pay)

    try:
        name: Optional[str] = pwd.getpwuid(euid).pw_name
    except KeyError:
        name = None
    return HostInfo(
        euid=euid,
        egid=egid,
        user_name=name,
        subuid=subordinate_range("/etc/subuid", name, euid),
        subgid=subordinate_range("/etc/subgid", name, euid),
        newuidmap=shutil.which("newuidmap"),
        newgidmap=shutil.which("newgidmap"),
        max_user_namespaces=max_userns,
    )


@functools.lru_cache(maxsize=8)
def _root_host(egid: int, max_userns: Optional[int]) -> HostInfo:
    return HostInfo(
        euid=0,
        egid=egid,
        user_name="root",
        subuid=None,
        subgid=None,
        newuidmap=None,
        newgidmap=None,
        max_user_namespaces=max_userns,
    )
