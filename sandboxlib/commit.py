"""``Container.commit``: the container's writable layer (its overlay upper
dir, which the init keeps open at ``SBX_FD_UPPER``) becomes a new layer on
top of its image's, with OCI whiteouts for what was deleted."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import stat
import tarfile
import tempfile
from typing import Mapping, Optional

from .errors import ConfigError
from .images import Image, ImageStore
from .images.build import write_manifest
from .images.unpack import DIR_FLAGS, IdPolicy
from .transfer import _container_ids

__all__ = ["commit", "CHANGES"]

OPAQUE_XATTR = "user.overlay.opaque"
PLAIN = "application/vnd.oci.image.layer.v1.tar"
# docker commit --change names -> image config keys
CHANGES = {"cmd": "Cmd", "entrypoint": "Entrypoint", "env": "Env", "workdir": "WorkingDir", "user": "User"}


def _changes(changes: Optional[Mapping[str, object]]) -> dict:
    found = {}
    for key, value in (changes or {}).items():
        if key not in CHANGES:
            raise ConfigError(f"changes[{key!r}]", f"unknown change; one of {sorted(CHANGES)}")
        if key == "env" and isinstance(value, Mapping):
            value = [f"{k}={v}" for k, v in value.items()]
        if key in ("cmd", "entrypoint", "env"):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"changes[{key!r}]", "expected a list of strings")
            value = list(value)
        elif not isinstance(value, str):
            raise ConfigError(f"changes[{key!r}]", "expected a string")
        found[CHANGES[key]] = value
    return found


def _entry(tar: tarfile.TarFile, name: str, st: os.stat_result, policy: IdPolicy, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.uid, info.gid = _container_ids(st.st_uid, st.st_gid, policy)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _walk(tar: tarfile.TarFile, dir_fd: int, prefix: str, policy: IdPolicy) -> None:
    for name in sorted(os.listdir(dir_fd)):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        path = prefix + name
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # overlay whiteout -> OCI whiteout
            tar.addfile(_entry(tar, prefix + ".wh." + name, st, policy, mode=0o644))
        elif stat.S_ISDIR(st.st_mode):
            tar.addfile(_entry(tar, path + "/", st, policy, type=tarfile.DIRTYPE))
            child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            try:
                with contextlib.suppress(OSError):
                    if os.getxattr(child, OPAQUE_XATTR) == b"y":
                        tar.addfile(_entry(tar, path + "/.wh..wh..opq", st, policy, mode=0o644))
                _walk(tar, child, path + "/", policy)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                tar.addfile(_entry(tar, path, st, policy, size=st.st_size), f)
        elif stat.S_ISLNK(st.st_mode):
            tar.addfile(_entry(tar, path, st, policy, type=tarfile.SYMTYPE,
                               linkname=os.readlink(name, dir_fd=dir_fd)))
        elif stat.S_ISFIFO(st.st_mode):
            tar.addfile(_entry(tar, path, st, policy, type=tarfile.FIFOTYPE))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            tar.addfile(_entry(tar, path, st, policy, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                               type=tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE))


def commit(store: ImageStore, image: Image, upper_fd: int, policy: IdPolicy, ref: Optional[str],
           changes: Optional[Mapping[str, object]]) -> Image:
    """A new image: ``image`` plus the upper dir as a layer, config ``changes`` applied."""
    updates = _changes(changes)
    names = (ref,) if ref else ()
    try:
        with store.writing():
            with tempfile.TemporaryFile(dir=store.tmp) as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    _walk(tar, upper_fd, "", policy)
                f.seek(0)
                digest, size = store.blobs.put_stream(f, source="the container's writable layer")
            config = json.loads(store.blobs.read(image.id))
            config["rootfs"]["diff_ids"].append(digest)
            config["config"] = dict(config.get("config") or {}, **updates)
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            config["created"] = now
            config["history"] = list(config.get("history") or []) + [{"created": now, "created_by": "sandboxlib commit"}]
            layers = [(layer.digest, layer.size, layer.media_type) for layer in image.layers] + [(digest, size, PLAIN)]
            return store.add(write_manifest(store, config, layers), names)
    except BaseException:
        store.collect()
        raise


