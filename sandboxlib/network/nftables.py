"""A bridge's nftables rules, through ``nft -j`` (libnftables' JSON):
one table per bridge, made with the bridge and removed with it.

- ``postrouting``: masquerade what the bridge's subnet sends elsewhere (NAT egress);
- ``forward``: nothing crosses from this bridge to another of ours (networks
  are isolated), and the rest is left to the host's own rules."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import List, Sequence, Tuple

from ..config import EgressRule
from ..errors import SetupError, UnsupportedError

__all__ = ["BRIDGE_PREFIX", "table_name", "add_bridge_rules", "remove_bridge_rules", "tables"]

BRIDGE_PREFIX = "sbx"  # every bridge of ours is named so: the isolation rule needs no list of them
FAMILY = "ip"


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


def _chain(table: str, name: str, hook: str, kind: str, priority: int) -> dict:
    return {
        "chain": {
            "family": FAMILY,
            "table": table,
            "name": name,
            "type": kind,
            "hook": hook,
            "prio": priority,
            "policy": "accept",
        }
    }


def _rule(table: str, chain: str, *expr: dict) -> dict:
    return {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": list(expr)}}


def _match(key: dict, op: str, right) -> dict:
    return {"match": {"op": op, "left": key, "right": right}}


def add_bridge_rules(bridge: str, subnet: ipaddress.IPv4Network) -> None:
    """The table of ``bridge`` (replaced if it exists)."""
    table = table_name(bridge)
    source = {"payload": {"protocol": "ip", "field": "saddr"}}
    prefix = {"prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}
    iif, oif = {"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}}
    _nft(
        [
            {"add": {"table": {"family": FAMILY, "name": table}}},
            {"delete": {"table": {"family": FAMILY, "name": table}}},
            {"add": {"table": {"family": FAMILY, "name": table}}},
            {"add": _chain(table, "postrouting", "postrouting", "nat", 100)},
            {"add": _chain(table, "forward", "forward", "filter", 0)},
            {
                "add": {
                    "map": {"family": FAMILY, "table": table, "name": "egress", "type": "ipv4_addr", "map": "verdict"}
                }
            },
            {
                "add": _rule(
                    table, "postrouting", _match(source, "==", prefix), _match(oif, "!=", bridge), {"masquerade": None}
                )
            },
            {  # a container with an allow-list: its own chain (see add_egress)
                "add": _rule(
                    table,
                    "forward",
                    _match(iif, "==", bridge),
                    _match(oif, "!=", bridge),
                    {"vmap": {"key": source, "data": "@egress"}},
                )
            },
            {
                "add": _rule(
                    table,
                    "forward",
                    _match(iif, "==", bridge),
                    _match(oif, "!=", bridge),
                    _match(oif, "==", f"{BRIDGE_PREFIX}*"),
                    {"reject": {"type": "icmp", "expr": "net-prohibited"}},
                )
            },
        ],
        f"the rules of bridge {bridge}",
    )


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


def add_egress(bridge: str, container_id: str, address: str, rules: Sequence[EgressRule]) -> None:
    """The allow-list of the container at ``address``: its networks in static
    sets, the addresses its allowed names resolve to added later
    (:func:`allow_resolved`) with their TTL; anything else it sends out of the
    bridge is refused at once (TCP reset, ICMP admin-prohibited)."""
    t = f"ip {table_name(bridge)}"
    net, netp, dyn, dynp, chain = _egress_names(container_id)
    pairs = "ipv4_addr . inet_proto . inet_service"
    plain = [r.value for r in rules if r.kind == "net" and r.port is None]
    ported = [f"{r.value} . {p} . {r.port}" for r in rules if r.kind == "net" and r.port for p in r.protocols()]
    lines = [
        f"add set {t} {net} {{ type ipv4_addr; flags interval; }}",
        f"add set {t} {netp} {{ type {pairs}; flags interval; }}",
        f"add set {t} {dyn} {{ type ipv4_addr; flags timeout; }}",
        f"add set {t} {dynp} {{ type {pairs}; flags timeout; }}",
        f"add chain {t} {chain}",
        f"add rule {t} {chain} ip daddr @{net} return",
        f"add rule {t} {chain} ip daddr @{dyn} return",
        f"add rule {t} {chain} ip daddr . meta l4proto . th dport @{netp} return",
        f"add rule {t} {chain} ip daddr . meta l4proto . th dport @{dynp} return",
        f"add rule {t} {chain} meta l4proto tcp reject with tcp reset",
        f"add rule {t} {chain} reject with icmp type admin-prohibited",
        f"add element {t} egress {{ {address} : jump {chain} }}",
    ]
    if plain:
        lines.append(f"add element {t} {net} {{ {', '.join(plain)} }}")
    if ported:
        lines.append(f"add element {t} {netp} {{ {', '.join(ported)} }}")
    _nft_script("\n".join(lines) + "\n", f"the egress rules of container {container_id[:12]}")


def allow_resolved(
    bridge: str, container_id: str, answers: Sequence[Tuple[str, int]], rules: Sequence[EgressRule]
) -> None:
    """Allow the addresses an allowed name resolved to, for their TTL (seconds),
    on the ports of the rules that allowed the name (all ports when one has none)."""
    t = f"ip {table_name(bridge)}"
    _, _, dyn, dynp, _ = _egress_names(container_id)
    elements, ported = [], []
    for address, ttl in answers:
        timeout = f"timeout {max(int(ttl), 5)}s"
        if any(r.port is None for r in rules):
            elements.append(f"{address} {timeout}")
        ported += [f"{address} . {p} . {r.port} {timeout}" for r in rules if r.port for p in r.protocols()]
    lines = [f"add element {t} {dyn} {{ {', '.join(elements)} }}"] if elements else []
    lines += [f"add element {t} {dynp} {{ {', '.join(ported)} }}"] if ported else []
    if lines:
        _nft_script("\n".join(lines) + "\n", "allowing resolved addresses", check=False)


def remove_egress(bridge: str, container_id: str, address: str) -> None:
    """The container's egress objects, if any (after a SIGKILL: some may be left)."""
    t = f"ip {table_name(bridge)}"
    net, netp, dyn, dynp, chain = _egress_names(container_id)
    _nft_script(f"delete element {t} egress {{ {address} }}\n", "", check=False)
    lines = [f"flush chain {t} {chain}", f"delete chain {t} {chain}"]
    lines += [f"delete set {t} {name}" for name in (net, netp, dyn, dynp)]
    _nft_script("\n".join(lines) + "\n", "", check=False)


def remove_bridge_rules(bridge: str) -> None:
    table = {"family": FAMILY, "name": table_name(bridge)}
    _nft([{"add": {"table": table}}, {"delete": {"table": table}}], f"removing the rules of bridge {bridge}")


def tables() -> List[str]:
    """The names of our tables (tests: nothing is left behind)."""
    listed = json.loads(_nft([{"list": {"tables": {"family": FAMILY}}}], "listing tables") or "{}")
    return [
        item["table"]["name"]
        for item in listed.get("nftables", [])
        if "table" in item and item["table"]["name"].startswith("sandboxlib-")
    ]
