"""An OCI container's cgroup: ``linux.cgroupsPath`` in every hierarchy.

An absolute path is below each hierarchy's mount root, a relative one below
the runtime's own cgroup (runc's rule).  The container joins the v2 tree
(when writable) and the v1 hierarchies of memory, pids, cpu, cpuacct, blkio,
devices and freezer that are mounted; limits, the device rules among them,
are written by :class:`~sandboxlib.cgroups.ContainerCgroup`."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..cgroups import ContainerCgroup, fs
from ..cgroups.group import Node, write_limits
from ..config import CgroupLimits
from ..errors import ConfigError, UnsupportedError

__all__ = ["plan", "update", "JOINED_V1"]

JOINED_V1 = ("memory", "pids", "cpu", "cpuacct", "blkio", "devices", "freezer", "cpuset")


def _hierarchies() -> List[Tuple[str, str, str, Tuple[str, ...]]]:
    """(version, mount point, our own cgroup's path there, controllers) of each hierarchy."""
    own: Dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            number, names, path = line.rstrip("\n").split(":", 2)
            own["" if number == "0" else names] = path
    found: List[Tuple[str, str, str, Tuple[str, ...]]] = []
    seen = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2") or fields[3] != "/":
                continue
            controllers: Tuple[str, ...] = ()
            key = ""
            if rfields[0] != "cgroup2":
                options = set(rfields[2].split(","))
                key = next((k for k in own if k and set(k.split(",")) <= options), "")
                controllers = tuple(c for c in key.split(",") if c in JOINED_V1)
                if not controllers:
                    continue
            if key in seen:
                continue
            seen.add(key)
            found.append(("v2" if not key else "v1", fields[4], own.get(key, "/"), controllers))
    return found


def plan(path: str, limits: CgroupLimits) -> Optional[ContainerCgroup]:
    """The container's cgroup directories (not made yet), or None when we may make none."""
    nodes = []
    for version, point, own, controllers in _hierarchies():
        base = point if path.startswith("/") else os.path.join(point, own.lstrip("/"))
        if controllers == ("cpuset",) and limits.cpuset_cpus is None and limits.cpuset_mems is None:
            continue  # a cpuset needs cpus and mems copied in: only for a cpuset limit
        if not os.access(base, os.W_OK):
            continue
        nodes.append(Node(version, os.path.join(base, path.lstrip("/")), controllers))
    needed = {
        "memory": limits.memory,
        "pids": limits.pids,
        "cpu": limits.cpu_quota_us or limits.cpu_period_us or limits.cpu_shares,
    }
    for controller, value in needed.items():
        if value is not None and not any(controller in n.controllers for n in nodes):
            raise UnsupportedError(f"the cgroup {controller} controller", "mount it, or delegate it to this user")
    if limits.devices and not any("devices" in n.controllers for n in nodes) and os.geteuid() == 0:
        raise UnsupportedError("linux.resources.devices", "a cgroup v1 devices hierarchy is required")
    realtime = limits.cpu_rt_period_us is not None or limits.cpu_rt_runtime_us is not None
    if realtime and not any(n.version == "v1" and "cpu" in n.controllers for n in nodes):
        raise UnsupportedError(
            "linux.resources.cpu.realtimeRuntime and realtimePeriod", "a cgroup v1 cpu hierarchy is required"
        )
    for node in nodes:
        # Another container's (or anyone's): ours are made, and removed, by us alone.
        if os.path.exists(node.path):
            raise ConfigError("linux.cgroupsPath", f"{node.path} already exists")
    for node in nodes:
        _make_parents(os.path.dirname(node.path), "cpuset" in node.controllers and node.version == "v1")
    return ContainerCgroup(nodes, limits) if nodes else None


def _make_parents(path: str, cpuset: bool) -> None:
    """mkdir -p; a new v1 cpuset directory gets its parent's CPUs and memory
    nodes (it starts empty, and a child's may only be a subset)."""
    parent = os.path.dirname(path)
    if os.path.isdir(path) or parent == path:
        return
    _make_parents(parent, cpuset)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    for name in ("cpuset.cpus", "cpuset.mems") if cpuset else ():
        fs.write(os.path.join(path, name), (fs.read_text(os.path.join(parent, name)) or "").strip())


def update(nodes: Sequence[Tuple[str, str, Sequence[str]]], limits: CgroupLimits) -> None:
    """Write new limits into the container's directories (``update``)."""
    for version, path, controllers in nodes:
        write_limits(version, path, limits, controllers)
