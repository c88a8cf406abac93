"""Addresses of a bridge's containers, leased through files that are safe
across processes: ``<dir>/<address>``, held by an exclusive flock for the
lease's life (its holder's open file).  A lease whose file nobody locks
belongs to a dead owner (a SIGKILL leaves it behind) and is taken over: no
sweep is needed.  Allocation is serialised by ``<dir>/.lock``."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from typing import Iterator, Optional, Tuple

from ..errors import ConfigError

__all__ = ["Lease", "lease_address", "dir_lock", "leases"]


@contextlib.contextmanager
def dir_lock(directory: str) -> Iterator[None]:
    """The exclusive lock of a lease directory (made if missing)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Lease:
    """One address, held until :meth:`release` (or the holder's death).
    ``previous``: the record of a dead owner whose lease this took over (what
    it left, e.g. nft objects, is cleaned up by the new holder), or None."""

    def __init__(self, path: str, fd: int, address: ipaddress.IPv4Address, previous: Optional[dict]) -> None:
        self.path, self._fd, self.address, self.previous = path, fd, address, previous

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # an allocator that opened it before checks the inode: see _take
        os.close(self._fd)
        self._fd = -1


def _take(path: str, record: bytes) -> Optional[Tuple[int, Optional[dict]]]:
    """The lease file at ``path`` locked by us and the record it held, or None while another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # released (unlinked) meanwhile: retry
            os.close(fd)
            return _take(path, record)
    except FileNotFoundError:
        os.close(fd)
        return _take(path, record)
    try:
        previous = json.loads(os.pread(fd, 65536, 0) or b"null")
    except ValueError:
        previous = None
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    return fd, previous


def lease_address(directory: str, subnet: ipaddress.IPv4Network, owner: dict) -> Lease:
    """The first free address of ``subnet`` after its gateway (the first host)."""
    record = json.dumps(owner).encode()
    with dir_lock(directory):
        hosts = subnet.hosts()
        next(hosts)  # the gateway, the bridge's own
        for address in hosts:
            path = os.path.join(directory, str(address))
            taken = _take(path, record)
            if taken is not None:
                return Lease(path, taken[0], address, taken[1])
    raise ConfigError("network", f"no free address left in {subnet}")


def leases(directory: str) -> Iterator[dict]:
    """The records of the live leases (their holders are alive): ``owner`` + ``address``."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.startswith("."):
                continue
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    continue  # nobody holds it: a dead owner's
                except BlockingIOError:
                    pass
                with contextlib.suppress(ValueError):
                    yield {**json.loads(os.pread(fd, 65536, 0) or b"{}"), "address": name}
            finally:
                os.close(fd)
