"""Who is on which network, read from the leases alone (every owner's
resolver answers the same, whichever of them the kernel hands a query to):
a container's names on a network (its name, hostname and aliases), and the
names a container may look up: those of every network it is on, its
resolver's first (a container connected to more networks while running
asks the resolver of the one it started on); on each, the container's links
(its lease's own names for other containers there) before the names."""

from __future__ import annotations

import os
from typing import Iterator, List, Optional

from ..config import BridgeNetwork, ContainerConfig
from . import ipam
from .files import lease_dir, network_dir

__all__ = ["lookup", "names_of", "lease_record"]

_LEASES = "leases-"


def lease_record(container_id: str, hostname: str, config: ContainerConfig) -> dict:
    """What a container's lease on the network it starts on says of it: its
    names, its egress allow-list (the objects to remove after its owner's
    death) and its links (an alias -> another container's name)."""
    network = config.network if isinstance(config.network, BridgeNetwork) else None
    egress = network.egress if network is not None else ()
    return {
        "id": container_id,
        "hostname": hostname,
        "name": config.name,
        "egress": [[r.kind, r.value, r.port, r.protocol] for r in egress],
        **({"links": dict(network.links)} if network is not None and network.links else {}),
    }


def names_of(record: dict) -> List[str]:
    return [n for n in (record.get("name"), record.get("hostname"), *(record.get("aliases") or ())) if n]


def _bridges(state_root: str) -> Iterator[str]:
    try:
        entries = sorted(os.listdir(network_dir(state_root)))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(_LEASES):
            yield entry[len(_LEASES) :]


def _addresses(record: dict) -> List[str]:
    """A lease's IPv4 address, and its IPv6 one on a network with an IPv6 subnet."""
    return [str(record["address"]), *([record["address6"]] if record.get("address6") else [])]


def _found(records: List[dict], name: str) -> List[str]:
    for record in records:
        if name in names_of(record):
            return _addresses(record)
    return []


def _linked(record: Optional[dict], records: List[dict], name: str) -> List[str]:
    """``name`` as one of ``record``'s links (Docker's ``--link NAME:ALIAS`` on a
    user-defined network: an alias only its container knows) on its network."""
    target = ((record or {}).get("links") or {}).get(name)
    return _found(records, target) if target else []


def lookup(state_root: str, bridge: str, client: str, name: str) -> List[str]:
    """The addresses of ``name`` for the container at ``client`` on ``bridge``
    (IPv4, and IPv6 where that network has it): the container's own links
    first (as Docker's), then the names on ``bridge``, then the links and
    names of the other networks that container is on; [] if none."""
    own = list(ipam.leases(lease_dir(state_root, bridge)))
    asker = next((r for r in own if client in (r["address"], r.get("address6"))), None)
    found = _linked(asker, own, name) or _found(own, name)
    if found or not asker or not asker.get("id"):
        return found
    for other in _bridges(state_root):
        if other == bridge:
            continue
        records = list(ipam.leases(lease_dir(state_root, other)))
        mine = next((r for r in records if r.get("id") == asker["id"]), None)
        if mine is not None:
            found = _linked(mine, records, name) or _found(records, name)
            if found:
                return found
    return []
