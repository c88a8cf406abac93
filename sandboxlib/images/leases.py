"""What running containers hold in the store: leases on their layers (a shared flock each,
which lapses with its holder) and their writable layers on disk, swept once their lease lapsed."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import Callable, List, Sequence, Set, Tuple

from .locks import locked
from .modes import PRIVATE

log = logging.getLogger("sandboxlib")

__all__ = ["ContainerLeases"]


class ContainerLeases:
    """The leases and writable layers of a :class:`~sandboxlib.images.store.Store` (a part of it)."""

    path: str
    _locks: str

    remove_trees: Callable[[Sequence[str]], List[str]]  # the store's

    def writable_dir(self, container_id: str, owner: Tuple[int, int]) -> str:
        """``containers/ID`` with empty ``upper/`` and ``work/`` owned by
        ``owner``.  Take the container's :meth:`lease` first: the directory of
        a container whose lease is not held is removed by :meth:`sweep_writable`."""
        os.makedirs(os.path.join(self.path, "containers"), mode=PRIVATE, exist_ok=True)
        path = os.path.join(self.path, "containers", container_id)
        os.mkdir(path, 0o700)
        try:
            os.chown(path, *owner)  # the container's root opens upper/ and work/ in it
            for name in ("upper", "work"):
                os.mkdir(os.path.join(path, name), 0o755)
                os.chown(os.path.join(path, name), *owner)
        except BaseException:
            self.remove_trees([path])
            raise
        return path

    def sweep_writable(self) -> int:
        """Remove the writable dirs (and leases) of containers whose owner is
        gone (their lease is not held; what cannot be removed is left for a
        later sweep).  One sweeper at a time: returns 0 at once while another
        runs.  A directory that cannot be removed is logged (logger
        ``sandboxlib``) and skipped.  Returns how many were removed."""
        top = os.path.join(self.path, "containers")
        removed = 0
        with locked(os.path.join(self._locks, "containers.lock"), exclusive=True, blocking=False) as mine:
            for name in os.listdir(top) if mine and os.path.isdir(top) else []:
                try:
                    removed += self._sweep_one(top, name)
                except Exception as err:  # one bad directory never stops the sweep (nor a start)
                    log.warning("could not sweep the writable layer %s: %r", os.path.join(top, name), err)
        return removed

    def _sweep_one(self, top: str, name: str) -> bool:
        if self._lease_held(name) or self.remove_trees([os.path.join(top, name)]):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, "leases", name))
        return True

    def _lease_held(self, owner: str) -> bool:
        """Whether a live container holds ``leases/OWNER`` (its shared flock)."""
        try:
            fd = os.open(os.path.join(self.path, "leases", owner), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def lease(self, owner: str, diff_ids: Sequence[str]) -> int:
        """Keep ``diff_ids`` unpacked while the returned fd is open (a shared
        flock on ``leases/OWNER``: a dead holder's lease lapses by itself)."""
        top = os.path.join(self.path, "leases")
        os.makedirs(top, mode=PRIVATE, exist_ok=True)
        # Locked and written before it has a name: a collection never sees it unlocked.
        fd = os.open(top, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.write(fd, "\n".join(diff_ids).encode())
            dir_fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:  # linkat(AT_SYMLINK_FOLLOW) of the magic link names the open file
                os.link(f"/proc/self/fd/{fd}", owner, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self, owner: str, fd: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, "leases", owner))
        os.close(fd)

    def _leased_diff_ids(self) -> Set[str]:
        """diff_ids that running containers use; lapsed leases are removed."""
        top = os.path.join(self.path, "leases")
        found: Set[str] = set()
        for name in os.listdir(top) if os.path.isdir(top) else []:
            path = os.path.join(top, name)
            with contextlib.suppress(FileNotFoundError), locked(path, exclusive=True, blocking=False) as free:
                if free:
                    os.unlink(path)
                else:
                    with open(path) as f:
                        found.update(f.read().split())
        return found
