"""A bridge's nftables rules, through ``nft -j`` (libnftables' JSON):
one table per bridge, made with the bridge and removed with it.

- ``postrouting``: masquerade what the bridge's subnet sends elsewhere (NAT egress);
- ``forward``: nothing crosses from this bridge to another of ours (networks
  are isolated), and the rest is left to the host's own rules;
- an internal network's table: no masquerade, nothing forwarded from or to it.

A bridge with an IPv6 subnet gets the same table in the ``ip6`` family too
(NAT66 masquerade, the isolation, the egress verdict map by IPv6 source);
an allow-listed container's chain and sets exist in both, each holding its
family's networks and resolved addresses."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import List, Optional, Sequence, Tuple, Union

from ..config import EgressRule
from ..errors import SetupError, UnsupportedError

__all__ = ["BRIDGE_PREFIX", "table_name", "add_bridge_rules", "remove_bridge_rules", "tables"]

BRIDGE_PREFIX = "sbx"  # every bridge of ours is named so: the isolation rule needs no list of them
FAMILY = "ip"
FAMILIES = ("ip", "ip6")
_KINDS = {  # family -> (payload protocol, address type, reject of the isolation, reject of an allow-list)
    "ip": ("ip", "ipv4_addr", {"type": "icmp", "expr": "net-prohibited"}, "icmp type admin-prohibited"),
    "ip6": ("ip6", "ipv6_addr", {"type": "icmpv6", "expr": "admin-prohibited"}, "icmpv6 type admin-prohibited"),
}


def table_name(bridge: str) -> str:
    return f"sandboxlib-{bridge}"


def _nft(commands: List[dict], what: str) -> str:
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise UnsupportedError("nftables' `nft` (bridge networks)", "apt-get install nftables")
    done = subprocess.run(
        [nft, "-j", "-f", "-"], input=json.dumps({"nftables": commands}), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SetupError(0, f"nft: {what}", step="NETWORK", hint=done.stderr.strip())
    return done.stdout


def _chain(family: str, table: str, name: str, hook: str, kind: str, priority: int) -> dict:
    return {
        "chain": {
            "family": family,
            "table": table,
            "name": name,
            "type": kind,
            "hook": hook,
            "prio": priority,
            "policy": "accept",
        }
    }


def _rule(family: str, table: str, chain: str, *expr: dict) -> dict:
    return {"rule": {"family": family, "table": table, "chain": chain, "expr": list(expr)}}


def _match(key: dict, op: str, right) -> dict:
    return {"match": {"op": op, "left": key, "right": right}}


def _family(network: Union[ipaddress.IPv4Network, ipaddress.IPv6Network]) -> str:
    return "ip6" if network.version == 6 else "ip"


def _table_commands(
    bridge: str, subnet: Union[ipaddress.IPv4Network, ipaddress.IPv6Network], internal: bool = False
) -> List[dict]:
    family = _family(subnet)
    protocol, address_type, isolation, _ = _KINDS[family]
    table = table_name(bridge)
    source = {"payload": {"protocol": protocol, "field": "saddr"}}
    prefix = {"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}
    iif, oif = {"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}}
    egress_map = {"family": family, "table": table, "name": "egress", "type": address_type, "map": "verdict"}
    if internal:  # Docker's --internal: nothing forwarded from the bridge or to it, so no masquerade either
        closed = [
            _rule(
                family, table, "forward", _match(iif, "==", bridge), _match(oif, "!=", bridge), {"reject": isolation}
            ),
            _rule(family, table, "forward", _match(oif, "==", bridge), _match(iif, "!=", bridge), {"drop": None}),
        ]
        return [
            {"add": {"table": {"family": family, "name": table}}},
            {"delete": {"table": {"family": family, "name": table}}},
            {"add": {"table": {"family": family, "name": table}}},
            {"add": _chain(family, table, "forward", "forward", "filter", 0)},
            {"add": {"map": egress_map}},  # (an allow-list's chain jumps from it: nothing passes either way)
            *({"add": rule} for rule in closed),
        ]
    return [
        {"add": {"table": {"family": family, "name": table}}},
        {"delete": {"table": {"family": family, "name": table}}},
        {"add": {"table": {"family": family, "name": table}}},
        {"add": _chain(family, table, "postrouting", "postrouting", "nat", 100)},
        {"add": _chain(family, table, "forward", "forward", "filter", 0)},
        {"add": {"map": egress_map}},
        {
            "add": _rule(
                family,
                table,
                "postrouting",
                _match(source, "==", prefix),
                _match(oif, "!=", bridge),
                {"masquerade": None},
            )
        },
        {  # a container with an allow-list: its own chain (see add_egress)
            "add": _rule(
                family,
                table,
                "forward",
                _match(iif, "==", bridge),
                _match(oif, "!=", bridge),
                {"vmap": {"key": source, "data": "@egress"}},
            )
        },
        {
            "add": _rule(
                family,
                table,
                "forward",
                _match(iif, "==", bridge),
                _match(oif, "!=", bridge),
                _match(oif, "==", f"{BRIDGE_PREFIX}*"),
                {"reject": isolation},
            )
        },
    ]


def add_bridge_rules(
    bridge: str,
    subnet: ipaddress.IPv4Network,
    subnet6: Optional[ipaddress.IPv6Network] = None,
    *,
    internal: bool = False,
) -> None:
    """The table of ``bridge`` (replaced if it exists); ``subnet6``: the ip6 one
    too; ``internal``: its containers reach each other and the host's gateway address only."""
    commands = _table_commands(bridge, subnet, internal)
    commands += _table_commands(bridge, subnet6, internal) if subnet6 else []
    _nft(commands, f"the rules of bridge {bridge}")


