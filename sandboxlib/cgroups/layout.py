"""Where the cgroup hierarchies are, and where we are in each.

Three layouts: cgroup v2 only (one tree with every controller), v1 only
(a hierarchy per controller, or per group of co-mounted ones), and the
hybrid of v1 controllers beside a controller-less v2 tree (systemd's
``/sys/fs/cgroup/unified``), which still gives ``cgroup.kill`` and
``cgroup.events``.  Our containers' cgroups go below our own cgroup in
each hierarchy (read from ``/proc/self/cgroup``)."""

from __future__ import annotations

import functools
import os
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple

import attrs

__all__ = ["Layout", "detect", "V1_CONTROLLERS"]

# The v1 controllers we use: limits, stats, and the freezer for kill-all.
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices")


@attrs.frozen(kw_only=True)
class Layout:
    """The cgroup layout of this host, as this process sees it.

    Attributes:
        v1: controller -> the directory of our own cgroup in its v1 hierarchy.
        v2: the directory of our own cgroup in the v2 tree, or None.
        v2_controllers: the controllers the v2 tree offers below our cgroup.
    """

    v1: Mapping[str, str]
    v2: Optional[str]
    v2_controllers: FrozenSet[str]

    @property
    def kind(self) -> str:
        """``"v2"``, ``"v1"``, ``"hybrid"`` or ``"none"``."""
        if self.v1 and self.v2:
            return "hybrid"
        return "v1" if self.v1 else "v2" if self.v2 else "none"

    def controller_dirs(self, controller: str) -> Tuple[str, str]:
        """("v1"|"v2", our directory) of the hierarchy that has ``controller``, or ("", "")."""
        if self.v2 and controller in self.v2_controllers:
            return "v2", self.v2
        if controller in self.v1:
            return "v1", self.v1[controller]
        return "", ""


def _mounts() -> List[Tuple[str, str, str, FrozenSet[str]]]:
    """(fstype, mount root, mount point, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                point = fields[4].replace("\\040", " ")
                found.append((rfields[0], fields[3], point, frozenset(rfields[2].split(","))))
    return found


def _own_paths() -> Dict[str, str]:
    """hierarchy key -> our cgroup path: "" for v2, else the controller list."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            paths["" if number == "0" else controllers] = path
    return paths


def _join(point: str, root: str, path: str) -> Optional[str]:
    """Our cgroup's directory under a mount of the hierarchy at ``root``."""
    if root == "/":
        return point + (path if path != "/" else "")
    if path == root or path.startswith(root + "/"):
        return point + path[len(root) :]
    return None


@functools.lru_cache(maxsize=1)
def _detect() -> Layout:
    own = _own_paths()
    v1: Dict[str, str] = {}
    v2 = None
    for fstype, root, point, options in _mounts():
        if fstype == "cgroup2":
            if v2 is None and "" in own:
                v2 = _join(point, root, own[""])
            continue
        key = next((k for k in own if k and set(k.split(",")) <= options), None)
        if key is None:
            continue
        directory = _join(point, root, own[key])
        for controller in key.split(","):
            if controller in V1_CONTROLLERS and controller not in v1 and directory:
                v1[controller] = directory
    controllers: FrozenSet[str] = frozenset()
    if v2:
        try:
            with open(os.path.join(v2, "cgroup.controllers")) as f:
                controllers = frozenset(f.read().split())
        except OSError:
            v2 = None
    return Layout(v1=v1, v2=v2, v2_controllers=controllers)


def detect() -> Layout:
    """The layout, detected once per process (a process that moves itself
    to another cgroup afterwards keeps nesting below the first one)."""
    return _detect()
