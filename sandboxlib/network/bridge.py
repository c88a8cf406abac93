"""A bridge on the host (netlink through pyroute2) and a veth pair per container (rtnl.py's requests)."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

from ..errors import SetupError
from . import rtnl
from .netns import socket_in

__all__ = [
    "host_netlink",
    "link_index",
    "host_index",
    "bridge_subnet",
    "routed_networks",
    "routed_networks6",
    "default_subnet",
    "bridge_mac",
    "create_bridge",
    "delete_link",
    "connect_veth",
    "free_ifname",
]

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CONTAINER_IFNAME = "eth0"
NETLINK_ROUTE = 0


class _OnItsThread:
    """An IPRoute made and used on a thread of its own, each call waited for:
    pyroute2's sync API runs its requests on an event loop of the calling
    thread, which cannot be done on the thread of a running one (the aio
    API's starts: ``This event loop is already running``)."""

    def __init__(self, options: dict) -> None:
        import concurrent.futures

        from pyroute2 import IPRoute

        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sandboxlib-netlink")
        try:
            self._ipr = self._worker.submit(IPRoute, **options).result()
        except BaseException:
            self._worker.shutdown()
            raise

    def __getattr__(self, name: str):
        method = getattr(self._ipr, name)
        return lambda *args, **kwargs: self._worker.submit(method, *args, **kwargs).result()

    def close(self) -> None:
        try:
            self._worker.submit(self._ipr.close).result()
        finally:
            self._worker.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _iproute(**options) -> IPRoute:
    from pyroute2 import IPRoute  # (imported by the first bridge container: ~0.1 s)

    asyncio = sys.modules.get("asyncio")  # (not imported: no loop runs)
    if asyncio is None or asyncio.events._get_running_loop() is None:
        return IPRoute(**options)
    return _OnItsThread(options)  # type: ignore[return-value]


def host_netlink() -> IPRoute:
    return _iproute()


def link_index(name: str) -> int:
    return socket.if_nametoindex(name)


def host_index(name: str) -> Optional[int]:
    """The index of a link of the host process's namespace (an ioctl), or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def bridge_subnet(ipr: IPRoute, bridge: str) -> Optional[ipaddress.IPv4Interface]:
    """The bridge's address with its prefix (the gateway of its subnet), or None without the bridge."""
    index = host_index(bridge)
    if index is None:
        return None
    for addr in ipr.get_addr(index=index, family=socket.AF_INET):
        return ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    return None


def routed_networks(ipr: IPRoute) -> List[ipaddress.IPv4Network]:
    """What the host already reaches directly or through a route (not its default route)."""
    networks = []
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        dst = route.get_attr("RTA_DST")
        if dst and route["dst_len"]:
            networks.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
    for addr in ipr.get_addr(family=socket.AF_INET):
        networks.append(ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").network)
    return networks


def routed_networks6(ipr: IPRoute) -> List[ipaddress.IPv6Network]:
    """IPv6's: what the host reaches directly or through a route (not its default route)."""
    networks = []
    for route in ipr.get_routes(family=socket.AF_INET6, table=254):
        dst = route.get_attr("RTA_DST")
        if dst and route["dst_len"] and not dst.startswith("fe80:"):
            networks.append(ipaddress.IPv6Network(f"{dst}/{route['dst_len']}", strict=False))
    return networks


def _candidates() -> Iterator[ipaddress.IPv4Network]:
    """Docker's pool order: 172.17-31.0.0/16, then 192.168.N.0/20."""
    for second in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{second}.0.0/16")
    for third in range(0, 256, 16):
        yield ipaddress.IPv4Network(f"192.168.{third}.0/20")


def default_subnet(ipr: IPRoute, taken: List[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first candidate that overlaps nothing routed on the host nor ``taken``."""
    used = routed_networks(ipr) + list(taken)
    for candidate in _candidates():
        if not any(candidate.overlaps(n) for n in used if n.prefixlen > 0):
            return candidate
    raise SetupError(0, "choosing a bridge subnet", step="NETWORK", hint="every default subnet is routed already")


def bridge_mac(bridge: str) -> str:
    """A fixed MAC address for the bridge (locally administered, from its name),
    as Docker's bridge driver sets one.  A bridge without one takes its ports'
    lowest, which changes as containers join: the others' ARP entry for the
    gateway goes stale and what they send it (DNS queries to its resolver) is
    lost until they ask again (a name lookup just after a start failed after
    20 s, 1 in 5).  Containers' own MACs follow their addresses (02:42 + IPv4),
    so a re-leased address keeps the host's ARP entry true as well."""
    digest = hashlib.sha256(b"sandboxlib bridge " + bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def create_bridge(
    ipr: IPRoute, bridge: str, gateway: ipaddress.IPv4Interface, gateway6: Optional[ipaddress.IPv6Interface] = None
) -> None:
    """The bridge up with its gateway address(es) (the IPv6 one without
    duplicate address detection: the subnet is ours) and a MAC address of its
    own (:func:`bridge_mac`)."""
    ipr.link("add", ifname=bridge, kind="bridge", address=bridge_mac(bridge))
    index = host_index(bridge)
    ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
    if gateway6 is not None:
        ipr.addr(
            "add", index=index, address=str(gateway6.ip), prefixlen=gateway6.network.prefixlen, flags=rtnl.IFA_F_NODAD
        )
    ipr.link("set", index=index, state="up")


def delete_link(ipr: IPRoute, name: str) -> None:
    index = host_index(name)
    if index is not None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            ipr.link("del", index=index)
        except NetlinkError as err:
            if err.code != 19:  # ENODEV: gone meanwhile
                raise


# (address, gateway: None for no IPv6 default route, as a joined network has)
IPv6Pair = Tuple[ipaddress.IPv6Interface, Optional[ipaddress.IPv6Address]]


def connect_veth(
    host_name: str,
    bridge_index: int,
    netns_fd: int,
    address: ipaddress.IPv4Interface,
    gateway: Optional[ipaddress.IPv4Address],
    *,
    ifname: str = CONTAINER_IFNAME,
    ipv6: Optional[IPv6Pair] = None,
    mac: str = "",
    link_local: Sequence[str] = (),
) -> None:
    """A veth pair: ``host_name`` up on the bridge of index ``bridge_index``, its peer ``ifname`` in the
    container's namespace (one request: the kernel applies master and up as it
    creates them; its MAC address ``mac``, else the kernel's), then the peer up, its address and
    (``gateway`` not None) the default route through
    the bridge, IPv6's too with ``ipv6`` (its route too if its gateway is not None), and the
    ``link_local`` addresses (each a host address, as Docker's) (one write on a
    socket of that namespace; the init brings lo up)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as host:
        rtnl.talk(host, [rtnl.veth_request(1, host_name, bridge_index, ifname, netns_fd, mac)])
    with socket_in(netns_fd, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as inside:
        index = rtnl.interface_index(inside, ifname)
        requests = [rtnl.up_request(1, index), rtnl.address_request(2, index, address)]
        if gateway is not None:
            requests.append(rtnl.default_route_request(3, gateway))
        if ipv6 is not None:
            requests.append(rtnl.address_request(4, index, ipv6[0]))
            if ipv6[1] is not None:
                requests.append(rtnl.default_route_request(5, ipv6[1]))
        for sequence, extra in enumerate(link_local, 6):
            requests.append(rtnl.address_request(sequence, index, ipaddress.ip_interface(extra)))
        rtnl.talk(inside, requests)


def free_ifname(netns_fd: int, prefix: str = "eth") -> str:
    """The first ``ethN`` the namespace ``netns_fd`` has no link of."""
    with socket_in(netns_fd, socket.AF_INET, socket.SOCK_DGRAM) as inside:
        for number in range(1, 100):
            try:
                rtnl.interface_index(inside, f"{prefix}{number}")
            except OSError:
                return f"{prefix}{number}"
    raise SetupError(0, "naming the container's interface", step="NETWORK", hint="eth1 to eth99 are all taken")
