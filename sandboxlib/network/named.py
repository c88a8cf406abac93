"""Named networks (``Network.create``): a record per network in the state
directory, ``<state>/net/networks/NAME.json`` ({name, subnet, bridge,
subnet6: None without IPv6, and the IPAM's gateway, ip_range,
aux_addresses, gateway6, ip_range6: None for the defaults}),
written and removed under the network lock, with the network's bridge and
nft table.  The default network, ``"bridge"``, has no record: its bridge
``sbx0`` gets its subnet at first use."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import time
from typing import Dict, List, Optional, Union

import attrs

from ..config import BridgeNetwork, Network, NetworkAddresses, NetworkRef
from ..errors import ConfigError, ContainerStateError
from . import bridge, ipam, nftables, usernet
from .attach import DEFAULT_BRIDGE, Place, ensure_bridge, forget_bridge, lease_dir, network_dir, recorded_gateway
from .files import LeaseFiles, records_dir

__all__ = [
    "NetworkRecord",
    "default_subnet6",
    "create",
    "get",
    "records",
    "remove",
    "attached",
    "bridge_of",
    "pool_of",
]


@attrs.frozen
class NetworkRecord:
    name: str
    subnet: str
    bridge: str
    created: float = 0.0
    subnet6: Optional[str] = None
    internal: bool = False  # no way out (attach.ensure_bridge reads it where it makes the bridge)
    gateway: Optional[str] = None  # (None: the subnet's first host)
    ip_range: Optional[str] = None
    aux_addresses: Dict[str, str] = attrs.field(factory=dict, hash=False)
    gateway6: Optional[str] = None
    ip_range6: Optional[str] = None


def pool_of(record: NetworkRecord) -> ipam.Pool:
    """What the network's containers are given addresses from."""
    pool = ipam.Pool(
        subnet=ipaddress.IPv4Network(record.subnet),
        reserved=frozenset(ipaddress.IPv4Address(a) for a in record.aux_addresses.values()),
        subnet6=ipaddress.IPv6Network(record.subnet6) if record.subnet6 else None,
        ip_range=ipaddress.IPv4Network(record.ip_range) if record.ip_range else None,
        ip_range6=ipaddress.IPv6Network(record.ip_range6) if record.ip_range6 else None,
    )
    if record.gateway:
        pool = attrs.evolve(pool, gateway=ipaddress.IPv4Address(record.gateway))
    return attrs.evolve(pool, gateway6=ipaddress.IPv6Address(record.gateway6)) if record.gateway6 else pool


def _bridge_name(name: str) -> str:
    """``sbx`` + 8 hex digits of the name's hash: within the 15 bytes of an interface name."""
    return nftables.BRIDGE_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:8]


def default_subnet6(name: str) -> str:
    """A unique local /64 for network ``name`` (RFC 4193's ``fd`` + 40 bits, from the name's hash)."""
    digest = hashlib.sha256(b"sandboxlib-ipv6:" + name.encode()).digest()
    return str(ipaddress.IPv6Network((b"\xfd" + digest[:5] + b"\0" * 10, 64)))


def records(state_root: str) -> List[NetworkRecord]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(records_dir(state_root))):
            if entry.endswith(".json"):
                with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
                    with open(os.path.join(records_dir(state_root), entry), encoding="utf-8") as file:
                        found.append(NetworkRecord(**json.load(file)))
    return found


def get(state_root: str, name: str) -> NetworkRecord:
    for record in records(state_root):
        if record.name == name:
            return record
    known = [r.name for r in records(state_root)]
    raise ConfigError("network", f"no network named {name!r} (networks: {known or 'none'}; Network.create makes one)")


def _check_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        subnet = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise ConfigError("subnet", f"{text!r} is not an IPv4 network ({err})") from None
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 29:
        raise ConfigError("subnet", f"{text!r}: an IPv4 network of at least 8 addresses is needed (/29 or wider)")
    return subnet


def _check_subnet6(text: str) -> ipaddress.IPv6Network:
    try:
        subnet = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise ConfigError("subnet6", f"{text!r} is not an IPv6 network ({err})") from None
    if not isinstance(subnet, ipaddress.IPv6Network):
        raise ConfigError("subnet6", f"{text!r} is not an IPv6 network")
    return subnet


def _checked_ipv6(
    ipr, subnet6: ipaddress.IPv6Network, subnet: ipaddress.IPv4Network, existing: List[NetworkRecord]
) -> None:
    """ConfigError unless ``subnet6`` holds every address of ``subnet`` (a
    container's IPv6 address is at its IPv4 one's offset) and overlaps no
    other network's nor a route of the host."""
    if subnet6.num_addresses < subnet.num_addresses:
        wide = 128 - (32 - subnet.prefixlen)
        raise ConfigError("subnet6", f"{subnet6} is smaller than {subnet} (/{wide} or wider is needed; /64 is usual)")
    used = [ipaddress.IPv6Network(r.subnet6) for r in existing if r.subnet6] + bridge.routed_networks6(ipr)
    clash = next((n for n in used if subnet6.overlaps(n)), None)
    if clash is not None:
        raise ConfigError("subnet6", f"{subnet6} overlaps {clash}, which is in use on this host")


