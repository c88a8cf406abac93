"""cgroups: one per container, made and removed by us (v1, v2 and the
hybrid layout), its limits, kill-all, event counters and statistics."""

from __future__ import annotations

from typing import Sequence

from . import fs
from .group import CommandCgroup, ContainerCgroup, cgroup_name, plan_cgroup, release_nodes
from .layout import Layout, detect

__all__ = ["fs", "CommandCgroup", "ContainerCgroup", "Layout", "cgroup_name", "detect", "plan_cgroup", "release_paths"]


def release_paths(paths: Sequence[str]) -> bool:
    """Kill and remove the cgroup directories a state record names (a sweep).
    Returns True when some are still there."""
    return not release_nodes(list(paths))