def _nft_script(script: str, what: str, check: bool = True) -> bool:
    """A batch in nft's own syntax (the per-container egress objects: sets of
    concatenations read better so than in JSON).  All or nothing."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise UnsupportedError("nftables' `nft` (bridge networks)", "apt-get install nftables")
    done = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if done.returncode != 0 and check:
        raise SetupError(0, f"nft: {what}", step="NETWORK", hint=done.stderr.strip())
    return done.returncode == 0


def _egress_names(container_id: str) -> Tuple[str, ...]:
    short = container_id[:12]
    return tuple(f"{kind}_{short}" for kind in ("net", "netp", "dyn", "dynp", "egress"))


def add_egress(
    bridge: str, container_id: str, address: str, rules: Sequence[EgressRule], address6: Optional[str] = None
) -> None:
    """The allow-list of the container at ``address`` (and ``address6``, on a
    network with IPv6): its networks in static sets, the addresses its
    allowed names resolve to added later (:func:`allow_resolved`) with their
    TTL; anything else it sends out of the bridge is refused at once (TCP
    reset, ICMP admin-prohibited)."""
    lines = _egress_lines("ip", bridge, container_id, address, rules)
    if address6 is not None:
        lines += _egress_lines("ip6", bridge, container_id, address6, rules)
    _nft_script("\n".join(lines) + "\n", f"the egress rules of container {container_id[:12]}")


def _egress_lines(family: str, bridge: str, container_id: str, address: str, rules: Sequence[EgressRule]) -> List[str]:
    protocol, address_type, _, reject = _KINDS[family]
    t = f"{family} {table_name(bridge)}"
    net, netp, dyn, dynp, chain = _egress_names(container_id)
    pairs = f"{address_type} . inet_proto . inet_service"
    mine = [r for r in rules if r.kind == "net" and _family(ipaddress.ip_network(r.value)) == family]
    plain = [r.value for r in mine if r.port is None]
    ported = [f"{r.value} . {p} . {r.port}" for r in mine if r.port for p in r.protocols()]
    lines = [
        f"add set {t} {net} {{ type {address_type}; flags interval; }}",
        f"add set {t} {netp} {{ type {pairs}; flags interval; }}",
        f"add set {t} {dyn} {{ type {address_type}; flags timeout; }}",
        f"add set {t} {dynp} {{ type {pairs}; flags timeout; }}",
        f"add chain {t} {chain}",
        f"add rule {t} {chain} {protocol} daddr @{net} return",
        f"add rule {t} {chain} {protocol} daddr @{dyn} return",
        f"add rule {t} {chain} {protocol} daddr . meta l4proto . th dport @{netp} return",
        f"add rule {t} {chain} {protocol} daddr . meta l4proto . th dport @{dynp} return",
        f"add rule {t} {chain} meta l4proto tcp reject with tcp reset",
        f"add rule {t} {chain} reject with {reject}",
        f"add element {t} egress {{ {address} : jump {chain} }}",
    ]
    if plain:
        lines.append(f"add element {t} {net} {{ {', '.join(plain)} }}")
    if ported:
        lines.append(f"add element {t} {netp} {{ {', '.join(ported)} }}")
    return lines


def allow_resolved(
    bridge: str, container_id: str, answers: Sequence[Tuple[str, int]], rules: Sequence[EgressRule]
) -> None:
    """Allow the addresses an allowed name resolved to, for their TTL (seconds),
    on the ports of the rules that allowed the name (all ports when one has
    none); IPv6 ones in the ip6 table (where a container without IPv6 has no
    sets: they are dropped with the batch of that family)."""
    _, _, dyn, dynp, _ = _egress_names(container_id)
    for family in FAMILIES:
        t = f"{family} {table_name(bridge)}"
        elements, ported = [], []
        for address, ttl in answers:
            if (":" in address) != (family == "ip6"):
                continue
            timeout = f"timeout {max(int(ttl), 5)}s"
            if any(r.port is None for r in rules):
                elements.append(f"{address} {timeout}")
            ported += [f"{address} . {p} . {r.port} {timeout}" for r in rules if r.port for p in r.protocols()]
        lines = [f"add element {t} {dyn} {{ {', '.join(elements)} }}"] if elements else []
        lines += [f"add element {t} {dynp} {{ {', '.join(ported)} }}"] if ported else []
        if lines:
            _nft_script("\n".join(lines) + "\n", "allowing resolved addresses", check=False)


def remove_egress(bridge: str, container_id: str, address: str, address6: Optional[str] = None) -> None:
    """The container's egress objects, if any (after a SIGKILL: some may be left)."""
    net, netp, dyn, dynp, chain = _egress_names(container_id)
    for family, where in (("ip", address), ("ip6", address6)):
        if where is None:
            continue
        t = f"{family} {table_name(bridge)}"
        _nft_script(f"delete element {t} egress {{ {where} }}\n", "", check=False)
        lines = [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
        lines += [f"delete set {t} {name}" for name in (net, netp, dyn, dynp)]
        _nft_script("\n".join(lines) + "\n", "", check=False)


def remove_bridge_rules(bridge: str) -> None:
    """Its tables, of both families."""
    commands = []
    for family in FAMILIES:
        table = {"family": family, "name": table_name(bridge)}
        commands += [{"add": {"table": table}}, {"delete": {"table": table}}]
    _nft(commands, f"removing the rules of bridge {bridge}")


def tables() -> List[str]:
    """The names of our tables, ip6 ones as ``ip6 NAME`` (tests: nothing is left behind)."""
    found = []
    for family in FAMILIES:
        listed = json.loads(_nft([{"list": {"tables": {"family": family}}}], "listing tables") or "{}")
        found += [
            item["table"]["name"] if family == FAMILY else f"{family} {item['table']['name']}"
            for item in listed.get("nftables", [])
            if "table" in item and item["table"]["name"].startswith("sandboxlib-")
        ]
    return found
