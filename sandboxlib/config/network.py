"""Network options: published ports (``ports=``, ``-p``) and container names."""

from __future__ import annotations

import ipaddress
import re
from typing import Mapping, Optional, Tuple, Union

import attrs

from ..errors import ConfigError

__all__ = [
    "extra_hosts_option",
    "is_host_name",
    "links_option",
    "BridgeNetwork",
    "NetworkAddresses",
    "EgressRule",
    "egress_rule",
    "egress_option",
    "PortMapping",
    "NetworkRef",
    "ports_option",
    "parse_publish",
    "container_name",
    "network_name",
]

PROTOCOLS = ("tcp", "udp")
LOOPBACK = "127.0.0.1"  # where a port is published unless an address is given
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # Docker's container names, as DNS labels allow


@attrs.frozen
class PortMapping:
    """``host_ip:host_port`` on the host forwarded to ``port`` in the
    container (``host_port`` 0: one the kernel picks)."""

    host_ip: str
    host_port: int
    port: int
    protocol: str = "tcp"

    @property
    def key(self) -> str:
        """Docker's name of the container side: ``"80/tcp"``."""
        return f"{self.port}/{self.protocol}"


def _number(text: Union[int, str], field: str, low: int) -> int:
    try:
        number = text if isinstance(text, int) and not isinstance(text, bool) else int(str(text), 10)
    except ValueError:
        raise ConfigError(field, f"{text!r} is not a port number") from None
    if not low <= number <= 65535:
        raise ConfigError(field, f"port {number} is outside {low}-65535")
    return number


def _split_protocol(text: str, field: str) -> Tuple[str, Optional[str]]:
    port, slash, protocol = text.rpartition("/") if "/" in text else (text, "", "")
    if slash and protocol not in PROTOCOLS:
        raise ConfigError(field, f"{protocol!r} is not one of {list(PROTOCOLS)}")
    return port, protocol or None


def _host_side(key: Union[int, str], field: str) -> Tuple[str, int, Optional[str]]:
    """``8080``, ``"8080/udp"``, ``"0.0.0.0:8080"`` -> (ip, port, protocol or None)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return LOOPBACK, _number(key, field, 0), None
    if not isinstance(key, str):
        raise ConfigError(field, f"expected a port or '[IP:]PORT[/udp]', got {key!r}")
    text, protocol = _split_protocol(key, field)
    ip, colon, port = text.rpartition(":")
    ip_text = ip if colon else LOOPBACK
    ip = ip_text.strip("[]")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ConfigError(field, f"{ip!r} is not an IP address") from None
    if address.version == 6 and not ip_text.startswith("["):
        raise ConfigError(field, f"{key!r}: an IPv6 address is written in brackets ('[::1]:8080')")
    return str(address), _number(port, field, 0), protocol


def ports_option(value: Union[Mapping, Tuple[PortMapping, ...], None]) -> Tuple[PortMapping, ...]:
    """``{HOST: CONTAINER}``: ``{8080: 80, "5353/udp": 53, "0.0.0.0:8443": "443/tcp"}``."""
    if not value:
        return ()
    if isinstance(value, tuple) and all(isinstance(m, PortMapping) for m in value):
        return value  # already converted (attrs.evolve)
    if not isinstance(value, Mapping):
        raise ConfigError("ports", f"expected a dict {{host port: container port}}, got {type(value).__name__}")
    mappings = []
    for key, target in value.items():
        field = f"ports[{key!r}]"
        host_ip, host_port, protocol = _host_side(key, field)
        port_text, inner = _split_protocol(str(target), field) if isinstance(target, str) else (target, None)
        if protocol and inner and protocol != inner:
            raise ConfigError(field, f"the host side is {protocol}, the container side {inner}")
        mappings.append(PortMapping(host_ip, host_port, _number(port_text, field, 1), protocol or inner or "tcp"))
    seen = set()
    for m in mappings:
        where = (m.host_ip, m.host_port, m.protocol)
        if m.host_port and where in seen:
            raise ConfigError("ports", f"{m.host_ip}:{m.host_port}/{m.protocol} is published twice")
        seen.add(where)
    return tuple(mappings)


def parse_publish(text: str) -> Tuple[str, str]:
    """``-p [IP:]HOSTPORT:PORT[/udp]`` -> the (key, value) of a ``ports`` entry."""
    body, protocol = _split_protocol(text, "publish")
    host, colon, port = body.rpartition(":")
    if not colon or not host:
        raise ConfigError("publish", f"expected [IP:]HOSTPORT:PORT[/udp], got {text!r}")
    suffix = f"/{protocol}" if protocol else ""
    return host + suffix, port + suffix


def container_name(value: Optional[str]) -> Optional[str]:
    """A container's name (``name=``): its DNS name on its network."""
    if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
        raise ConfigError("name", f"{value!r} is not a valid name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 63)")
    return value


