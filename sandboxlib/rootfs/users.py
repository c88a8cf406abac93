"""Resolve a ``user`` string against the container's own /etc/passwd and
/etc/group, read through a root-confined open (never the host's NSS, never
the container's libraries)."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import attrs

from ..errors import ConfigError
from ..native import binding

__all__ = ["User", "resolve_user", "ROOT"]


@attrs.frozen(kw_only=True)
class User:
    uid: int
    gid: int
    groups: Tuple[int, ...] = ()
    home: str = "/"


# The default user: root, HOME=/root, as Docker does for an image without a USER.
ROOT = User(uid=0, gid=0, groups=(), home="/root")


def _read_db(root_fd: int, path: str) -> List[List[str]]:
    """The entries of a passwd-style file; none when the root has no such file."""
    try:
        fd = binding.open_in_root(root_fd, path)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read(4 << 20)
    return [
        line.split(":") for line in data.decode("utf-8", "replace").splitlines() if line and not line.startswith("#")
    ]


def _number(text: str) -> Optional[int]:
    return int(text) if text.isdigit() else None


def resolve_user(spec: Optional[str], root_fd: int, group_add: Sequence[str] = ()) -> User:
    """``"uid[:gid]"`` or ``"name[:group]"`` -> User, looked up inside the root;
    with the supplementary groups ``group_add`` (gids or names in its /etc/group)."""
    user = _resolve(spec, root_fd)
    if not group_add:
        return user
    groups_db = _read_db(root_fd, "/etc/group")
    added = set()
    for group in group_add:
        number = _number(group)
        found = next((g for g in groups_db if len(g) >= 3 and g[0] == group and g[2].isdigit()), None)
        if number is None and found is None:
            raise ConfigError("group_add", f"no group {group!r} in the container's /etc/group")
        added.add(number if number is not None else int(found[2]))
    return attrs.evolve(user, groups=tuple(sorted(added.union(user.groups))))


def _resolve(spec: Optional[str], root_fd: int) -> User:
    if spec is None:
        return ROOT
    name, _, group = str(spec).partition(":")
    passwd = _read_db(root_fd, "/etc/passwd")
    uid = _number(name)
    entry = next((e for e in passwd if len(e) >= 7 and (e[0] == name if uid is None else e[2] == name)), None)
    if uid is None:
        if entry is None:
            raise ConfigError("user", f"no user {name!r} in the container's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry and entry[3].isdigit() else (0 if uid == 0 else uid)
    home = entry[5] if entry else ("/root" if uid == 0 else "/")
    groups_db = _read_db(root_fd, "/etc/group")
    if group:
        gid_number = _number(group)
        found = next((g for g in groups_db if len(g) >= 3 and g[0] == group), None)
        if gid_number is None and found is None:
            raise ConfigError("user", f"no group {group!r} in the container's /etc/group")
        gid = gid_number if gid_number is not None else int(found[2])
    user_name = entry[0] if entry else None
    extra = tuple(
        sorted(
            {
                int(g[2])
                for g in groups_db
                if len(g) >= 4 and g[2].isdigit() and user_name and user_name in g[3].split(",")
            }
        )
    )
    return User(uid=uid, gid=gid, groups=extra, home=home)
