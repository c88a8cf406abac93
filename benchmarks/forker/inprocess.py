"""Forkers on and off, side by side in one process (issue 13): 1,000 gathered
``sandboxlib.aio`` runs of ``/bin/true`` over 20 containers with forkers
(every run in its kept cgroup, forked by that cgroup's forker), over 20
containers without them (``ContainerCgroup.forkers`` 0: every run forked
into its cgroup by the cgroup launcher with clone3, loading the small
clone3 filter), and the sync API on a 20-thread pool over 20 containers (no
cgroups of their own).  Rounds interleaved, order alternating.

Each row: commands/s, the containers' CPU per command (their cgroups'
``cpu.stat``), this process's CPU per command, and the machine's busy time
per command (``/proc/stat``: all of it, kernel threads included).  Then the
memory of one forker (20 of them in one container with a memory limit).

    python benchmarks/forker/inprocess.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import time

import psutil

import sandboxlib as sb
import sandboxlib.aio as sba
from sandboxlib.cgroups import group

CONTAINERS = 20
COMMANDS = 1000
TRUE = ["/bin/true"]


def _usage(paths) -> int:
    total = 0
    for path in paths:
        with open(os.path.join(path, "cpu.stat")) as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("usage_usec"))
    return total


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # not idle, not iowait


async def _aio_containers(forkers: bool) -> list:
    kept = group.ContainerCgroup.forkers
    if not forkers:
        group.ContainerCgroup.forkers = property(lambda self: 0)  # type: ignore[method-assign,assignment]
    try:
        containers = [sba.Container() for _ in range(CONTAINERS)]
        for c in containers:
            await c.__aenter__()
    finally:
        group.ContainerCgroup.forkers = kept  # type: ignore[method-assign]
    return containers


async def measure(rounds: int) -> dict:
    aio = {"aio, forkers": await _aio_containers(True), "aio, no forkers": await _aio_containers(False)}
    pool_containers = [sb.Container() for _ in range(CONTAINERS)]
    for c in pool_containers:
        c.__enter__()
    paths = {name: [c.sync._cgroup.v2.path for c in cs] for name, cs in aio.items()}
    paths["sync API, 20-thread pool"] = [c._cgroup.v2.path for c in pool_containers]
    loop = asyncio.get_running_loop()
    threads = concurrent.futures.ThreadPoolExecutor(20)

    def pool_batch() -> None:
        list(threads.map(lambda i: pool_containers[i % CONTAINERS].run(TRUE, stdin=sb.DEVNULL), range(COMMANDS)))

    async def batch(name: str) -> None:
        if name in aio:
            cs = aio[name]
            await asyncio.gather(*[cs[i % CONTAINERS].run(TRUE, stdin=sb.DEVNULL) for i in range(COMMANDS)])
        else:
            await loop.run_in_executor(None, pool_batch)

    names = list(paths)
    rows: dict = {name: [] for name in names}
    try:
        for name in names:
            await batch(name)  # warm-up: the kept cgroups, the forkers
        for r in range(rounds):
            for name in names if r % 2 else names[::-1]:
                used, busy = _usage(paths[name]), _busy_jiffies()
                wall, cpu = time.perf_counter(), time.process_time()
                await batch(name)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                ticks = os.sysconf("SC_CLK_TCK")
                rows[name].append(
                    (
                        COMMANDS / wall,
                        (_usage(paths[name]) - used) / COMMANDS,
                        cpu / COMMANDS * 1e6,
                        (_busy_jiffies() - busy) / ticks / COMMANDS * 1e6,
                    )
                )
    finally:
        for cs in aio.values():
            for c in cs:
                await c.__aexit__(None, None, None)
        for c in pool_containers:
            c.__exit__(None, None, None)
        threads.shutdown()
    return rows


def forker_memory() -> dict:
    """Median Rss/Pss/Private_Dirty/VmPTE of 20 forkers, and what each adds to the container's memory usage."""
    with sb.Container(limits=sb.Limits(memory="1G")) as c:
        node = c._cgroup.node("memory")
        usage_file = "memory.current" if node.version == "v2" else "memory.usage_in_bytes"

        def usage() -> int:
            with open(os.path.join(node.path, usage_file)) as f:
                return int(f.read())

        def forkers() -> list:
            return [p for p in psutil.Process(c.pid).children() if p.name() == "sbx-forker"]

        c.run(TRUE, timeout=30, stdin=sb.DEVNULL)
        deadline = time.monotonic() + 10
        while forkers() and time.monotonic() < deadline:
            time.sleep(0.1)  # (it ends after 2 s idle)
        before = usage()
        with concurrent.futures.ThreadPoolExecutor(20) as threads:
            list(threads.map(lambda i: c.run(["sleep", "0.2"], timeout=30, stdin=sb.DEVNULL), range(20)))
        time.sleep(0.2)
        found = forkers()
        added = (usage() - before) / len(found) / 1024
        figures = {}
        for key in ("Rss", "Pss", "Private_Dirty"):
            figures[key] = statistics.median(_rollup(p.pid)[key] for p in found)
        figures["VmPTE"] = statistics.median(_status_kb(p.pid, "VmPTE") for p in found)
        return {"forkers": len(found), "added to the container's usage, kB each": round(added, 1), **figures}


def _rollup(pid: int) -> dict:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {p[0].rstrip(":"): int(p[1]) for p in (line.split() for line in f) if len(p) == 3 and p[2] == "kB"}


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = asyncio.run(measure(args.rounds))
    pool = statistics.median(x[0] for x in rows["sync API, 20-thread pool"])
    print(f"load average before: {load:.2f}, after: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds")
    print("| front | commands/s | vs the pool | containers' CPU us | this process us | machine busy us |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in rows.items():
        med = [statistics.median(v[i] for v in values) for i in range(4)]
        print(f"| {name} | {med[0]:,.0f} | {med[0] / pool:.2f}x | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.0f} |")
    print("forker memory:", forker_memory())


if __name__ == "__main__":
    main()
