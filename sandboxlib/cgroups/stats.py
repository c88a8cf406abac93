"""What a running container uses: totals from its cgroup files (psutil over
its processes where it has no cgroup), and a per-process listing."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import attrs

from . import ContainerCgroup, fs

__all__ = ["Stats", "ProcessInfo", "read_stats", "list_processes"]


@attrs.frozen(kw_only=True)
class Stats:
    """Resource use of a container.

    Attributes:
        cpu_seconds: CPU time (user + system) of every process it ever ran
            (with a cgroup; else of the processes still running).
        memory_bytes: memory in use now (a memory cgroup: page cache included; else the sum of RSS).
        memory_peak_bytes: the most memory in use at once, or None where unknown.
        pids: processes and threads now.
        pids_peak: the most processes and threads at once, or None where the kernel does not say.
        io_read_bytes, io_write_bytes: bytes read from and written to block devices
            (None where unknown).
        source: ``"cgroup"`` when the container has one (the figures it lacks, such as
            memory of a container without limits, come from psutil), else ``"psutil"``
            (rootless without a delegated cgroup).
    """

    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: Optional[int]
    pids: int
    pids_peak: Optional[int]
    io_read_bytes: Optional[int]
    io_write_bytes: Optional[int]
    source: str


@attrs.frozen(kw_only=True)
class ProcessInfo:
    """One process of a container (``c.top()``).

    Attributes:
        pid: the host pid.  container_pid: its pid inside the container.
        ppid: the host pid of its parent.  name, cmdline: what it runs.
        uid: its real uid on the host.  status: psutil's status ("running", "sleeping", ...).
        cpu_seconds: its CPU time (user + system).  memory_bytes: its RSS.
    """

    pid: int
    container_pid: Optional[int]
    ppid: int
    name: str
    cmdline: Tuple[str, ...]
    uid: int
    status: str
    cpu_seconds: float
    memory_bytes: int


def _processes(init_pid: int) -> list:
    import psutil  # only here: ``import sandboxlib`` stays light

    try:
        init = psutil.Process(init_pid)
        return [init, *init.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _int(path: str) -> Optional[int]:
    text = fs.read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _io_bytes(cgroup: ContainerCgroup) -> Tuple[Optional[int], Optional[int]]:
    node = cgroup.node("blkio")
    if node is not None:
        read = write = 0
        for line in (
            fs.read_text(os.path.join(node.path, "blkio.throttle.io_service_bytes_recursive")) or ""
        ).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("Read", "Write"):
                read += int(parts[2]) if parts[1] == "Read" else 0
                write += int(parts[2]) if parts[1] == "Write" else 0
        return read, write
    node = cgroup.node("io")
    if node is None:
        return None, None
    read = write = 0
    for line in (fs.read_text(os.path.join(node.path, "io.stat")) or "").splitlines():
        fields = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
        read += int(fields.get("rbytes", 0))
        write += int(fields.get("wbytes", 0))
    return read, write


def _cgroup_stats(cgroup: ContainerCgroup, fallback: Stats) -> Stats:
    cpu = fallback.cpu_seconds
    node = cgroup.node("cpuacct")
    if node is not None and _int(os.path.join(node.path, "cpuacct.usage")) is not None:
        cpu = _int(os.path.join(node.path, "cpuacct.usage")) / 1e9
    elif cgroup.v2 is not None:
        cpu = fs.read_keys(os.path.join(cgroup.v2.path, "cpu.stat")).get("usage_usec", 0) / 1e6
    memory, peak = fallback.memory_bytes, None
    node = cgroup.node("memory")
    if node is not None:
        names = (
            ("memory.current", "memory.peak")
            if node.version == "v2"
            else ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
        )
        memory = _int(os.path.join(node.path, names[0])) or memory
        peak = _int(os.path.join(node.path, names[1]))
    pids, pids_peak = fallback.pids, None
    node = cgroup.node("pids")
    if node is not None:
        pids = _int(os.path.join(node.path, "pids.current")) or pids
        pids_peak = _int(os.path.join(node.path, "pids.peak"))
    io_read, io_write = _io_bytes(cgroup)
    return Stats(
        cpu_seconds=cpu,
        memory_bytes=memory,
        memory_peak_bytes=peak,
        pids=pids,
        pids_peak=pids_peak,
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        source="cgroup",
    )


def _psutil_stats(init_pid: int) -> Stats:
    import psutil

    cpu = 0.0
    memory = threads = 0
    io_read: Optional[int] = 0
    io_write: Optional[int] = 0
    for proc in _processes(init_pid):
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                memory += proc.memory_info().rss
                threads += proc.num_threads()
                try:
                    io = proc.io_counters()
                    io_read, io_write = io_read + io.read_bytes, io_write + io.write_bytes
                except (psutil.AccessDenied, AttributeError, TypeError):
                    io_read = io_write = None
        except psutil.NoSuchProcess:
            continue
    return Stats(
        cpu_seconds=cpu,
        memory_bytes=memory,
        memory_peak_bytes=None,
        pids=threads,
        pids_peak=None,
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        source="psutil",
    )


def read_stats(cgroup: Optional[ContainerCgroup], init_pid: int) -> Stats:
    """The container's resource use now."""
    fallback = _psutil_stats(init_pid)
    return fallback if cgroup is None else _cgroup_stats(cgroup, fallback)


def _container_pid(pid: int) -> Optional[int]:
    for line in (fs.read_text(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def list_processes(init_pid: int) -> List[ProcessInfo]:
    """Every process of the container, the init first."""
    import psutil

    out = []
    for proc in _processes(init_pid):
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                out.append(
                    ProcessInfo(
                        pid=proc.pid,
                        container_pid=_container_pid(proc.pid),
                        ppid=proc.ppid(),
                        name=proc.name(),
                        cmdline=tuple(proc.cmdline()),
                        uid=proc.uids().real,
                        status=proc.status(),
                        cpu_seconds=times.user + times.system,
                        memory_bytes=proc.memory_info().rss,
                    )
                )
        except psutil.NoSuchProcess:
            continue
    return out
