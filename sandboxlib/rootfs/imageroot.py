"""A container root made of an image: its unpacked layers (leased from the
store for the container's life) and what its config says about commands
(Entrypoint, Cmd, Env, WorkingDir, User), applied as Docker does."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import attrs

from ..config import ContainerConfig
from ..errors import ConfigError, ImageFormatError
from ..images import Image, ImageStore
from ..images.layers import unpacked_layers, visible_layers
from ..images.reference import parse
from ..images.unpack import IdPolicy
from .idmap import IdMaps

__all__ = ["ImageRoot", "prepare"]


@attrs.frozen(kw_only=True)
class ImageRoot:
    """The image, the layer dirs its overlay stacks (bottom first; none below
    a layer whose root is opaque) and its command defaults."""

    image: Image
    layers: Tuple[str, ...]
    entrypoint: Tuple[str, ...]
    cmd: Tuple[str, ...]
    env: Tuple[Tuple[str, str], ...]
    cwd: Optional[str]
    user: Optional[str]

    def command(self, argv: Optional[Sequence[str]]) -> Tuple[str, ...]:
        """The main command: Entrypoint + (argv or Cmd), as ``docker run IMAGE [ARGV]``."""
        command = self.entrypoint + (tuple(argv) if argv else self.cmd)
        if not command:
            raise ConfigError("argv", "no command given and the image has no Entrypoint or Cmd")
        return command

    def passwd_root(self) -> str:
        """The top layer with an /etc/passwd or /etc/group (where users are looked up)."""
        for layer in reversed(self.layers):
            if any(
                os.path.isfile(os.path.join(layer, "etc", n)) and not os.path.islink(os.path.join(layer, "etc", n))
                for n in ("passwd", "group")
            ):
                return layer
        return self.layers[-1] if self.layers else "/nonexistent"


def id_policy(config: ContainerConfig, maps: Optional[IdMaps]) -> IdPolicy:
    """How the layers must be owned for this container's user namespace."""
    if os.geteuid() != 0:
        return IdPolicy(squash=(os.geteuid(), os.getegid()), sub=_sub_range(maps))
    if maps is None:
        return IdPolicy(shift=0)
    uid, gid = maps.to_host_uid(0), maps.to_host_gid(0)
    if uid is None or uid != gid or any(maps.to_host_uid(i) != uid + i for i in (1, 1000, 65534)):
        raise ConfigError(
            "uid_map", "an image root needs container ids 0-65535 mapped to one range, the same for uids and gids"
        )
    return IdPolicy(shift=uid)


def _sub_range(maps: Optional[IdMaps]) -> Optional[Tuple[int, int, int]]:
    """Rootless: (uid start, gid start, size) when the maps are ``0 caller 1,
    1 start size`` for uids and gids (the default with /etc/subuid ranges);
    else None (layers owned by the caller, the container's root)."""
    if maps is None or (maps.to_host_uid(0), maps.to_host_gid(0)) != (os.geteuid(), os.getegid()):
        return None
    ranges = [next((m for m in table if m.container == 1), None) for table in (maps.uid_map, maps.gid_map)]
    if None in ranges:
        return None
    return ranges[0].host, ranges[1].host, min(r.size for r in ranges)


def prepare(config: ContainerConfig, maps: Optional[IdMaps], owner: str, store: ImageStore) -> Tuple[ImageRoot, int]:
    """Resolve the image in ``store``, lease and unpack its layers: (root, lease fd)."""
    parse(config.image, "image")
    image = store.get(config.image)
    policy = id_policy(config, maps)
    lease = store.lease(owner, [layer.diff_id for layer in image.layers])
    try:
        layers = visible_layers(unpacked_layers(store, image, policy), policy)
        check_kernel_dirs(layers)
        root = ImageRoot(
            image=image,
            layers=tuple(layers),
            entrypoint=_strings(image.config, "Entrypoint"),
            cmd=_strings(image.config, "Cmd"),
            env=_env(image.config),
            cwd=_text(image.config, "WorkingDir"),
            user=_text(image.config, "User"),
        )
    except BaseException:
        store.release(owner, lease)
        raise
    return root, lease


def check_kernel_dirs(layers: Sequence[str]) -> None:
    """Refuse an image whose merged /proc or /sys is a symlink (the top layer
    with an entry of that name decides): the kernel file systems and their
    masks would be mounted wherever it points (runc's CVE-2019-19921 check)."""
    for name in ("proc", "sys"):
        for layer in reversed(layers):
            path = os.path.join(layer, name)
            if os.path.islink(path):
                raise ImageFormatError(
                    f"layer {os.path.basename(layer)}",
                    f"/{name} is a symlink (to {os.readlink(path)!r}); it must be a directory or absent",
                )
            if os.path.lexists(path):
                break  # a directory (or a whiteout): it hides the lower layers'


def _strings(config: dict, key: str) -> Tuple[str, ...]:
    value = config.get(key) or ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and "\x00" not in v for v in value):
        raise ImageFormatError(f"image config {key}", f"expected a list of strings without NUL bytes, got {value!r}")
    return tuple(value)


def _text(config: dict, key: str) -> Optional[str]:
    """A string of the image's config, or None (a NUL byte no path or user can hold)."""
    value = config.get(key) or None
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        raise ImageFormatError(f"image config {key}", f"expected a string without NUL bytes, got {value!r}")
    return value


def _env(config: dict) -> Tuple[Tuple[str, str], ...]:
    pairs = []
    for item in _strings(config, "Env"):
        name, sep, value = item.partition("=")
        if name:
            pairs.append((name, value))
    return tuple(pairs)
