"""Addresses of a bridge's containers, leased through files that are safe
across processes: ``<dir>/<address>``, held by an exclusive flock for the
lease's life (its holder's open file), holding its owner's record (id,
names, egress rules; the IPv6 address that goes with it, on a network
with an IPv6 subnet).  A network's :class:`Pool` says what is leased: its
subnet's hosts but the gateway and the reserved (auxiliary) addresses,
dynamic ones from its IP range only.  A released lease leaves its file empty (a free
slot).  A lease whose file nobody locks and that holds a record belongs to
a dead owner (a SIGKILL leaves it behind): the next start reaps it
(:func:`reap`; the record says what else the owner left).  An allocation
takes any unlocked file over.  Allocation and reaping are serialised by ``<dir>/.lock``."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Set

import attrs

from ..errors import ConfigError

__all__ = ["Lease", "Pool", "LeasedInterface", "lease_address", "dir_lock", "leases", "reap", "mac_of"]


def _first_host(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return next(subnet.hosts())


@attrs.frozen
class Pool:
    """A network's addresses (checked where the network is made: ``named.py``).
    ``gateway``: the bridge's (default: the subnet's first host); ``ip_range``:
    where dynamic leases come from (default: the whole subnet; a fixed address
    may be anywhere in it); ``reserved``: never leased (Docker's auxiliary
    addresses).  IPv6's likewise; a container's dynamic IPv6 address is at its
    IPv4 address's offset in ``ip_range6`` (default: ``subnet6``): one lease gives
    both, the IPAM stays one set of files."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address = attrs.field(
        default=attrs.Factory(lambda self: _first_host(self.subnet), takes_self=True)
    )
    ip_range: Optional[ipaddress.IPv4Network] = None
    reserved: FrozenSet[ipaddress.IPv4Address] = frozenset()
    subnet6: Optional[ipaddress.IPv6Network] = None
    gateway6: Optional[ipaddress.IPv6Address] = attrs.field(
        default=attrs.Factory(lambda self: self.subnet6[1] if self.subnet6 else None, takes_self=True)
    )
    ip_range6: Optional[ipaddress.IPv6Network] = None

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")

    @property
    def gateway6_interface(self) -> Optional[ipaddress.IPv6Interface]:
        """The bridge's IPv6 address, with the subnet's prefix."""
        if self.subnet6 is None or self.gateway6 is None:
            return None
        return ipaddress.IPv6Interface(f"{self.gateway6}/{self.subnet6.prefixlen}")

    def address6_of(self, address: str) -> Optional[str]:
        """The dynamic IPv6 address that goes with IPv4 ``address`` (None without IPv6)."""
        if self.subnet6 is None:
            return None
        base = (self.ip_range6 or self.subnet6).network_address
        return str(base + (int(ipaddress.IPv4Address(address)) - int(self.subnet.network_address)))

    def _unusable(self) -> Set[ipaddress.IPv4Address]:
        return {self.gateway, self.subnet.network_address, self.subnet.broadcast_address, *self.reserved}

    def dynamic(self) -> Iterator[ipaddress.IPv4Address]:
        """The addresses a lease without a wanted one may get, in order."""
        unusable = self._unusable()  # (the range lies in the subnet: checked where the network is made)
        return (a for a in self.ip_range or self.subnet if a not in unusable)

    def fixed(self, wanted: str) -> ipaddress.IPv4Address:
        """``wanted`` if it is a host address of the subnet that is neither the gateway nor reserved."""
        address = ipaddress.IPv4Address(wanted)
        if address not in self.subnet or address in self._unusable():
            raise ConfigError("address", f"{wanted} is not a free host address of {self.subnet}")
        return address

    def fixed6(self, wanted6: str) -> str:
        if self.subnet6 is None:
            raise ConfigError("address6", f"{wanted6}: the network has no IPv6 subnet")
        address = ipaddress.IPv6Address(wanted6)
        if address not in self.subnet6 or address in (self.gateway6, self.subnet6.network_address):
            raise ConfigError("address6", f"{wanted6} is not a free host address of {self.subnet6}")
        return str(address)

    def to_json(self) -> Dict[str, object]:
        return {k: _text(v) for k, v in attrs.asdict(self, recurse=False).items()}

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> Pool:
        four, six = ipaddress.IPv4Network, ipaddress.IPv6Network
        optional = {"ip_range": four, "subnet6": six, "gateway6": ipaddress.IPv6Address, "ip_range6": six}
        values = {k: kind(data[k]) for k, kind in optional.items() if data.get(k) is not None}  # type: ignore[operator]
        return cls(
            subnet=four(data["subnet"]),
            gateway=ipaddress.IPv4Address(data["gateway"]),
            reserved=frozenset(ipaddress.IPv4Address(a) for a in data.get("reserved") or ()),  # type: ignore[union-attr]
            **values,
        )


