"""The check of a layer when it enters the store: its tar headers followed
as the unpacker (``unpack.py``) would apply them, without writing anything.

Unpacking is lazy (at a container's first start, for its id policy; a
pull unpacks for the default one as a layer streams in, with this check
seeing each header first), so
without this an image whose layer the unpacker refuses (a hard link out of
the layer, an entry replacing the root, a name under a symlink, an empty
whiteout name...) would be listed and fail only at its first run.  The
check runs in the pass that computes the layer's diff_id, so it costs no
extra read; it keeps a tree of names (a dict per directory, ``None`` for
anything else), bounded by the store's :class:`LayerLimits`, which it also
enforces before any data is read: a decompression bomb is refused from its
headers, and never unpacked."""

from __future__ import annotations

import tarfile
from typing import Dict, Optional, Sequence

import attrs

from ..errors import ConfigError, ImageFormatError
from .unpack import OPAQUE, WHITEOUT, check_symlink, link_target, refused, split_name

__all__ = ["LayerLimits", "LayerCheck"]

Tree = Dict[str, Optional[dict]]  # name -> a directory's tree, or None (anything else)
_ABSENT = object()


def _positive_int(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"layer_limits.{attribute.name}", f"expected a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class LayerLimits:
    """What one layer may unpack to, checked when it enters the store
    (``load``, ``import_rootfs``, ``from_directory``).  Set them with
    ``ImageStore(path, layer_limits=LayerLimits(...))``.

    Attributes:
        max_bytes: the sum of its regular files' sizes.  Default 64 GiB: far
            above real images (a CUDA base layer is ~5 GiB), far below a
            decompression bomb's terabytes.
        max_entries: its tar entries (files, directories, links, whiteouts).
            Default 2,000,000: ten times the files of a large distribution
            image; the check keeps a name per entry (~100 bytes each).
    """

    max_bytes: int = attrs.field(default=64 << 30, validator=_positive_int)
    max_entries: int = attrs.field(default=2_000_000, validator=_positive_int)


class LayerCheck:
    """Feed it every member of a layer tar, in order (``entry``); it raises
    the ImageFormatError unpacking would raise, or one for a limit."""

    def __init__(self, label: str, limits: LayerLimits, devices: bool) -> None:
        # devices: whether device nodes are made (as root; a rootless
        # unpacker skips them, so a hard link to one finds nothing).
        self.label, self.limits, self.devices = label, limits, devices
        self.root: Tree = {}
        self.entries = self.bytes = 0

    def entry(self, member: tarfile.TarInfo) -> None:
        self._count(member)
        parts = split_name(member.name, self.label)
        if not parts:
            if not member.isdir():
                raise refused(self.label, "root", name=member.name)
            return
        parent = self._parent(parts, create=True)
        base = parts[-1]
        if base == OPAQUE:
            return
        if base.startswith(WHITEOUT):
            self._whiteout_name(base[len(WHITEOUT) :], member)
            parent[base[len(WHITEOUT) :]] = None  # a whiteout device
            return
        self._create(member, parent, base)

    def _count(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        self.bytes += member.size if member.isreg() else 0
        for value, limit, field in (
            (self.entries, self.limits.max_entries, "max_entries"),
            (self.bytes, self.limits.max_bytes, "max_bytes"),
        ):
            if value > limit:
                what = "entries" if field == "max_entries" else "bytes of files"
                raise ImageFormatError(
                    self.label,
                    f"more than {limit:,} {what} (at entry {member.name!r}): the "
                    f"store's layer limit; raise it with ImageStore(path, layer_"
                    f"limits=sandboxlib.images.LayerLimits({field}=...))",
                )

    def _parent(self, parts: Sequence[str], create: bool) -> Tree:
        """The tree holding ``parts[-1]``; missing directories are made (or KeyError)."""
        node = self.root
        for part in parts[:-1]:
            child = node.get(part, _ABSENT)
            if child is _ABSENT:
                if not create:
                    raise KeyError(part)
                child = node[part] = {}
            elif child is None:
                raise refused(self.label, "not dir", path="/".join(parts), part=part)
            node = child
        return node

    def _whiteout_name(self, name: str, member: tarfile.TarInfo) -> None:
        if name in ("", ".", ".."):
            raise refused(self.label, "whiteout", name=member.name)

    def _create(self, member: tarfile.TarInfo, parent: Tree, name: str) -> None:
        if member.isdir():
            if not isinstance(parent.get(name), dict):
                parent[name] = {}
            return
        parent.pop(name, None)  # replaced (a directory with all below it)
        if member.issym():
            check_symlink(member, self.label)
        if member.islnk():
            self._hardlink(member)
        elif member.ischr() or member.isblk():
            if not self.devices:
                return
        elif not (member.isreg() or member.issym() or member.isfifo()):
            raise refused(self.label, "type", name=member.name, type=member.type)
        parent[name] = None

    def _hardlink(self, member: tarfile.TarInfo) -> None:
        target = link_target(member, self.label)
        try:
            found = self._parent(target, create=False).get(target[-1], _ABSENT)
        except KeyError:
            found = _ABSENT
        if found is _ABSENT:
            raise refused(self.label, "link missing", name=member.name, target=member.linkname)
        if found is not None:
            raise refused(self.label, "link dir", name=member.name)
