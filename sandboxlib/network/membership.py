"""Who is on which network, read from the leases alone (every owner's
resolver answers the same, whichever of them the kernel hands a query to):
a container's names on a network (its name, hostname and aliases), and the
names a container may look up: those of every network it is on, its
resolver's first (a container connected to more networks while running
asks the resolver of the one it started on)."""

from __future__ import annotations

import os
from typing import Iterator, List, Optional

from . import ipam
from .files import lease_dir, network_dir

__all__ = ["lookup", "names_of"]

_LEASES = "leases-"


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


def lookup(state_root: str, bridge: str, client: str, name: str) -> Optional[str]:
    """The address of ``name`` for the container at ``client`` on ``bridge``:
    on ``bridge`` first, then on the other networks that container is on."""
    own = list(ipam.leases(lease_dir(state_root, bridge)))
    for record in own:
        if name in names_of(record):
            return str(record["address"])
    asker = next((r.get("id") for r in own if r["address"] == client), None)
    if not asker:
        return None
    for other in _bridges(state_root):
        if other == bridge:
            continue
        records = list(ipam.leases(lease_dir(state_root, other)))
        if any(r.get("id") == asker for r in records):
            for record in records:
                if name in names_of(record):
                    return str(record["address"])
    return None
