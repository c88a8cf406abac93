"""Limits -> the files that set them, for cgroup v1 and v2."""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..config import CPU_PERIOD_US, CgroupLimits

__all__ = ["CONTROLLERS_OF", "RT_FILE", "v1_settings", "v2_settings", "shares_to_weight"]

Settings = List[Tuple[str, str]]  # (file, value), written in order

# Which controller each limit needs.
CONTROLLERS_OF = {
    "memory": "memory",
    "memory_swap": "memory",
    "cpu_quota_us": "cpu",
    "cpu_shares": "cpu",
    "pids": "pids",
    "cpuset_cpus": "cpuset",
    "cpu_period_us": "cpu",
    "cpuset_mems": "cpuset",
    "devices": "devices",  # (cgroup v1 only: v2 controls devices with eBPF programs)
    "cpu_rt_period_us": "cpu",
    "cpu_rt_runtime_us": "cpu",
}
RT_FILE = "cpu.rt_runtime_us"  # (only with real-time group scheduling, in a v1 cpu hierarchy)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2-262144) -> v2 cpu.weight (1-10000), as runc maps it."""
    return 1 + ((shares - 2) * 9999) // 262142


def v1_settings(limits: CgroupLimits) -> Dict[str, Settings]:
    """controller -> the v1 files to write."""
    out: Dict[str, Settings] = {}
    if limits.memory is not None:
        # memsw must never be below the memory limit: memory first.
        out["memory"] = [
            ("memory.limit_in_bytes", str(limits.memory)),
            ("memory.memsw.limit_in_bytes", "-1" if limits.memory_swap is None else str(limits.memory_swap)),
        ]
    cpu: Settings = []
    if limits.cpu_quota_us is not None or limits.cpu_period_us is not None:
        cpu.append(("cpu.cfs_period_us", str(limits.cpu_period_us or CPU_PERIOD_US)))
    if limits.cpu_quota_us is not None:
        cpu.append(("cpu.cfs_quota_us", str(limits.cpu_quota_us)))
    if limits.cpu_shares is not None:
        cpu.append(("cpu.shares", str(limits.cpu_shares)))
    # the period first: a new cgroup's runtime is 0, and the runtime may not exceed the period
    if limits.cpu_rt_period_us is not None:
        cpu.append(("cpu.rt_period_us", str(limits.cpu_rt_period_us)))
    if limits.cpu_rt_runtime_us is not None:
        cpu.append((RT_FILE, str(limits.cpu_rt_runtime_us)))
    if cpu:
        out["cpu"] = cpu
    if limits.pids is not None:
        out["pids"] = [("pids.max", str(limits.pids))]
    out.update(_cpuset(limits))
    if limits.devices is not None:  # "deny a" first, then what is allowed
        out["devices"] = [
            (f"devices.{verb}", rule) for verb, _, rule in (line.partition(" ") for line in limits.devices)
        ]
    return out


def _cpuset(limits: CgroupLimits) -> Dict[str, Settings]:
    cpuset = [(f"cpuset.{k}", v) for k, v in (("cpus", limits.cpuset_cpus), ("mems", limits.cpuset_mems)) if v]
    return {"cpuset": cpuset} if cpuset else {}


def v2_settings(limits: CgroupLimits) -> Dict[str, Settings]:
    """controller -> the v2 files to write."""
    out: Dict[str, Settings] = {}
    if limits.memory is not None:
        swap = "max" if limits.memory_swap is None else str(limits.memory_swap - limits.memory)
        out["memory"] = [("memory.max", str(limits.memory)), ("memory.swap.max", swap)]
    cpu: Settings = []
    if limits.cpu_quota_us is not None or limits.cpu_period_us is not None:
        quota = "max" if limits.cpu_quota_us is None else limits.cpu_quota_us
        cpu.append(("cpu.max", f"{quota} {limits.cpu_period_us or CPU_PERIOD_US}"))
    if limits.cpu_shares is not None:
        cpu.append(("cpu.weight", str(shares_to_weight(limits.cpu_shares))))
    if cpu:
        out["cpu"] = cpu
    if limits.pids is not None:
        out["pids"] = [("pids.max", str(limits.pids))]
    out.update(_cpuset(limits))
    return out
