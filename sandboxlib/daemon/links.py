"""Docker's links: ``NAME[:ALIAS]`` parsed as dockerd parses it, and what a
legacy link (``docker run --link``, ``HostConfig.Links``, on the built-in
networks) gives the linking container when it starts: the linked one's
``ALIAS_NAME``, ``ALIAS_PORT_*`` and ``ALIAS_ENV_*`` variables and, on the
default bridge, ``/etc/hosts`` lines for its address.  The library does the
work (``env=``, ``extra_hosts=``); on a user-defined network a link is the
library's (``Network.bridge(links=)``: an alias only that container's
resolver answers)."""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config import is_host_name
from .apierrors import ApiError

__all__ = ["parse_link", "checked_links", "library_links", "link_env", "link_hosts", "bridge_address"]


def parse_link(text: Any, where: str) -> Tuple[str, str]:
    """``NAME:ALIAS``, ``NAME`` (its own alias) or inspect's ``/NAME:/PARENT/ALIAS``
    -> (name, alias), as dockerd's ``opts.ParseLink``; the alias a host name (the
    name a container's: dockerd's names, ``db..x`` or 70 characters, are not all host names)."""
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"{where}: empty string specified for links")
    parts = text.split(":")
    if len(parts) > 2:
        raise ApiError(400, f"{where}: bad format for links: {text}")
    name, alias = (text, text) if len(parts) == 1 else (parts[0], parts[1])
    if name.startswith("/"):  # (a container's links as inspect shows them)
        name, alias = name[1:], alias.rpartition("/")[2]
    if not is_host_name(alias):
        raise ApiError(400, f"{where}[{alias!r}]: {alias!r} is not a host name")
    return name, alias


def checked_links(value: Any, where: str) -> List[Tuple[str, str]]:
    """A list of ``NAME[:ALIAS]`` -> [(name, alias)]; an alias given twice is a 409, as dockerd's."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, f"{where}: expected a list of NAME:ALIAS")
    links = [parse_link(item, where) for item in value]
    aliases = [alias for _, alias in links]
    twice = next((a for a in aliases if aliases.count(a) > 1), None)
    if twice is not None:
        raise ApiError(409, f"{where}: the link alias {twice!r} is given twice")
    return links


def library_links(given: Optional[List[str]]) -> Dict[str, str]:
    """``["NAME:ALIAS", ...]`` (checked already) -> the library's ``links=`` (``{ALIAS: NAME}``)."""
    return {alias: name for name, alias in checked_links(given, "Links")}


def _ports(exposed: Iterable[str]) -> List[Tuple[int, str]]:
    """``ExposedPorts``' keys (``"80/tcp"``) as dockerd orders them: TCP first, then by number."""
    found = []
    for key in exposed:
        port, _, protocol = key.partition("/")
        if port.isdigit():
            found.append((int(port), protocol or "tcp"))
    return sorted(found, key=lambda p: (p[1] != "tcp", p[1], p[0]))


def link_env(link_name: str, address: str, env: Iterable[str], exposed: Iterable[str]) -> Dict[str, str]:
    """Docker's variables of a link ``/PARENT/ALIAS`` to a container at ``address``
    ("" off the bridge), with environment ``env`` and exposed ports ``exposed``."""
    alias = link_name.rpartition("/")[2].upper().replace("-", "_")
    variables: Dict[str, str] = {}
    ports = _ports(exposed)
    for i, (port, protocol) in enumerate(ports):
        if i == 0:
            variables[f"{alias}_PORT"] = f"{protocol}://{address}:{port}"
        prefix = f"{alias}_PORT_{port}_{protocol.upper()}"
        variables[prefix] = f"{protocol}://{address}:{port}"
        variables[f"{prefix}_ADDR"] = address
        variables[f"{prefix}_PORT"] = str(port)
        variables[f"{prefix}_PROTO"] = protocol
    for first, last in _ranges(ports):  # consecutive ports of a protocol: their range too
        prefix = f"{alias}_PORT_{first[0]}_{first[1].upper()}"
        variables[f"{prefix}_START"] = f"{first[1]}://{address}:{first[0]}"
        variables[f"{prefix}_PORT_START"] = str(first[0])
        variables[f"{prefix}_END"] = f"{last[1]}://{address}:{last[0]}"
        variables[f"{prefix}_PORT_END"] = str(last[0])
    variables[f"{alias}_NAME"] = link_name
    for item in env:
        name, sep, value = item.partition("=")
        if sep and name not in ("HOME", "PATH"):  # (as dockerd: a build's, nothing of the linked container's)
            variables[f"{alias}_ENV_{name}"] = value
    return variables


def _ranges(ports: List[Tuple[int, str]]) -> List[Tuple[Tuple[int, str], Tuple[int, str]]]:
    found = []
    start = 0
    for i in range(1, len(ports) + 1):
        if i < len(ports) and ports[i] == (ports[i - 1][0] + 1, ports[i - 1][1]):
            continue
        if i - 1 > start:
            found.append((ports[start], ports[i - 1]))
        start = i
    return found


def link_hosts(alias: str, hostname: str, name: str, address: str) -> Dict[str, str]:
    """The ``/etc/hosts`` names of a linked container at ``address``: the alias,
    its hostname and its name (``extra_hosts=``), but a name that is no host name
    (dockerd's container names may be ``db..x``: the alias still names it)."""
    return {host: address for host in dict.fromkeys((alias, hostname, name)) if is_host_name(host)}


def bridge_address(address: Optional[str]) -> str:
    """``"172.17.0.2/16"`` (the library's ``Container.address``) -> ``"172.17.0.2"``; None -> ""."""
    return str(ipaddress.IPv4Interface(address).ip) if address else ""
