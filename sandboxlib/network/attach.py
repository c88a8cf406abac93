"""A container's place on a bridge network, from before its spawn to its close.

``prepare`` (before anything of the container exists) binds the published
ports (a port in use is a ConfigError), makes the bridge if it is missing,
leases an address and writes ``resolv.conf`` and ``hosts``, which the
container gets as read-only binds.  ``connect`` (between clone and go, with
the container's new network namespace) adds the veth pair and configures
``eth0``, then starts the resolver and the port proxy.  ``close`` releases
all of it; the veth goes with the container's namespace, the resolver and
proxy threads with the host process, a dead owner's lease is taken over by
the next allocation and its files directory swept here (so a SIGKILL leaves
nothing that lasts)."""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import json
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from ..config import BridgeNetwork, ContainerConfig, EgressRule, Mount
from ..errors import SandboxError, SetupError, UnsupportedError
from . import bridge, ipam, membership, names, nftables
from .files import LeaseFiles, lease_dir, network_dir, records_dir
from .pasta import PastaAttachment, find_pasta
from .portproxy import PortProxy, bind_ports
from .slirp import SlirpAttachment, find_slirp
from .usernet import UserBridgeAttachment

__all__ = [
    "Attachment",
    "attachment",
    "DEFAULT_BRIDGE",
    "egress_gate",
    "ensure_bridge",
    "Place",
    "forget_bridge",
    "lease_dir",
    "network_dir",
]

DEFAULT_BRIDGE = "sbx0"
# a container's network: (bridge, its addresses); None: the default network's
# (its subnet chosen at first use; no IPv6, as Docker's)
Place = Tuple[str, Optional[ipam.Pool]]


@functools.lru_cache(maxsize=1)
def _missing_modules() -> Tuple[str, ...]:
    """The libraries of the extra that are not installed (once: each search stats sys.path)."""
    return tuple(name for name in ("pyroute2", "dnslib") if importlib.util.find_spec(name) is None)


def _enable_forwarding(ipv6: bool) -> None:
    """Routing between the bridge and the host's other interfaces (as Docker does)."""
    paths = ["/proc/sys/net/ipv4/ip_forward"] + (["/proc/sys/net/ipv6/conf/all/forwarding"] if ipv6 else [])
    for path in paths:
        with open(path, "r+") as file:
            if file.read().strip() != "1":
                file.seek(0)
                file.write("1")


def _known_path(state_root: str, bridge_name: str) -> str:
    return os.path.join(network_dir(state_root), f"{bridge_name}.gateway")


def _recorded(state_root: str, bridge_name: str) -> Optional[Tuple[str, ipaddress.IPv4Interface]]:
    """(index, gateway) recorded when the bridge was made."""
    try:
        with open(_known_path(state_root, bridge_name), encoding="ascii") as file:
            recorded, gateway = file.read().split()
        return recorded, ipaddress.IPv4Interface(gateway)
    except (OSError, ValueError):
        return None


def recorded_gateway(state_root: str, bridge_name: str) -> Optional[ipaddress.IPv4Interface]:
    """The gateway the bridge was last made with (rootless: in the user's network namespace)."""
    found = _recorded(state_root, bridge_name)
    return found[1] if found else None


def _known_gateway(state_root: str, bridge_name: str) -> Optional[ipaddress.IPv4Interface]:
    """The gateway recorded when the bridge was made, while the bridge is the one
    made then (same index): no netlink on a start's path."""
    index = bridge.host_index(bridge_name)
    found = _recorded(state_root, bridge_name)
    return found[1] if found and index is not None and str(index) == found[0] else None


def _pool_of(gateway: ipaddress.IPv4Interface, pool: Optional[ipam.Pool]) -> ipam.Pool:
    """A named network's pool, or the default network's: its bridge's subnet."""
    return pool if pool is not None else ipam.Pool(gateway.network, gateway.ip)


def forget_bridge(state_root: str, bridge_name: str) -> None:
    """After the bridge's removal."""
    try:
        os.unlink(_known_path(state_root, bridge_name))
    except FileNotFoundError:
        pass


def ensure_bridge(state_root: str, bridge_name: str, pool: Optional[ipam.Pool] = None) -> ipam.Pool:
    """The bridge's addresses; the bridge and its rules are made when
    missing (the bridge last: its existence says the rules are there), as
    ``pool`` says or, without, on the first free default subnet."""
    known = _known_gateway(state_root, bridge_name)
    if known is not None:
        return _pool_of(known, pool)
    with ipam.dir_lock(network_dir(state_root)), bridge.host_netlink() as ipr:
        gateway = bridge.bridge_subnet(ipr, bridge_name)
        if gateway is None:
            if pool is None:
                subnet = bridge.default_subnet(ipr, [])
                gateway = ipaddress.IPv4Interface(f"{next(subnet.hosts())}/{subnet.prefixlen}")
            else:
                gateway = pool.gateway_interface
            made = _pool_of(gateway, pool)
            _enable_forwarding(made.subnet6 is not None)
            internal = _internal(state_root, bridge_name)
            nftables.add_bridge_rules(bridge_name, made.subnet, made.subnet6, internal=internal)
            bridge.delete_link(ipr, bridge_name)  # one without its address: a crash between the two
            bridge.create_bridge(ipr, bridge_name, gateway, made.gateway6_interface)
        path = _known_path(state_root, bridge_name)
        with open(path + ".tmp", "w", encoding="ascii") as file:
            file.write(f"{bridge.host_index(bridge_name)} {gateway}\n")
        os.rename(path + ".tmp", path)
        return _pool_of(gateway, pool)