def create(
    state_root: str,
    name: str,
    subnet: Optional[str] = None,
    subnet6: Optional[str] = None,
    *,
    internal: bool = False,
    addresses: Optional[NetworkAddresses] = None,
) -> NetworkRecord:
    """Record the network and make its bridge; ConfigError for a name in use
    or a subnet that overlaps another network's or a route of the host.
    ``subnet6``: IPv6 too; ``internal``: nothing forwarded from or to the bridge
    (its containers reach each other only; no NAT); ``addresses``: the
    gateways, IP ranges and reserved addresses (checked against the subnets)."""
    name = NetworkRef(name).name
    wanted = _check_subnet(subnet) if subnet is not None else None
    wanted6 = _check_subnet6(subnet6) if subnet6 is not None else None
    addresses = addresses or NetworkAddresses()
    addresses.check(wanted, wanted6)
    with ipam.dir_lock(network_dir(state_root)):
        existing = records(state_root)
        if any(r.name == name for r in existing):
            raise ConfigError("name", f"a network named {name!r} exists already")
        taken = [ipaddress.IPv4Network(r.subnet) for r in existing]
        with bridge.host_netlink() as ipr:
            if os.geteuid() == 0:
                default = bridge.bridge_subnet(ipr, DEFAULT_BRIDGE)
            else:  # the user's sbx0 (of rootless allow-lists), in the user's namespace
                default = recorded_gateway(state_root, DEFAULT_BRIDGE)
                taken += [default.network] if default else []
            if wanted is None:
                wanted = bridge.default_subnet(ipr, taken)
            else:
                used = taken + bridge.routed_networks(ipr) + ([default.network] if default else [])
                clash = next((n for n in used if n.prefixlen and wanted.overlaps(n)), None)
                if clash is not None:
                    raise ConfigError("subnet", f"{wanted} overlaps {clash}, which is in use on this host")
            if wanted6 is not None:
                _checked_ipv6(ipr, wanted6, wanted, existing)
            addresses.check(wanted, wanted6)  # (ip_range6 against a subnet chosen here)
        record = NetworkRecord(
            name=name,
            subnet=str(wanted),
            bridge=_bridge_name(name),
            created=time.time(),
            subnet6=str(wanted6) if wanted6 else None,
            internal=internal,
            gateway=addresses.gateway,
            ip_range=addresses.ip_range,
            aux_addresses=dict(addresses.aux_addresses),
            gateway6=addresses.gateway6,
            ip_range6=addresses.ip_range6,
        )
        os.makedirs(records_dir(state_root), mode=0o700, exist_ok=True)
        path = os.path.join(records_dir(state_root), f"{name}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as file:
            json.dump(attrs.asdict(record), file)
        os.rename(path + ".tmp", path)
    try:
        if os.geteuid() == 0:
            ensure_bridge(state_root, record.bridge, pool_of(record))
        else:  # in the per-user network namespace
            usernet.make_bridge(state_root, record.bridge, pool_of(record))  # (the record keeps it)
    except BaseException:
        os.unlink(path)
        raise
    return record


def attached(state_root: str, record: NetworkRecord) -> List[dict]:
    """The containers on the network now (their live leases)."""
    return list(ipam.leases(lease_dir(state_root, record.bridge)))


def remove(state_root: str, name: str) -> None:
    """Remove the network: its bridge, its nft table, its record.  An error
    while containers are attached."""
    with ipam.dir_lock(network_dir(state_root)):
        record = get(state_root, name)
        users = attached(state_root, record)
        if users:
            names = [u.get("name") or u.get("hostname") for u in users]
            raise ContainerStateError(f"network {name!r} has containers attached: {names}")
        if os.geteuid() == 0:
            with bridge.host_netlink() as ipr:
                bridge.delete_link(ipr, record.bridge)
            forget_bridge(state_root, record.bridge)
            nftables.remove_bridge_rules(record.bridge)
            os.unlink(os.path.join(records_dir(state_root), f"{name}.json"))
        else:  # (unrecorded first: the holder ends after the last one's bridge, if unused)
            os.unlink(os.path.join(records_dir(state_root), f"{name}.json"))
            usernet.remove_bridge(state_root, record.bridge)
        shutil.rmtree(lease_dir(state_root, record.bridge), ignore_errors=True)  # dead owners' leases, its lock
        LeaseFiles.remove_all(state_root, record.bridge)


def bridge_of(state_root: str, network: Union[Network, NetworkRef, BridgeNetwork]) -> Place:
    """(bridge, its pool) of a container's network (pool None: the default's,
    its subnet chosen at first use; the default has no IPv6, as Docker's)."""
    if isinstance(network, BridgeNetwork) and network.network is not None:
        network = network.network  # (an allow-list on a named network)
    if isinstance(network, NetworkRef):
        record = get(state_root, network.name)
        return record.bridge, pool_of(record)
    return DEFAULT_BRIDGE, None