RESERVED = ("none", "host", "bridge", "default")
NETWORK_NAME_BYTES = 200  # (its record is the file NAME.json: within a file name's 255 bytes)


def network_name(value: str) -> str:
    """A named network's name: Docker's, any text that is not blank (``"test 01"``),
    but without ``/`` or unprintable characters (it names a file and is part of API
    paths) and none of the built-in modes.  Interfaces and nft tables are named
    from its hash, never from the name itself."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or value in RESERVED
        or value in (".", "..")
        or "/" in value
        or not value.isprintable()
        or len(value.encode()) > NETWORK_NAME_BYTES
    ):
        raise ConfigError(
            "network",
            f"{value!r} is not a valid network name (not blank, no '/' or unprintable characters, "
            f"at most {NETWORK_NAME_BYTES} bytes, not one of {RESERVED})",
        )
    return value


@attrs.frozen
class NetworkRef:
    """A named network (made by ``Network.create``), by its name."""

    name: str = attrs.field(converter=network_name)


_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_-]{1,63}$")


def is_host_name(value: object) -> bool:
    """Whether ``value`` is a name ``/etc/hosts`` and the resolvers take (labels of DNS)."""
    return isinstance(value, str) and _DNS_NAME.match(value) is not None


@attrs.frozen
class EgressRule:
    """One entry of an egress allow-list: a network (``"10.1.2.0/24"``, an
    address), a host name (``"pypi.org"``) or a domain's names
    (``"*.pythonhosted.org"``), with an optional port and protocol (``:443``,
    ``:53/udp``; a port without protocol allows TCP and UDP)."""

    kind: str  # "net", "name" or "wildcard"
    value: str  # a network, or a lower-case name / domain (without "*.")
    port: Optional[int] = None
    protocol: Optional[str] = None

    def matches(self, name: str) -> bool:
        """Whether the host name ``name`` (lower case, no trailing dot) is allowed by this rule."""
        if self.kind == "name":
            return name == self.value
        return self.kind == "wildcard" and name.endswith("." + self.value)

    def protocols(self) -> Tuple[str, ...]:
        return (self.protocol,) if self.protocol else PROTOCOLS


def egress_rule(text: str, field: str = "egress") -> EgressRule:
    """``HOST-OR-NET[:PORT[/tcp|udp]]`` -> an :class:`EgressRule`."""
    if not isinstance(text, str) or not text:
        raise ConfigError(field, f"expected 'CIDR|IP|NAME|*.DOMAIN[:PORT[/udp]]', got {text!r}")
    body, slash, protocol = text.rpartition("/")
    if not slash or not protocol.isalpha():  # no protocol: a CIDR's prefix length (and port), or nothing
        body, protocol = text, ""
    elif protocol not in PROTOCOLS:
        raise ConfigError(field, f"{protocol!r} is not one of {list(PROTOCOLS)}")
    if body.startswith("["):  # an IPv6 address or network with a port: [2001:db8::/32]:443
        host, bracket, rest = body[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(field, f"{text!r}: expected [IPV6-OR-NET]:PORT")
        colon, port_text = rest[:1], rest[1:]
    elif body.count(":") > 1:  # an IPv6 address or network without a port
        host, colon, port_text = body, "", ""
    else:
        host, colon, port_text = body.rpartition(":")
    if not colon:
        if protocol:
            raise ConfigError(field, f"{text!r}: a protocol needs a port (HOST:PORT/{protocol})")
        host, port_text = host or body, ""
    port = _number(port_text, field, 1) if port_text else None
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return EgressRule("net", str(network), port, protocol or None)
    name = host.lower().rstrip(".")
    kind = "wildcard" if name.startswith("*.") else "name"
    domain = name[2:] if kind == "wildcard" else name
    if not _DNS_NAME.match(domain):
        raise ConfigError(field, f"{text!r} is not a network, an address, a host name or *.domain")
    return EgressRule(kind, domain, port, protocol or None)


def egress_option(value) -> Tuple[EgressRule, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError("egress", f"expected a list of rules, got the string {value!r}")
    return tuple(
        rule if isinstance(rule, EgressRule) else egress_rule(rule, f"egress[{i}]") for i, rule in enumerate(value)
    )


@attrs.frozen
class BridgeNetwork:
    """A container's place on a bridge, beyond the network's choices: an
    egress allow-list (``Network.bridge(egress=[...])``):
    everything else the container sends out is refused at once (a TCP reset,
    an ICMP error).  ``network``: a named network's bridge instead of the
    default one (one with IPv6: the list's IPv6 networks apply there).
    ``address``/``address6``: the container's IPv4/IPv6 address on a named
    network (Docker's ``--ip``/``--ip6``), instead of the first free one;
    ``mac_address``: its interface's (Docker's ``--mac-address``; default
    ``02:42`` and its IPv4 address's four bytes); ``link_local``: more
    addresses on its interface, from ``169.254.0.0/16`` or ``fe80::/10``
    (Docker's ``--link-local-ip``).  Rootless a MAC or link-local address
    needs a named network (pasta's ``"bridge"`` has no interface of ours).
    ``links``: names of the network's containers that this one alone finds
    by another name (Docker's ``--link NAME:ALIAS`` on a user-defined network)."""

    egress: Tuple[EgressRule, ...] = attrs.field(default=(), converter=egress_option)
    network: Optional[NetworkRef] = attrs.field(default=None, converter=lambda v: _network_ref(v))
    address: Optional[str] = attrs.field(default=None, converter=lambda v: _fixed_address(v))
    address6: Optional[str] = attrs.field(default=None, converter=lambda v: _fixed_address6(v))
    mac_address: Optional[str] = attrs.field(default=None, converter=lambda v: mac_address_option(v))
    link_local: Tuple[str, ...] = attrs.field(default=(), converter=lambda v: link_local_option(v))
    links: Tuple[Tuple[str, str], ...] = attrs.field(default=(), converter=lambda v: links_option(v))

    def __attrs_post_init__(self) -> None:
        for field in ("address", "address6"):
            if getattr(self, field) is not None and self.network is None:
                raise ConfigError(field, "a fixed address needs a named network (network=)")


def _fixed_address(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        raise ConfigError("address", f"{value!r} is not an IPv4 address") from None


def _fixed_address6(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv6Address(value))
    except (ipaddress.AddressValueError, ValueError):
        raise ConfigError("address6", f"{value!r} is not an IPv6 address") from None


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def mac_address_option(value: Optional[str]) -> Optional[str]:
    """``"02:42:ac:11:00:02"`` (lower case); a unicast address only."""
    if value is None:
        return None
    text = value.lower() if isinstance(value, str) else ""
    if not _MAC.match(text):
        raise ConfigError("mac_address", f"{value!r} is not a MAC address (six hex pairs: 02:42:ac:11:00:02)")
    if int(text[:2], 16) & 1:
        raise ConfigError("mac_address", f"{value!r} is a multicast address")
    return text


_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def link_local_option(value) -> Tuple[str, ...]:
    """Link-local addresses (``["169.254.8.8", "fe80::8"]``), each once."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError("link_local", f"expected a list of addresses, got the string {value!r}")
    found = []
    for index, text in enumerate(value):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(f"link_local[{index}]", f"{text!r} is not an IP address") from None
        if not any(address in network for network in _LINK_LOCAL):
            raise ConfigError(f"link_local[{index}]", f"{text!r} is not link-local (169.254.0.0/16, fe80::/10)")
        found.append(str(address))
    return tuple(dict.fromkeys(found))


def _network_ref(value: Union[None, str, NetworkRef]) -> Optional[NetworkRef]:
    if value is None:
        return None
    if isinstance(value, NetworkRef):
        return NetworkRef(value.name)  # (a NamedNetwork's name alone)
    if isinstance(value, str):
        return NetworkRef(value)
    raise ConfigError("network", f"expected a named network or its name, got {type(value).__name__}")


def links_option(value: Optional[Mapping[str, str]], field: str = "links") -> Tuple[Tuple[str, str], ...]:
    """``{"db": "postgres-1"}`` (alias: a name of another container on the
    network) -> (alias, name) pairs; an alias is a host name, matched as DNS
    matches, in any case; the name is one the network knows a container by,
    as dockerd resolves a link's: its name (``name=``, Docker's container
    names: ``db..x`` is one, though no host name), hostname or an alias."""
    if not value:
        return ()
    if isinstance(value, tuple):
        return value  # already converted (attrs.evolve)
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a dict {{alias: container name}}, got {type(value).__name__}")
    for alias, name in value.items():
        if not isinstance(alias, str) or not _DNS_NAME.match(alias):
            raise ConfigError(f"{field}[{alias!r}]", f"{alias!r} is not a host name")
        if not isinstance(name, str) or not (_NAME.match(name) or _DNS_NAME.match(name)):
            raise ConfigError(f"{field}[{alias!r}]", f"{name!r} is not a container's name or a host name")
    return tuple((alias.lower(), name) for alias, name in value.items())


def extra_hosts_option(value: Optional[Mapping[str, str]]) -> Tuple[Tuple[str, str], ...]:
    """``{"db.local": "10.0.0.5"}`` -> sorted (name, address) pairs for ``/etc/hosts``."""
    if not value:
        return ()
    if isinstance(value, tuple):
        return value  # already converted (attrs.evolve)
    if not isinstance(value, Mapping):
        raise ConfigError("extra_hosts", f"expected a dict {{name: address}}, got {type(value).__name__}")
    pairs = []
    for name, address in value.items():
        field = f"extra_hosts[{name!r}]"
        if not isinstance(name, str) or not _DNS_NAME.match(name):
            raise ConfigError(field, f"{name!r} is not a host name")
        try:
            pairs.append((name, str(ipaddress.ip_address(address))))
        except ValueError:
            raise ConfigError(field, f"{address!r} is not an IP address") from None
    return tuple(sorted(pairs))


def _optional(kind, field: str, what: str):
    """A converter: None, or ``kind(value)`` as text (ConfigError naming ``field`` else)."""

    def convert(value) -> Optional[str]:
        if value is None:
            return None
        try:
            return str(kind(value))
        except (ValueError, TypeError):
            raise ConfigError(field, f"{value!r} is not {what}") from None

    return convert


def _aux_addresses(value) -> Tuple[Tuple[str, str], ...]:
    if not value:
        return ()
    if isinstance(value, tuple):
        return value  # already converted (attrs.evolve)
    if not isinstance(value, Mapping):
        raise ConfigError("aux_addresses", f"expected a dict {{name: address}}, got {type(value).__name__}")
    pairs = []
    for name, address in value.items():
        field = f"aux_addresses[{name!r}]"
        if not isinstance(name, str) or not name:
            raise ConfigError(field, "a name is needed")
        pairs.append((name, _optional(ipaddress.IPv4Address, field, "an IPv4 address")(address) or ""))
    return tuple(sorted(pairs))


@attrs.frozen(kw_only=True)
class NetworkAddresses:
    """A named network's addresses beyond its subnets (``Network.create``'s
    options, Docker's IPAM config): ``gateway`` the bridge's address (default:
    the subnet's first), ``ip_range`` where containers' addresses come from
    unless one is asked for (default: the whole subnet), ``aux_addresses``
    names of addresses never given out; ``gateway6``, ``ip_range6`` IPv6's.
    Each is checked against its subnet by :meth:`check`."""

    gateway: Optional[str] = attrs.field(
        default=None, converter=_optional(ipaddress.IPv4Address, "gateway", "an IPv4 address")
    )
    ip_range: Optional[str] = attrs.field(
        default=None, converter=_optional(ipaddress.IPv4Network, "ip_range", "an IPv4 network")
    )
    aux_addresses: Tuple[Tuple[str, str], ...] = attrs.field(default=(), converter=_aux_addresses)
    gateway6: Optional[str] = attrs.field(
        default=None, converter=_optional(ipaddress.IPv6Address, "gateway6", "an IPv6 address")
    )
    ip_range6: Optional[str] = attrs.field(
        default=None, converter=_optional(ipaddress.IPv6Network, "ip_range6", "an IPv6 network")
    )

    def check(self, subnet: Optional[ipaddress.IPv4Network], subnet6: Optional[ipaddress.IPv6Network]) -> None:
        """ConfigError naming the field unless each lies in its subnet (the
        gateway and the reserved addresses host addresses, apart)."""
        for field, value, network in (("gateway", self.gateway, subnet), ("ip_range", self.ip_range, subnet)):
            _within(field, value, network, "subnet")
        for field, value, network in (("gateway6", self.gateway6, subnet6), ("ip_range6", self.ip_range6, subnet6)):
            _within(field, value, network, "subnet6")
        for name, address in self.aux_addresses:
            _within(f"aux_addresses[{name!r}]", address, subnet, "subnet")
            if address == self.gateway:
                raise ConfigError(f"aux_addresses[{name!r}]", f"{address} is the gateway")
        if self.ip_range6 is not None and subnet is not None:
            if ipaddress.IPv6Network(self.ip_range6).num_addresses < subnet.num_addresses:
                raise ConfigError(
                    "ip_range6",
                    f"{self.ip_range6} is smaller than {subnet} (IPv6 addresses are at the IPv4 offsets)",
                )


def _within(field: str, value: Optional[str], network, subnet_field: str) -> None:
    if value is None:
        return
    if network is None:
        raise ConfigError(field, f"{value}: needs {subnet_field}= (the network it lies in)")
    if "/" in value:
        if not ipaddress.ip_network(value).subnet_of(network):
            raise ConfigError(field, f"{value} is not within {network}")
        return
    address = ipaddress.ip_address(value)
    if (
        address not in network
        or address == network.network_address
        or (network.version == 4 and address == network.broadcast_address)
    ):
        raise ConfigError(field, f"{value} is not a host address of {network}")