def _internal(state_root: str, bridge_name: str) -> bool:
    """A named network's record (named.py's) says its bridge is internal."""
    try:
        entries = [e for e in os.listdir(records_dir(state_root)) if e.endswith(".json")]
    except FileNotFoundError:
        return False
    for entry in entries:
        try:
            with open(os.path.join(records_dir(state_root), entry), encoding="utf-8") as file:
                record = json.load(file)
        except (OSError, ValueError):
            continue  # (one being written or removed)
        if record.get("bridge") == bridge_name:
            return bool(record.get("internal"))
    return False


def egress_gate(state_root: str, bridge_name: str, client: str, name: str) -> Any:
    """The allow-list of the container at ``client`` for ``name`` (see resolver.Gate)."""
    record = next((r for r in ipam.leases(lease_dir(state_root, bridge_name)) if r["address"] == client), None)
    if not record or not record.get("egress"):
        return None
    matching = [r for r in (EgressRule(*rule) for rule in record["egress"]) if r.matches(name)]
    if not matching:
        return False
    container_id = record["id"]
    return lambda answers: nftables.allow_resolved(bridge_name, container_id, answers, matching)


class Attachment(ipam.LeasedInterface):
    """A container on a bridge; see the module's docstring for the order."""

    # A one-shot run needs no state record: after a SIGKILL of its owner the
    # veth goes with the init's namespace, the lease and the files are
    # flock-held (the next start reaps them), the threads die with the owner.
    NEEDS_RECORD = False

    def __init__(
        self,
        config: ContainerConfig,
        container_id: str,
        hostname: str,
        state_root: str,
        network: Place = (DEFAULT_BRIDGE, None),
    ) -> None:
        self._config, self._id, self._hostname = config, container_id, hostname
        self._state_root = state_root
        self._bridge, self._pool = network
        self._sockets: List[socket.socket] = []
        self._lease: Optional[ipam.Lease] = None
        self._files: Optional[LeaseFiles] = None
        self._resolver: Optional[Any] = None  # a resolver.Resolver (dnslib is imported when one starts)
        self._proxy: Optional[PortProxy] = None
        self._upstreams: List[str] = []
        network_value = config.network
        self._endpoint = network_value if isinstance(network_value, BridgeNetwork) else BridgeNetwork()
        self._egress = self._endpoint.egress
        self._egress_added = False

    # -- before the spawn ---------------------------------------------------------------
    def prepare(self) -> None:
        """Ports, bridge, lease, files; :meth:`close` undoes what was done."""
        missing = _missing_modules()
        if missing:
            raise UnsupportedError(
                f"network='bridge' ({', '.join(missing)} missing)", "pip install 'sandboxlib[network]'"
            )
        self._sockets = bind_ports(self._config.ports)
        self._pool = ensure_bridge(self._state_root, self._bridge, self._pool)
        owner = membership.lease_record(self._id, self._hostname, self._config)
        leases = lease_dir(self._state_root, self._bridge)
        for dead in ipam.reap(leases):  # dead owners' leases, and their egress objects
            if dead.get("egress") and dead.get("id"):
                nftables.remove_egress(self._bridge, dead["id"], dead["address"], dead.get("address6"))
        wanted, wanted6 = self._endpoint.address, self._endpoint.address6
        self._lease = ipam.lease_address(leases, self._pool, owner, wanted, wanted6)
        self._write_files()

    @property
    def _gateway(self) -> ipaddress.IPv4Interface:
        assert self._pool is not None
        return self._pool.gateway_interface

    @property
    def address(self) -> ipaddress.IPv4Interface:
        assert self._lease is not None and self._pool is not None
        return ipaddress.IPv4Interface(f"{self._lease.address}/{self._pool.subnet.prefixlen}")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self._gateway.ip

    def _write_files(self) -> None:
        assert self._lease is not None
        self._upstreams, files = names.bridge_files(
            str(self._gateway.ip),
            str(self.address.ip),
            self._lease.address6,
            self._hostname,
            self._config.name,
            self._config.extra_hosts,
        )
        # named by the lease: the next container on that address binds the same
        # paths, so its mount layout and plan come from their caches (~0.3 ms)
        self._files = LeaseFiles(self._state_root, self._bridge, self._lease.address, files)

    def mounts(self) -> Tuple[Mount, ...]:
        """The binds of ``/etc/resolv.conf`` and ``/etc/hosts`` (read-only)."""
        assert self._files is not None
        return self._files.mounts()

    # -- between clone and go -----------------------------------------------------------
    def connect(self, netns_fd: int, init_pid: int) -> None:
        """Veth, ``eth0``, default route, resolver and port proxy."""
        from .resolver import Resolver

        try:
            index = bridge.link_index(self._bridge)  # (one lookup: an ioctl on a socket of its own)
            address6 = self.address6
            ipv6 = (address6, self.gateway6) if address6 else None
            bridge.connect_veth(
                self._veth,
                index,
                netns_fd,
                self.address,
                self._gateway.ip,
                ipv6=ipv6,
                mac=self.mac_address,
                link_local=self._endpoint.link_local,
            )
            if self._egress:
                self._egress_added = True  # (partly made objects are removed too)
                where6 = str(address6.ip) if address6 else None
                nftables.add_egress(self._bridge, self._id, str(self.address.ip), self._egress, where6)
            self._resolver = Resolver.on_bridge(self._gateway, index, self._upstreams, self._lookup, self._gate)
        except SandboxError:
            raise
        except Exception as err:  # netlink's errors are not OSErrors
            code = getattr(err, "code", None) or getattr(err, "errno", None) or 0
            raise SetupError(code, f"connecting the container to bridge {self._bridge}", step="NETWORK") from err
        if self._sockets:
            self._proxy = PortProxy(self._sockets, self._config.ports, str(self.address.ip))
            self._sockets = []

    @property
    def ports(self) -> Dict[str, Tuple[str, int]]:
        return self._proxy.published if self._proxy is not None else {}

    def _lookup(self, client: str, name: str) -> List[str]:
        """The addresses of ``name`` (a container's name, hostname or alias) on the asker's networks."""
        return membership.lookup(self._state_root, self._bridge, client, name)

    def _gate(self, client: str, name: str) -> Any:
        return egress_gate(self._state_root, self._bridge, client, name)

    @property
    def _veth(self) -> str:
        return f"vsbx{self._id[:10]}"

    def leave(self) -> None:
        """Off the bridge while the container runs (Docker's disconnect of the
        network it started on): its veth deleted (``eth0`` with it), then as :meth:`close`."""
        with bridge.host_netlink() as ipr:
            bridge.delete_link(ipr, self._veth)
        self.close()

    # -- close --------------------------------------------------------------------------
    def close(self) -> None:
        for part in (self._proxy, self._resolver):
            if part is not None:
                part.close()
        self._proxy = self._resolver = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        if self._egress_added and self._lease is not None:
            nftables.remove_egress(self._bridge, self._id, self._lease.address, self._lease.address6)
            self._egress_added = False
        if self._files is not None:  # (before the lease: the directory is named by it)
            self._files.close()
            self._files = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None


