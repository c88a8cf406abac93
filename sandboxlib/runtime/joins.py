"""A running ``Container`` on more networks (``docker network connect``):
the methods ``Container`` inherits from ``NetworkJoins``.  As root: the
host process adds a veth on the other bridge to the container's network
namespace (the container itself has no CAP_NET_ADMIN over it); rootless
a tap through the per-user namespace of named networks.  Each join is
released by ``disconnect``, or with the container."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import attrs

from ..config import BridgeNetwork, Network, NetworkRef
from ..errors import ConfigError, ContainerStateError
from ..network import Joined, joined, named
from . import statedir

__all__ = ["NetworkJoins", "Endpoint"]


@attrs.frozen
class Endpoint:
    """A running container on one of its networks (``Container.endpoints``):
    ``address`` ``"172.18.0.2/16"``, the bridge's ``gateway``, IPv6's on a
    network with an IPv6 subnet (else None), its interface's ``mac_address``
    ("" where the kernel chose it: rootless)."""

    address: str
    gateway: str
    address6: Optional[str] = None
    gateway6: Optional[str] = None
    mac_address: str = ""


def _endpoint_of(place: object) -> Optional[Endpoint]:
    """An attachment's or a join's (None while it has no address: pasta's, a closed one)."""
    address = getattr(place, "address", None)
    if address is None:
        return None
    address6, gateway6 = getattr(place, "address6", None), getattr(place, "gateway6", None)
    return Endpoint(
        address=str(address),
        gateway=str(place.gateway),  # type: ignore[attr-defined]
        address6=str(address6) if address6 else None,
        gateway6=str(gateway6) if address6 and gateway6 else None,
        mac_address=getattr(place, "mac_address", ""),
    )


def _ref(network: Union[str, NetworkRef]) -> Union[Network, NetworkRef]:
    if isinstance(network, NetworkRef):
        return network
    if network == "bridge":
        return Network.BRIDGE
    return NetworkRef(network)


def _label(network: Union[Network, NetworkRef]) -> str:
    return network.name if isinstance(network, NetworkRef) else "bridge"


def _own_label(network: object) -> Optional[str]:
    """The label of the network a container started on (None: not a bridge)."""
    if isinstance(network, BridgeNetwork):
        return network.network.name if network.network is not None else "bridge"
    if isinstance(network, NetworkRef):
        return network.name
    return "bridge" if network is Network.BRIDGE else None


class NetworkJoins:
    """connect, disconnect and joined_networks (they need the running container's
    init pid, id, config, lock and resources)."""

    def connect(
        self,
        network: Union[str, NetworkRef],
        *,
        aliases: Sequence[str] = (),
        address: Optional[str] = None,
        address6: Optional[str] = None,
        mac_address: Optional[str] = None,
        link_local: Sequence[str] = (),
        links: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Put the running container on one more network (``"bridge"`` or a named
        one): an interface ``ethN`` with an address there (and an IPv6 one on a
        network with an IPv6 subnet; no default route: the network it started
        on keeps it, and a container of ``Network.NONE`` has none); the network's containers find it by
        its name, hostname and ``aliases``, and it finds theirs (a rootless
        container on ``"bridge"``, pasta's, asks pasta's resolver: it finds
        none).  ``address``/``address6``: its IPv4/IPv6 address on a named
        network (Docker's ``--ip``/``--ip6``), instead of the first free one;
        ``mac_address`` and ``link_local`` as ``Network.bridge``'s.
        ``links``: ``{ALIAS: NAME}``, other containers of the network it
        alone finds by another name too (as ``Network.bridge(links=)``).
        Returns its address (``"172.18.0.3/16"``)."""
        self._check_running()
        wanted = _ref(network)
        label = _label(wanted)
        if self.config.network is Network.HOST:  # (Network.NONE's namespace takes one: its only way out)
            raise ConfigError("network", f"a container with network={self.config.network} cannot join {label!r}")
        if not all(isinstance(a, str) and a for a in aliases):
            raise ConfigError("aliases", f"{aliases!r}: names expected")
        endpoint = BridgeNetwork(
            network=wanted if isinstance(wanted, NetworkRef) else None,
            address=address,
            address6=address6,
            mac_address=mac_address,
            link_local=link_local,
            links=links or (),
        )
        root = statedir.state_root()
        where = named.bridge_of(root, wanted)  # an unknown name: ConfigError
        with self._lock:
            joins = self._joins()
            on_bridge = _own_label(self.config.network) is not None  # (Network.NONE's "bridge" is no bridge of its)
            own = on_bridge and not self._own_network_left and where[0] == named.bridge_of(root, self.config.network)[0]
            if label in joins or own:
                raise ContainerStateError(f"the container is on network {label!r} already")
            owner = {"id": self.id, "hostname": self.hostname, "name": self.config.name}
            if endpoint.links:  # (membership.lookup's)
                owner["links"] = dict(endpoint.links)
            join = joined(root, where, owner, aliases, endpoint)
            join.open(self._init_pid)
            joins[label] = join
            return str(join.address)

    def disconnect(self, network: Union[str, NetworkRef]) -> None:
        """Take the running container off a network :meth:`connect` put it on, or
        off the one it started on (as root; its name no longer resolves there,
        its default route goes: it reaches the networks it joined only); its
        interface deleted, its address released."""
        self._check_owner()  # (a forked child shares the joins' objects: closing them is the owner's)
        wanted = _ref(network)
        label = _label(wanted)
        with self._lock:  # (closed under it: a connect meanwhile would meet its veth's name still taken)
            join = (getattr(self, "_joined", None) or {}).pop(label, None)
            if join is None and not self._own_network_left and label == _own_label(self.config.network):
                self._leave_own_network()  # (as root on a bridge; UnsupportedError else)
                return
            if join is not None:
                join.close()
                return
        raise ContainerStateError(
            f"the container is not connected to network {label!r} (only networks joined by connect() can be left)"
        )

    @property
    def joined_networks(self) -> Dict[str, str]:
        """The networks :meth:`connect` added: ``{name: address}``."""
        with self._lock:
            joins = getattr(self, "_joined", None) or {}
            return {name: str(j.address) for name, j in joins.items() if j.address is not None}

    @property
    def endpoints(self) -> Dict[str, Endpoint]:
        """While it runs, the container on each bridge network it is on: the one it started
        on (unless it left it) and those :meth:`connect` added, by name (``"bridge"``
        for the default one)."""
        with self._lock:
            found = {}
            own = _own_label(self.config.network)
            if own is not None and self.address is not None:
                found[own] = _endpoint_of(self._network)
            for name, join in (getattr(self, "_joined", None) or {}).items():
                found[name] = _endpoint_of(join)
            return {name: point for name, point in found.items() if point is not None}

    def _joins(self) -> Dict[str, Joined]:
        """The joins, their release registered with the container's (under ``self._lock``)."""
        joins = getattr(self, "_joined", None)
        if joins is None:
            if self._closing:
                raise ContainerStateError("the container is closing")
            joins = self._joined = {}
            self._resources.callback(self._leave_all)
        return joins

    def _leave_all(self) -> None:
        joins = getattr(self, "_joined", None) or {}
        while joins:
            joins.popitem()[1].close()
