"""``sandboxlib network create|ls|rm|inspect``: named networks on the command line."""

from __future__ import annotations

import argparse
import json
from typing import Callable, Dict, List

from ..errors import ConfigError
from ..runtime import Network

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(sub) -> None:
    p = sub.add_parser("network", help="manage named networks (containers on one reach each other by name)")
    actions = p.add_subparsers(dest="network_action", required=True, metavar="create|ls|rm|inspect")
    create = actions.add_parser("create", help="make a named network (rootless: in your network namespace)")
    create.add_argument("name")
    create.add_argument(
        "--subnet",
        action="append",
        default=[],
        help="its IPv4 subnet (default: the first free of 172.17-31.0.0/16, ...); again with an IPv6 one for IPv6",
    )
    create.add_argument("--ipv6", action="store_true", help="IPv6 too (without an IPv6 --subnet: a /64 of fd00::/8)")
    create.add_argument(
        "--gateway",
        action="append",
        default=[],
        help="the bridge's address in its subnet (default: the first); per family",
    )
    create.add_argument(
        "--ip-range",
        action="append",
        default=[],
        help="the part of the subnet containers' addresses come from (default: all of it); per family",
    )
    create.add_argument(
        "--aux-address", action="append", default=[], metavar="NAME=IP", help="an IPv4 address never given out"
    )
    actions.add_parser("ls", help="list the named networks")
    rm = actions.add_parser("rm", help="remove named networks (none may have containers attached)")
    rm.add_argument("names", nargs="+", metavar="NAME")
    inspect = actions.add_parser("inspect", help="a network's subnet, bridge and containers, as JSON")
    inspect.add_argument("names", nargs="+", metavar="NAME")


def _by_family(values: List[str], field: str) -> Dict[bool, str]:
    """{IPv6?: value}: at most one of each family (as Docker's, with one subnet of each)."""
    found = {":" in value: value for value in values}
    if len(found) < len(values):
        raise ConfigError(field, f"at most one IPv4 and one IPv6 value, got {values}")
    return found


def _create(args: argparse.Namespace) -> str:
    subnets = _by_family(args.subnet, "subnet")
    gateways, ranges = _by_family(args.gateway, "gateway"), _by_family(args.ip_range, "ip_range")
    aux = {}
    for item in args.aux_address:
        name, equals, address = item.partition("=")
        if not equals:
            raise ConfigError("aux_addresses", f"expected NAME=IP, got {item!r}")
        aux[name] = address
    return Network.create(
        args.name,
        subnet=subnets.get(False),
        subnet6=subnets.get(True),
        ipv6=args.ipv6,
        gateway=gateways.get(False),
        ip_range=ranges.get(False),
        aux_addresses=aux,
        gateway6=gateways.get(True),
        ip_range6=ranges.get(True),
    ).name


def _network(args: argparse.Namespace) -> int:
    action = args.network_action
    if action == "create":
        print(_create(args))
    elif action == "ls":
        print(f"{'NAME':<24} {'SUBNET':<18} {'BRIDGE':<12} SUBNET6")
        for net in Network.list():
            print(f"{net.name:<24} {net.subnet:<18} {net.bridge:<12} {net.subnet6 or ''}")
    elif action == "rm":
        for name in args.names:
            Network.get(name).remove()
            print(name)
    else:
        print(json.dumps([Network.get(name).inspect() for name in args.names], indent=2))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"network": _network}
