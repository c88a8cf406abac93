"""Mounts (bind, tmpfs, named volumes) and id mappings of a container."""

from __future__ import annotations

import enum
import os
import re
from typing import Optional, Union

import attrs

from ..errors import ConfigError
from .values import ID_MAX, _int_field, check_text, container_path, tmpfs_size

__all__ = ["MountKind", "KERNEL_MOUNTS", "Mount", "IdMapping"]


class MountKind(enum.Enum):
    BIND = "bind"
    TMPFS = "tmpfs"
    VOLUME = "volume"


_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


# The kernel file systems the container gets fresh, with masked and
# read-only paths below them: a mount on or under one would cover the masks
# (as runc, refuse mounts over them).  Paths are normalized first; /dev
# itself is refused too (``Mount.check``).  csrc/mounts.c refuses the same
# paths once a target is resolved in the root (a symlink may lead there).
KERNEL_MOUNTS = ("/proc", "/sys", "/dev/pts")


@attrs.frozen(kw_only=True)
class Mount:
    """A mount inside the container; build it with :meth:`bind` or :meth:`tmpfs`."""

    kind: MountKind
    target: str
    source: Optional[str] = None
    read_only: bool = False
    size: Optional[int] = attrs.field(
        default=None, converter=attrs.converters.optional(lambda v: tmpfs_size(v, "size"))
    )
    mode: int = 0o1777
    idmap: bool = False

    @classmethod
    def bind(
        cls,
        source: Union[str, os.PathLike],
        target: Union[str, os.PathLike],
        *,
        read_only: bool = False,
        idmap: bool = False,
    ) -> Mount:
        """Bind the host path ``source`` (file or directory, recursively) at ``target``.

        ``idmap=True`` shows the host's ids inside as they are on the disk: the
        container's root owns what the host's root owns, and what the
        container's root writes belongs to the host's root, not to the
        unprivileged host id the container's root maps to (an idmapped mount,
        ``MOUNT_ATTR_IDMAP`` with the container's user namespace, as Podman's
        ``:idmap``).  As root that is the only way a container writes files
        the caller owns into a caller's directory.  Rootless, the container's
        root is the caller already (what it writes is the caller's) and the
        kernel lets no unprivileged process idmap a disk's mount: the bind is
        a plain one.  Without a user namespace (``userns=False``) too."""
        src = os.path.abspath(check_text(os.fspath(source), "source"))
        if not isinstance(idmap, bool):
            raise ConfigError("idmap", f"must be True or False, got {idmap!r}")
        return cls(
            kind=MountKind.BIND, source=src, target=container_path(target, "target"), read_only=read_only, idmap=idmap
        )

    @classmethod
    def tmpfs(
        cls,
        target: Union[str, os.PathLike],
        *,
        size: Union[int, str, None] = None,
        mode: int = 0o1777,
        read_only: bool = False,
    ) -> Mount:
        """A fresh tmpfs at ``target``; ``size`` in bytes or as ``"64M"``."""
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ConfigError("mode", f"must be a permission mode such as 0o1777, got {mode!r}")
        return cls(
            kind=MountKind.TMPFS, target=container_path(target, "target"), size=size, mode=mode, read_only=read_only
        )

    @classmethod
    def volume(
        cls, name: str, target: Union[str, os.PathLike], *, read_only: bool = False, idmap: bool = False
    ) -> Mount:
        """The named volume ``name`` of the image store (made empty on first
        use, kept until ``ImageStore.remove_volume``) at ``target``.

        ``idmap=True`` (as root): the volume is made owned by the host's root
        and mounted as ``Mount.bind(idmap=True)`` binds are, so the container's
        root owns it and what it writes there belongs to the host's root (as
        a root dockerd's volumes).  A volume made without (owned by the
        container root's unprivileged host id: a plain mount's, or a root
        daemon's before it idmapped volumes) is bound plainly as it was made
        (idmapped, it would show as nobody's); one made with it and mounted
        without shows as owned by nobody.  Rootless or without a user
        namespace it changes nothing."""
        if not isinstance(name, str) or not _VOLUME_NAME.fullmatch(name):
            raise ConfigError("name", f"{name!r} is not a volume name (letters, digits, '_', '.', '-')")
        if not isinstance(idmap, bool):
            raise ConfigError("idmap", f"must be True or False, got {idmap!r}")
        return cls(
            kind=MountKind.VOLUME,
            source=name,
            target=container_path(target, "target"),
            read_only=read_only,
            idmap=idmap,
        )

    def check(self, field: str) -> None:
        """Check what can only be checked on this host (the source exists)."""
        if self.target == "/":
            raise ConfigError(f"{field}.target", "cannot mount over the container root")
        if self.target == "/dev":
            raise ConfigError(
                f"{field}.target",
                "'/dev' is made by the container (its devices, /dev/pts, "
                "/dev/shm, /dev/mqueue): they would be made inside this "
                "mount (in the host directory, for a bind); mount below /dev, "
                "or bind single devices",
            )
        covered = next((k for k in KERNEL_MOUNTS if self.target == k or self.target.startswith(k + "/")), None)
        if covered is not None:
            raise ConfigError(
                f"{field}.target",
                f"{self.target!r} is on or under {covered}, which the "
                f"container gets fresh from the kernel (with its masked "
                f"paths): mount elsewhere",
            )
        if self.kind is MountKind.BIND and (self.source is None or not os.path.exists(self.source)):
            raise ConfigError(f"{field}.source", f"{self.source!r} does not exist on the host")


@attrs.frozen(kw_only=True)
class IdMapping:
    """``size`` ids from ``container`` inside map to ``host`` outside."""

    container: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 0, ID_MAX))
    host: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 0, ID_MAX))
    size: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 1, ID_MAX + 1))

    def __attrs_post_init__(self) -> None:
        for name, first in (("container", self.container), ("host", self.host)):
            if first + self.size - 1 > ID_MAX:  # the kernel refuses a range that wraps
                raise ConfigError(
                    "size",
                    f"{name} ids {first}..{first + self.size - 1} go past the highest id {ID_MAX} ((uid_t)-1 is no id)",
                )

    def line(self) -> str:
        return f"{self.container} {self.host} {self.size}"

    def to_host(self, inside: int) -> Optional[int]:
        if self.container <= inside < self.container + self.size:
            return self.host + inside - self.container
        return None
