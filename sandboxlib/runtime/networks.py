"""``sandboxlib.Network``: the network modes and the named networks
(``Network.create``, ``list``, ``get``; a :class:`NamedNetwork`'s ``remove``)."""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Union

import attrs

from ..config import BridgeNetwork, NetworkRef
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

    def remove(self) -> None:
        """Remove the network (its bridge and rules); ContainerStateError while containers are on it."""
        named.remove(statedir.state_root(), self.name)

    def containers(self) -> List[dict]:
        """The containers on it now: ``{"id", "name", "hostname", "address"}`` each."""
        return named.attached(statedir.state_root(), named.get(statedir.state_root(), self.name))

    def inspect(self) -> dict:
        return {**attrs.asdict(self), "containers": self.containers()}


def _public(record: named.NetworkRecord) -> NamedNetwork:
    return NamedNetwork(name=record.name, subnet=record.subnet, bridge=record.bridge, subnet6=record.subnet6)


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
        and the bridge's gateway address only."""
        if ipv6 and subnet6 is None:
            subnet6 = named.default_subnet6(name)
        statedir.ensure_root(statedir.state_root())
        return _public(named.create(statedir.state_root(), name, subnet, subnet6, internal=internal))

    @staticmethod
    def bridge(
        *,
        egress: Sequence[str] = (),
        network: Union[None, str, NetworkRef] = None,
        address: Optional[str] = None,
        links: Optional[Mapping[str, str]] = None,
    ) -> BridgeNetwork:
        """The default bridge (or the named ``network``'s) with an egress allow-list: CIDRs, addresses, host
        names and ``*.domain`` wildcards, each with an optional ``:PORT[/udp]``
        (``["10.1.2.0/24", "pypi.org", "*.pythonhosted.org:443"]``).  Names are
        allowed through the network's resolver: the addresses it answers for
        an allowed name are allowed for their TTL; anything else is refused at
        once (TCP reset, ICMP), DNS to other servers and unlisted names too
        (rootless: on the bridge of the user's network namespace).

        ``address``: the container's IPv4 address on the named ``network``
        (Docker's ``--ip``; as root), instead of the first free one.

        ``links``: ``{ALIAS: NAME}``, names of other containers of the network
        that this container alone finds by another name too (Docker's
        ``--link NAME:ALIAS`` on a user-defined network): its resolver answers
        ALIAS with NAME's addresses, whenever a container of that name is on
        the network (rootless too, on the per-user namespace's bridges)."""
        return BridgeNetwork(egress=egress, network=network, address=address, links=links)

    @staticmethod
    def get(name: str) -> NamedNetwork:
        return _public(named.get(statedir.state_root(), name))

    @staticmethod
    def list() -> List[NamedNetwork]:
        return [_public(r) for r in named.records(statedir.state_root())]
