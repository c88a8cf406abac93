"""A container's cgroup limits in kernel units: what ``cgroups/`` writes.

Made from checked values (``Limits.cgroup()``, the OCI runtime's
``linux.resources``), so a record without validators: a NamedTuple, which
the OCI runtime's create (a program per container) defines without attrs."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

__all__ = ["CPU_PERIOD_US", "CgroupLimits"]

CPU_PERIOD_US = 100_000


class CgroupLimits(NamedTuple):
    """The cgroup limits of a :class:`Limits`, checked and in kernel units.

    ``memory_swap`` is memory plus swap in bytes, None for unlimited swap.
    ``cpu_quota_us`` is per ``cpu_period_us`` (None: ``CPU_PERIOD_US``; only
    the OCI runtime sets another); ``cpuset_cpus`` a list such as ``0-1,3``,
    ``cpuset_mems`` the memory nodes likewise (the OCI runtime's)."""

    memory: Optional[int] = None
    memory_swap: Optional[int] = None
    cpu_quota_us: Optional[int] = None
    cpu_shares: Optional[int] = None
    pids: Optional[int] = None
    cpuset_cpus: Optional[str] = None
    cpu_period_us: Optional[int] = None
    cpuset_mems: Optional[str] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in self)

    def names(self) -> Tuple[str, ...]:
        """The ``limits.*`` fields that are set, for messages."""
        fields = {"cpu_quota_us": "cpus", "cpu_period_us": "cpus"}
        return tuple(f"limits.{fields.get(k, k)}" for k, v in self._asdict().items() if v is not None)
