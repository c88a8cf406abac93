"""A container's cgroup limits in kernel units: what ``cgroups/`` writes.

Made from checked values (``Limits.cgroup()``, the OCI runtime's
``linux.resources``), so a record without validators: a NamedTuple, which
the OCI runtime's create (a program per container) defines without attrs."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

__all__ = ["CPU_PERIOD_US", "DEFAULT_DEVICE_RULES", "CgroupLimits"]

CPU_PERIOD_US = 100_000

# What every container with a device cgroup may use whatever its rules say
# (runc's list, as cgroup v1 devices.allow lines): mknod, and null, zero,
# full, tty, random, urandom, console, ptmx and the pts.
DEFAULT_DEVICE_RULES = tuple(
    f"allow {rule}"
    for rule in ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm")
    + ("c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")
)


class CgroupLimits(NamedTuple):
    """The cgroup limits of a :class:`Limits`, checked and in kernel units.

    ``memory_swap`` is memory plus swap in bytes, None for unlimited swap.
    ``cpu_quota_us`` is per ``cpu_period_us`` (None: ``CPU_PERIOD_US``; only
    the OCI runtime sets another); ``cpuset_cpus`` a list such as ``0-1,3``,
    ``cpuset_mems`` the memory nodes likewise (the OCI runtime's);
    ``devices`` the v1 ``devices.allow``/``devices.deny`` lines in order
    (``"deny a"``, ``"allow c 1:3 rwm"``); ``cpu_rt_period_us`` and
    ``cpu_rt_runtime_us`` real-time CPU time (v1 ``cpu.rt_*``)."""

    memory: Optional[int] = None
    memory_swap: Optional[int] = None
    cpu_quota_us: Optional[int] = None
    cpu_shares: Optional[int] = None
    pids: Optional[int] = None
    cpuset_cpus: Optional[str] = None
    cpu_period_us: Optional[int] = None
    cpuset_mems: Optional[str] = None
    devices: Optional[Tuple[str, ...]] = None
    cpu_rt_period_us: Optional[int] = None
    cpu_rt_runtime_us: Optional[int] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in self)

    def names(self) -> Tuple[str, ...]:
        """The ``limits.*`` fields that are set, for messages."""
        fields = {"cpu_quota_us": "cpus", "cpu_period_us": "cpus", "devices": "device_rules"}
        return tuple(f"limits.{fields.get(k, k)}" for k, v in self._asdict().items() if v is not None)