def attachment(
    config: ContainerConfig,
    container_id: str,
    hostname: str,
    state_root: str,
    network: Place,
) -> Any:
    """As root, an :class:`Attachment` to the bridge; rootless, pasta's (the
    default network) or the per-user namespace's (a named network, or the
    default one's ``sbx0`` there for an egress allow-list or links: their
    resolver is ours)."""
    if os.geteuid() == 0:
        return Attachment(config, container_id, hostname, state_root, network)
    bridged = config.network if isinstance(config.network, BridgeNetwork) else None
    if network[0] != DEFAULT_BRIDGE or (bridged is not None and (bridged.egress or bridged.links)):
        return UserBridgeAttachment(config, container_id, hostname, state_root, network)
    if any(":" in m.host_ip for m in config.ports):
        raise UnsupportedError(
            "ports published on IPv6 addresses through pasta or slirp4netns", "use a named network for them"
        )
    if isinstance(config.network, BridgeNetwork) and (config.network.mac_address or config.network.link_local):
        raise UnsupportedError("mac_address= or link_local= through pasta or slirp4netns", "use a named network")
    return _user_mode()(config, container_id, hostname, state_root)


def _user_mode() -> Any:
    """pasta, else slirp4netns; ``SANDBOXLIB_ROOTLESS_NETWORK`` chooses (as containers.conf's option)."""
    chosen = os.environ.get("SANDBOXLIB_ROOTLESS_NETWORK", "")
    if chosen not in ("", "pasta", "slirp4netns"):
        raise UnsupportedError(f"SANDBOXLIB_ROOTLESS_NETWORK={chosen!r}", "use pasta or slirp4netns")
    if chosen == "slirp4netns" or (not chosen and find_pasta() is None and find_slirp() is not None):
        return SlirpAttachment
    return PastaAttachment
