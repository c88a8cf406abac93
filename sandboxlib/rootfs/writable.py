"""An image container's writable layer on disk: ``containers/ID`` in its
store, with the overlay's ``upper/`` and ``work/`` (the default; a tmpfs
writable layer needs none of this).

The directory is made after the container's lease is taken and removed
before the lease is released, so a directory whose lease nobody holds is
one whose owner is gone (SIGKILLed, or the machine rebooted): the next
image container started on the store sweeps it (at most once a second per
process and store), and so does ``ImageStore.collect``.  Rootless, what the
container's other users (your sub-ids) wrote there you cannot delete as
yourself (a 0700 directory of uid 1000 inside, a mode 000 one): the store's
``remove_trees`` empties it in a short sandbox with your id maps (``subids``),
which cover every id a container of yours can have."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import warnings
from typing import Tuple

from ..errors import ConfigError
from ..images import ImageStore
from ..posix import forkclosed, throttle

__all__ = ["make", "kept", "remove_if_empty", "release", "sweep", "SWEEP_INTERVAL"]

log = logging.getLogger("sandboxlib")
SWEEP_INTERVAL = 1.0  # seconds between two sweeps of one store


def make(store: ImageStore, container_id: str, owner: Tuple[int, int]) -> str:
    """The container's directory (the lease must be held)."""
    return store.writable_dir(container_id, owner)


def kept(path: str, owner: Tuple[int, int]) -> Tuple[str, int]:
    """A writable layer that outlives its containers (``writable_dir=``):
    made if missing (with its parents, as ``mkdir -p``); else the marker an earlier volatile overlay left is
    removed (the kernel refuses to mount it again while it is there; its
    unmount was clean, so what it wrote is whole).  Returns ``path`` and an fd
    holding its ``flock`` until the container's end (``forkclosed.close_fd``;
    a fork's child has no copy of it): one container at a time
    (two overlays on one upper dir are undefined behaviour, the kernel says, and
    the second's clean-up would pull the markers from under the first's mount);
    ConfigError while another container has it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chown(path, *owner)  # the container's root opens upper/ and work/ in it
        for name in ("upper", "work"):
            os.mkdir(os.path.join(path, name), 0o755)
            os.chown(os.path.join(path, name), *owner)
    held = forkclosed.open_fd(path, os.O_RDONLY | os.O_DIRECTORY)  # (a fork's child must not keep the lock)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        forkclosed.close_fd(held)
        raise ConfigError("writable_dir", f"{path} is the writable layer of another running container") from None
    try:
        _clean_kept(path)
    except BaseException:
        forkclosed.close_fd(held)
        raise
    return path, held


def _clean_kept(path: str) -> None:
    """An earlier volatile overlay's markers, removed (a directory just made has none)."""
    for name in ("work/work", "work/work/incompat", "work/work/incompat/volatile"):
        with contextlib.suppress(OSError):  # (overlayfs makes them mode 000; the container's root owns them)
            os.chmod(os.path.join(path, name), 0o700)
    for name in _EMPTY_TREE[:2]:
        target = os.path.join(path, name)
        try:
            (os.unlink if name.endswith("dirty") else os.rmdir)(target)
        except FileNotFoundError:
            pass


# What the directory holds when the container wrote nothing: our dirs and
# the three overlayfs makes for a volatile mount, deepest first.
_EMPTY_TREE = (
    "work/work/incompat/volatile/dirty",
    "work/work/incompat/volatile",
    "work/work/incompat",
    "work/work",
    "work",
    "upper",
    "",
)


def remove_if_empty(path: str) -> None:
    """Remove the directory if the container wrote nothing there, by name,
    ignoring every error (``release`` then does the rest).  Called while the
    container's init is being torn down: its rmdirs (~55 us each on this
    VM's ext4) overlap the teardown instead of following it."""
    for name in _EMPTY_TREE:
        target = os.path.join(path, name) if name else path
        try:
            (os.unlink if name.endswith("dirty") else os.rmdir)(target)
        except FileNotFoundError:
            continue
        except OSError:
            return


def release(store: ImageStore, path: str) -> None:
    """Remove the directory of a closing container; what is left (warned
    about) is swept later, once its lease is released."""
    if store.remove_trees([path]):
        warnings.warn(
            f"could not remove the writable layer {path}; the next image container started on this store removes it",
            ResourceWarning,
            stacklevel=2,
        )


def sweep(store: ImageStore) -> int:
    """Remove the writable layers of the store's dead containers (at most
    once a second per store, across processes).  Returns how many were removed."""
    if not throttle.due(os.path.join(store.path, ".writable-swept"), SWEEP_INTERVAL):
        return 0
    try:
        return store.sweep_writable()
    except Exception as err:  # a sweep never fails a start (the next one tries again)
        log.warning("could not sweep the writable layers of %s: %r", store.path, err)
        return 0
