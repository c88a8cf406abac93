"""A container's ``/etc/resolv.conf`` and ``/etc/hosts``, and the host's
upstream resolvers (what the embedded resolver forwards to)."""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Tuple

__all__ = ["resolv_conf", "hosts_file", "extra_lines", "host_resolvers", "bridge_files", "LOCALHOST_LINES"]
HOST_RESOLV_CONF = "/etc/resolv.conf"
LOCALHOST_LINES = ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback")


def _host_lines(path: str) -> List[List[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return [line.split() for line in file if line.strip() and not line.lstrip().startswith(("#", ";"))]
    except FileNotFoundError:
        return []


def host_resolvers(path: str = HOST_RESOLV_CONF) -> Tuple[List[str], List[str]]:
    """(nameservers, search domains) of the host; loopback ones included: the
    resolver forwards from the host's side, where they answer."""
    servers, search = [], []
    for words in _host_lines(path):
        if words[0] == "nameserver" and len(words) > 1:
            try:
                servers.append(str(ipaddress.ip_address(words[1].split("%")[0])))
            except ValueError:
                continue
        elif words[0] in ("search", "domain"):
            search = words[1:]
    return servers, search


def resolv_conf(resolver: str, search: List[str]) -> str:
    """Every query goes to the network's resolver (container names, then the host's servers)."""
    lines = [f"nameserver {resolver}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options ndots:0")
    return "\n".join(lines) + "\n"


def hosts_file(
    address: str,
    hostname: str,
    name: Optional[str],
    extra: Tuple[Tuple[str, str], ...] = (),
    address6: Optional[str] = None,
) -> str:
    """``address6``: the container's IPv6 address too (a network with IPv6), as Docker writes it."""
    own = " ".join(dict.fromkeys(n for n in (hostname, name) if n))
    lines = [*LOCALHOST_LINES, f"{address}\t{own}", *([f"{address6}\t{own}"] if address6 else [])]
    return "\n".join(lines) + "\n" + extra_lines(extra)


def extra_lines(extra: Tuple[Tuple[str, str], ...]) -> str:
    """The ``extra_hosts`` lines, the last of every ``/etc/hosts`` of ours."""
    return "".join(f"{ip}\t{host}\n" for host, ip in extra)


def bridge_files(
    gateway: str,
    address: str,
    address6: Optional[str],
    hostname: str,
    name: Optional[str],
    extra: Tuple[Tuple[str, str], ...],
) -> Tuple[List[str], Dict[str, str]]:
    """The host's resolvers, and the ``resolv.conf`` (the network's resolver at
    ``gateway``, the host's search domains) and ``hosts`` of a container on a
    bridge, root's or the per-user namespace's."""
    upstreams, search = host_resolvers()
    files = {
        "resolv.conf": resolv_conf(gateway, search),
        "hosts": hosts_file(address, hostname, name, extra, address6),
    }
    return upstreams, files