def _text(value: object) -> object:
    if isinstance(value, frozenset):
        return sorted(str(v) for v in value)
    return None if value is None else str(value)


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
    """One address, held until :meth:`release` (or the holder's death)."""

    def __init__(
        self, path: str, fd: int, address: ipaddress.IPv4Address, address6: Optional[str] = None, fd6: int = -1
    ) -> None:
        """``fd6``: the lock of a fixed IPv6 address's file (-1: none)."""
        self.path, self._fd, self.address, self.address6, self._fd6 = path, fd, address, address6, fd6

    def release(self) -> None:
        """Empty the record and unlock: the file stays, a free slot that the
        next allocation takes over (measured: 45 us against 200 us for a
        file created and unlinked per lease on ext4)."""
        if self._fd6 >= 0:
            os.close(self._fd6)
            self._fd6 = -1
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = -1


def _lock(path: str) -> Optional[int]:
    """The lease file at ``path`` locked by us (its record untouched), or None while another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # unlinked meanwhile (reaped, or the network removed): retry
            os.close(fd)
            return _lock(path)
    except FileNotFoundError:
        os.close(fd)
        return _lock(path)
    return fd


def _write(fd: int, record: bytes) -> int:
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    return fd


def lease_address(
    directory: str,
    pool: Pool,
    owner: dict,
    wanted: Optional[str] = None,
    wanted6: Optional[str] = None,
) -> Lease:
    """The first free address of ``pool`` (see :meth:`Pool.dynamic`), or
    ``wanted`` (ConfigError if it is not a free host address of the subnet);
    on a network with IPv6, the record names the IPv6 address that goes with
    it (``address6``: the other networks' resolvers answer it from the
    record): ``wanted6``, else the one at the IPv4 address's offset.  No two
    live leases share an IPv6 address: a fixed one is also held as the lock
    of ``.6-ADDRESS`` (a dynamic lease skips the IPv4 address whose IPv6 one
    is held so), and is refused while the lease at its offset holds it."""
    fixed6 = pool.fixed6(wanted6) if wanted6 is not None else None
    with dir_lock(directory):
        fd6 = -1
        if fixed6 is not None:
            fd6 = _lock(_path6(directory, fixed6))
            if fd6 is None or _dynamic_holds(directory, pool, fixed6):
                if fd6 is not None:
                    os.close(fd6)
                raise ConfigError("address6", f"{wanted6} is in use on {pool.subnet6}")
        try:
            candidates = iter([pool.fixed(wanted)]) if wanted is not None else pool.dynamic()
            for address in candidates:
                path = os.path.join(directory, str(address))
                fd = _lock(path)
                if fd is None:
                    continue  # (held: the one check of most candidates, as before IPv6 could be fixed)
                address6 = fixed6 or pool.address6_of(str(address))
                if fixed6 is None and address6 is not None and _held6(directory, pool, address6):
                    os.close(fd)  # (its record untouched: a free slot, or a dead owner's for reap)
                    if wanted is not None:
                        raise ConfigError("address", f"{wanted}: its IPv6 address {address6} is in use")
                    continue
                record = json.dumps({**owner, "address6": address6} if address6 else owner).encode()
                lease, fd6 = Lease(path, _write(fd, record), address, address6, fd6), -1
                return lease
        finally:
            if fd6 >= 0:
                os.close(fd6)
    if wanted is not None:
        raise ConfigError("address", f"{wanted} is in use on {pool.subnet}")
    raise ConfigError("network", f"no free address left in {pool.ip_range or pool.subnet}")


def _path6(directory: str, address6: str) -> str:
    return os.path.join(directory, ".6-" + address6)


def _locked(path: str) -> bool:
    """Whether a live holder has ``path`` locked (no file: no)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _held6(directory: str, pool: Pool, address6: str) -> bool:
    """Whether a dynamic lease may not have ``address6``: the gateway's, or a fixed one held."""
    return address6 == str(pool.gateway6) or _locked(_path6(directory, address6))


