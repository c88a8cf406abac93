"""A running container joins one more bridge network (``docker network
connect``) and leaves it again.

The host process holds what the container cannot: it opens the container's
network namespace (``/proc/PID/ns/net``), leases an address on the bridge,
adds a veth pair whose peer is the first free ``ethN`` in there (its
address, and its IPv6 one on a network with an IPv6 subnet; no default
route, of either family: the network the container started on keeps them)
and, on :meth:`Joined.close`, deletes the host end (the peer goes with it)
and releases the lease.  Nothing outlives the container: its veth ends go
with its namespace, the lease is held by this process (a SIGKILL's is
reaped by the bridge's next start).  Rootless (:class:`UserJoined`), the
bridge is in the per-user namespace (``usernet``): a tap is made inside the
container, the holder puts its own on the bridge and copies frames until
our connection to it ends (close, or our death).  Its names (name, hostname, aliases)
and links are in the lease, which the network's resolvers read: the other
containers find it there, and it finds theirs (``membership.lookup``)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from typing import Optional, Sequence

from ..config import BridgeNetwork
from ..errors import SandboxError, SetupError
from . import bridge, ipam, usernet
from .attach import Place, ensure_bridge
from .files import lease_dir

__all__ = ["Joined", "UserJoined", "joined"]


def host_veth_name(container_id: str, bridge_name: str) -> str:
    """``vj`` + 12 hex digits of (container, bridge): unique per pair, within 15 bytes."""
    return "vj" + hashlib.sha256(f"{container_id} {bridge_name}".encode()).hexdigest()[:12]


class Joined:
    """The container ``container_id`` on the bridge ``bridge_name`` (of ``subnet``), from :meth:`open` to close."""

    def __init__(
        self,
        state_root: str,
        network: Place,
        owner: dict,
        aliases: Sequence[str] = (),
        endpoint: Optional[BridgeNetwork] = None,
    ) -> None:
        """``network``: (bridge, its pool or None), an ``attach.Place``;
        ``owner``: the lease's record ({"id", "name", "hostname"}); ``endpoint``:
        the addresses wanted (else the first free ones), the MAC address, link-local addresses."""
        self._endpoint = endpoint or BridgeNetwork()
        self._state_root = state_root
        self._bridge, self._pool = network
        self._owner = {**owner, "aliases": list(aliases), "joined": True}
        self._lease: Optional[ipam.Lease] = None
        self._veth = host_veth_name(owner["id"], self._bridge)
        self.address: Optional[ipaddress.IPv4Interface] = None
        self.address6: Optional[ipaddress.IPv6Interface] = None  # on a network with an IPv6 subnet
        self.gateway: Optional[ipaddress.IPv4Address] = None  # the bridge's
        self.gateway6: Optional[ipaddress.IPv6Address] = None
        self.mac_address = ""
        self.interface = ""

    def _lease_addresses(self, pool: ipam.Pool) -> None:
        """A lease on the bridge (dead owners' reaped first: a joined one has no
        egress objects), its IPv4 address and, with an IPv6 subnet, its IPv6 one."""
        leases = lease_dir(self._state_root, self._bridge)
        ipam.reap(leases)
        wanted, wanted6 = self._endpoint.address, self._endpoint.address6
        self._lease = ipam.lease_address(leases, pool, self._owner, wanted, wanted6)
        self.address = ipaddress.IPv4Interface(f"{self._lease.address}/{pool.subnet.prefixlen}")
        self.gateway = pool.gateway
        self.mac_address = self._endpoint.mac_address or ipam.mac_of(self._lease.address)
        if pool.subnet6 is not None and self._lease.address6:
            self.address6 = ipaddress.IPv6Interface(f"{self._lease.address6}/{pool.subnet6.prefixlen}")
            self.gateway6 = pool.gateway6

    def open(self, init_pid: int) -> None:
        """Lease, veth, address; everything undone by :meth:`close` on a failure."""
        netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._lease_addresses(ensure_bridge(self._state_root, self._bridge, self._pool))
            assert self.address is not None
            self.interface = bridge.free_ifname(netns)
            ipv6 = (self.address6, None) if self.address6 is not None else None  # (no default route either)
            index = bridge.link_index(self._bridge)
            bridge.connect_veth(
                self._veth,
                index,
                netns,
                self.address,
                None,
                ifname=self.interface,
                ipv6=ipv6,
                mac=self.mac_address,
                link_local=self._endpoint.link_local,
            )
        except BaseException as err:
            self.close()
            if isinstance(err, SandboxError) or not isinstance(err, Exception):
                raise
            code = getattr(err, "code", None) or getattr(err, "errno", None) or 0
            raise SetupError(code, f"connecting the container to bridge {self._bridge}", step="NETWORK") from err
        finally:
            os.close(netns)

    def close(self) -> None:
        """The veth deleted (its peer with it), the lease released; idempotent."""
        if bridge.host_index(self._veth) is not None:
            with bridge.host_netlink() as ipr:
                bridge.delete_link(ipr, self._veth)
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        self.address = self.address6 = None
        self.gateway = self.gateway6 = None


class UserJoined(Joined):
    """Rootless: the container's tap ``ethN``, the holder's on the bridge of the per-user namespace."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._link: Optional[socket.socket] = None
        self._hold: Optional[socket.socket] = None

    def open(self, init_pid: int) -> None:
        try:
            gateway, self._hold = usernet.make_bridge(self._state_root, self._bridge, self._pool, hold=True)
            self._lease_addresses(self._pool or ipam.Pool(gateway.network, gateway.ip))
            assert self.address is not None
            ipv6 = (self.address6, "") if self.address6 is not None else None
            netns = f"/proc/{init_pid}/ns/net"
            tap, self.interface = usernet.tap_inside(
                init_pid,
                netns,
                self.address,
                "",
                "",
                (),
                ipv6,
                mac=self.mac_address,
                link_local=self._endpoint.link_local,
            )
            request = {"bridge": self._bridge, "id": self._owner["id"], "address": str(self.address.ip)}
            self._link = usernet.attach_tap(self._state_root, tap, {**request, "tap": self._veth})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._link is not None:  # (both taps go: the container's ethN with it)
            usernet.detach_tap(self._link)
            self._link = None
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        self.address = self.address6 = None
        self.gateway = self.gateway6 = None


def joined(
    state_root: str,
    network: Place,
    owner: dict,
    aliases: Sequence[str] = (),
    endpoint: Optional[BridgeNetwork] = None,
) -> Joined:
    """As root a veth (:class:`Joined`), rootless a tap through the per-user namespace (:class:`UserJoined`)."""
    kind = Joined if os.geteuid() == 0 else UserJoined
    return kind(state_root, network, owner, aliases, endpoint)
