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
from typing import List

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
                "add": _rule(
                    table, "postrouting", _match(source, "==", prefix), _match(oif, "!=", bridge), {"masquerade": None}
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