def _dynamic_holds(directory: str, pool: Pool, address6: str) -> bool:
    """Whether the live lease at ``address6``'s offset has it as its IPv6 address (one stat
    when nobody does: the IPv4 address there has no lease file, or an unlocked one)."""
    assert pool.subnet6 is not None
    offset = int(ipaddress.IPv6Address(address6)) - int((pool.ip_range6 or pool.subnet6).network_address)
    if not 0 <= offset < pool.subnet.num_addresses:
        return False
    path = os.path.join(directory, str(pool.subnet.network_address + offset))
    if not _locked(path):
        return False
    with contextlib.suppress(FileNotFoundError, ValueError), open(path, "rb") as file:
        return json.loads(file.read() or b"{}").get("address6") == address6
    return False


def reap(directory: str) -> List[dict]:
    """Remove the leases of dead owners (nobody holds their lock) and return
    their records, for what they leave elsewhere (nft objects) to be removed."""
    dead = []
    with dir_lock(directory):
        for name in os.listdir(directory):
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            data = os.pread(fd, 65536, 0)
            if not data:  # released: a free slot
                os.close(fd)
                continue
            try:
                record = json.loads(data)
            except ValueError:
                record = None
            os.unlink(path)
            os.close(fd)
            if isinstance(record, dict):
                dead.append({**record, "address": name})
    return dead


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


def mac_of(address: ipaddress.IPv4Address) -> str:
    """Docker's MAC address for a container's interface: ``02:42`` (locally
    administered) and the four bytes of its IPv4 address, unique on its bridge."""
    return ":".join(f"{b:02x}" for b in b"\x02\x42" + address.packed)


class LeasedInterface:
    """What a container's lease on a pool says of its interface: the root
    bridge's attachment and the per-user namespace's (``_lease``, ``_pool``
    and the ``_endpoint`` asked for are theirs)."""

    _lease: Optional[Lease]
    _pool: Optional[Pool]
    _endpoint: Any  # a config.BridgeNetwork

    @property
    def address6(self) -> Optional[ipaddress.IPv6Interface]:
        """Its IPv6 address on a network with an IPv6 subnet (a dynamic one at its IPv4 address's offset)."""
        assert self._lease is not None and self._pool is not None
        found, subnet6 = self._lease.address6, self._pool.subnet6
        return ipaddress.IPv6Interface(f"{found}/{subnet6.prefixlen}") if found and subnet6 else None

    @property
    def gateway6(self) -> Optional[ipaddress.IPv6Address]:
        assert self._pool is not None
        return self._pool.gateway6 if self._pool.subnet6 is not None else None

    @property
    def mac_address(self) -> str:
        """The one asked for, else Docker's ``02:42`` + the IPv4 address."""
        assert self._lease is not None
        return self._endpoint.mac_address or mac_of(self._lease.address)
