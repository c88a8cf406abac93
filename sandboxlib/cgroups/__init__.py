"""cgroups: one per container, made and removed by us (v1, v2 and the
hybrid layout), its limits, kill-all, event counters and statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from . import fs
from .group import CommandCgroup, ContainerCgroup, cgroup_name, plan_cgroup, release_nodes

if TYPE_CHECKING:
    from .layout import Layout, detect

__all__ = ["fs", "CommandCgroup", "ContainerCgroup", "Layout", "cgroup_name", "detect", "plan_cgroup", "release_paths"]


def __getattr__(name: str):
    """The layout on first use: the OCI runtime's create, a program of its own
    per container, plans its cgroup from cgroupsPath without it."""
    if name in ("Layout", "detect"):
        from . import layout

        return getattr(layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def release_paths(paths: Sequence[str]) -> bool:
    """Kill and remove the cgroup directories a state record names (a sweep).
    Returns True when some are still there."""
    return not release_nodes(list(paths))
