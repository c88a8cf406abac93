"""An image container's writable layer on disk: ``containers/ID`` in its
store, with the overlay's ``upper/`` and ``work/`` (the default; a tmpfs
writable layer needs none of this).

The directory is made after the container's lease is taken and removed
before the lease is released, so a directory whose lease nobody holds is
one whose owner is gone (SIGKILLed, or the machine rebooted): the next
image container started on the store sweeps it (at most once a second per
process and store), and so does ``ImageStore.collect``.  Rootless, what the
container's other users (your sub-ids) wrote there you cannot delete as
yourself (a 0700 directory of uid 1000 inside, a mode 000 one): a container
with the same id maps, recorded in ``containers/ID/idmap`` before the
container starts, deletes it."""
from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Optional, Tuple

from .config import ContainerConfig, IdMapping, Mount
from .idmap import IdMaps
from .images import ImageStore
from .images.store import NOTE
from .images.unpack import remove_tree

__all__ = ["make", "remove", "release", "sweep", "SWEEP_INTERVAL"]

SWEEP_INTERVAL = 1.0  # seconds between two sweeps of one store by one process
_last_sweep: dict = {}
_lock = threading.Lock()


def make(store: ImageStore, container_id: str, maps: Optional[IdMaps], owner: Tuple[int, int]) -> str:
    """The container's directory (the lease must be held), with its id maps
    when they map more than our own id (only then can files there be closed to us)."""
    note = "" if maps is None or not maps.use_helpers else "".join(
        f"{kind} {m.line()}\n" for kind, ms in (("uid", maps.uid_map), ("gid", maps.gid_map)) for m in ms)
    return store.writable_dir(container_id, owner, note)


def remove(path: str, maps: Optional[IdMaps]) -> None:
    """Remove the directory, through a container with ``maps`` for what we
    cannot delete ourselves.  Raises OSError when something is left."""
    try:
        remove_tree(path)
        return
    except OSError:
        if not os.path.lexists(path):
            return
        if maps is None or os.geteuid() == 0:
            raise
    _remove_in_userns(path, maps)
    remove_tree(path)


def _remove_in_userns(path: str, maps: IdMaps) -> None:
    """``rm -rf`` as the root of a user namespace with the container's maps:
    its capabilities cover every file the container's ids own."""
    from .container import Container  # same layer; Container uses this module
    config = ContainerConfig(mounts=[Mount.bind(path, "/writable")], uid_map=maps.uid_map,
                             gid_map=maps.gid_map, seccomp=None)
    with Container(config) as cleaner:
        cleaner.run(["rm", "-rf", "/writable/upper", "/writable/work"], timeout=60)


def release(path: str, maps: Optional[IdMaps]) -> None:
    """Remove the directory of a closing container; what is left (warned
    about) is swept later, once its lease is released."""
    try:
        remove(path, maps)
    except Exception as err:
        warnings.warn(f"could not remove the writable layer {path} ({err}); the next image container "
                      f"started on this store removes it", ResourceWarning, stacklevel=2)


def _recorded_maps(path: str) -> Optional[IdMaps]:
    """The id maps a directory's container had, or None (no user namespace, unreadable)."""
    maps: dict = {"uid": [], "gid": []}
    try:
        with open(os.path.join(path, NOTE)) as f:
            for line in f.read().splitlines():
                kind, inside, host, size = line.split()
                maps[kind].append(IdMapping(container=int(inside), host=int(host), size=int(size)))
    except (OSError, ValueError, KeyError):
        return None
    if not maps["uid"] or not maps["gid"]:
        return None
    return IdMaps(uid_map=tuple(maps["uid"]), gid_map=tuple(maps["gid"]), setgroups=False, use_helpers=False)


def _remove_swept(path: str) -> None:
    try:
        remove(path, _recorded_maps(path))
    except Exception as err:
        warnings.warn(f"could not remove the writable layer {path} of a dead container ({err})",
                      ResourceWarning, stacklevel=2)
        raise OSError(str(err)) from None


def sweep(store: ImageStore) -> int:
    """Remove the writable layers of the store's dead containers (at most
    once a second per process and store).  Returns how many were removed."""
    now = time.monotonic()
    with _lock:
        if now - _last_sweep.get(store.path, -SWEEP_INTERVAL) < SWEEP_INTERVAL:
            return 0
        _last_sweep[store.path] = now
    try:
        return store.sweep_writable(_remove_swept)
    except OSError as err:  # a sweep never fails a start (the next one tries again)
        warnings.warn(f"could not sweep the writable layers of {store.path} ({err})", ResourceWarning, stacklevel=2)
        return 0
