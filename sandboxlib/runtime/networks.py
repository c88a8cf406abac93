"""``sandboxlib.Network``: the network modes and the named networks
(``Network.create``, ``list``, ``get``; a :class:`NamedNetwork`'s ``remove``)."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

import attrs

from ..config import BridgeNetwork, NetworkAddresses, NetworkRef
from ..config import Network as Mode
from ..network import named
from . import statedir

__all__ = ["Network", "NamedNetwork"]


@attrs.frozen
class NamedNetwork(NetworkRef):
    """A named network, as ``network=`` of containers: they reach each other
    by name, and not the containers of other networks."""

    subnet: str = ""
    bridge: str = ""
    subnet6: Optional[str] = None  # its IPv6 subnet (None: IPv4 only)
    gateway: str = ""  # the bridge's address
    ip_range: Optional[str] = None  # containers' addresses come from here (None: the whole subnet)
    aux_addresses: Dict[str, str] = attrs.field(factory=dict, hash=False)  # never given out (a dict: not hashed)
    gateway6: Optional[str] = None
    ip_range6: Optional[str] = None

    def remove(self) -> None:
        """Remove the network (its bridge and rules); ContainerStateError while containers are on it."""
        named.remove(statedir.state_root(), self.name)

    def containers(self) -> List[dict]:
        """The containers on it now: ``{"id", "name", "hostname", "address"}`` each."""
        return named.attached(statedir.state_root(), named.get(statedir.state_root(), self.name))

    def inspect(self) -> dict:
        return {**attrs.asdict(self), "containers": self.containers()}


def _public(record: named.NetworkRecord) -> NamedNetwork:
    pool = named.pool_of(record)
    return NamedNetwork(
        name=record.name,
        subnet=record.subnet,
        bridge=record.bridge,
        subnet6=record.subnet6,
        gateway=str(pool.gateway),
        ip_range=record.ip_range,
        aux_addresses=dict(record.aux_addresses),
        gateway6=str(pool.gateway6) if pool.gateway6 else None,
        ip_range6=record.ip_range6,
    )


class Network:
    """``network=`` of ``run()`` and ``Container()``: ``Network.NONE`` (only
    ``lo``), ``Network.HOST``, ``Network.BRIDGE`` (the default bridge), or a
    named network from :meth:`create`."""

    NONE = Mode.NONE
    HOST = Mode.HOST
    BRIDGE = Mode.BRIDGE

    def __new__(cls, value: str) -> Mode:  # type: ignore[misc]
        """``Network("host")`` is ``Network.HOST``, as when this was the enum of the modes."""
        return Mode(value)

    @staticmethod
    def create(
        name: str,
        *,
        subnet: Optional[str] = None,
        subnet6: Optional[str] = None,
        ipv6: bool = False,
        internal: bool = False,
        gateway: Optional[str] = None,
        ip_range: Optional[str] = None,
        aux_addresses: Optional[Mapping[str, str]] = None,
        gateway6: Optional[str] = None,
        ip_range6: Optional[str] = None,
    ) -> NamedNetwork:
        """Make a named network, kept until removed: a bridge of its own on
        ``subnet`` (default: the first free of Docker's pool); rootless, in
        the user's network namespace (as Podman's).

        IPv6 (Docker's ``--ipv6 --subnet fd00:...::/64``): ``subnet6``
        (``"fd00:89::/64"``), or ``ipv6=True`` for a unique local /64 of
        ``fd00::/8`` chosen from the name.  Containers get an address there
        too (at their IPv4 address's offset), a default route, NAT66 to the
        outside, AAAA answers for their names; ports can be published on
        IPv6 addresses (``"[::1]:8080"``) and allow-lists take IPv6
        networks (``"[2001:db8::/32]:443"``).

        ``internal=True`` (Docker's ``--internal``): nothing is forwarded
        from the bridge or to it (no NAT): its containers reach each other
        and the bridge's gateway address only.

        Docker's IPAM options (each needs its ``subnet``/``subnet6``):
        ``gateway`` the bridge's address (default: the subnet's first host),
        ``ip_range`` a part of the subnet that containers' addresses come
        from unless one is asked for (``address=`` may be anywhere in the
        subnet), ``aux_addresses`` (``{"router": "10.89.0.5"}``) addresses
        never given out; ``gateway6`` and ``ip_range6`` IPv6's (a container's
        IPv6 address is at its IPv4 address's offset in ``ip_range6``)."""
        addresses = NetworkAddresses(
            gateway=gateway, ip_range=ip_range, aux_addresses=aux_addresses, gateway6=gateway6, ip_range6=ip_range6
        )
        if ipv6 and subnet6 is None:
            subnet6 = named.default_subnet6(name)
        statedir.ensure_root(statedir.state_root())
        record = named.create(statedir.state_root(), name, subnet, subnet6, internal=internal, addresses=addresses)
        return _public(record)

    @staticmethod
    def bridge(
        *,
        egress: Sequence[str] = (),
        network: Union[None, str, NetworkRef] = None,
        address: Optional[str] = None,
        address6: Optional[str] = None,
        mac_address: Optional[str] = None,
        link_local: Sequence[str] = (),
        links: Optional[Mapping[str, str]] = None,
    ) -> BridgeNetwork:
        """The default bridge (or the named ``network``'s) with an egress allow-list: CIDRs, addresses, host
        names and ``*.domain`` wildcards, each with an optional ``:PORT[/udp]``
        (``["10.1.2.0/24", "pypi.org", "*.pythonhosted.org:443"]``).  Names are
        allowed through the network's resolver: the addresses it answers for
        an allowed name are allowed for their TTL; anything else is refused at
        once (TCP reset, ICMP), DNS to other servers and unlisted names too
        (rootless: on the bridge of the user's network namespace).

        ``address``/``address6``: the container's IPv4/IPv6 address on the named ``network``
        (Docker's ``--ip``/``--ip6``), instead of the first free one;
        ``mac_address``: its ``eth0``'s (Docker's ``--mac-address``; default
        ``02:42`` and its IPv4 address's four bytes, as Docker's);
        ``link_local``: more addresses on ``eth0`` from ``169.254.0.0/16`` or
        ``fe80::/10`` (Docker's ``--link-local-ip``).  Rootless, a MAC or
        link-local address needs a named ``network`` (pasta's default has no
        interface of ours: UnsupportedError).

        ``links``: ``{ALIAS: NAME}``, names of other containers of the network
        that this container alone finds by another name too (Docker's
        ``--link NAME:ALIAS`` on a user-defined network): its resolver answers
        ALIAS with NAME's addresses, whenever a container of that name is on
        the network (rootless too, on the per-user namespace's bridges).  NAME
        is what the network knows a container by, as dockerd resolves a link:
        a container name (``name=``: ``db..x`` too, though no host name), a
        hostname or an alias; ALIAS is a host name."""
        return BridgeNetwork(
            egress=egress,
            network=network,
            address=address,
            address6=address6,
            mac_address=mac_address,
            link_local=link_local,
            links=links or (),
        )

    @staticmethod
    def get(name: str) -> NamedNetwork:
        return _public(named.get(statedir.state_root(), name))

    @staticmethod
    def list() -> List[NamedNetwork]:
        return [_public(r) for r in named.records(statedir.state_root())]
