"""Tiny Dask tasks on a 2-worker local cluster (worker processes on
loopback), side by side in one run: plain tasks, the same tasks through
``sandboxlib.dask.sandboxed`` (a warm ``sb.Pool`` per worker), and a naive
sandbox per task (``sb.run(["python3", "-c", ...])`` in the task).

    python benchmarks/bench_dask.py [--tasks N] [--naive-tasks N] [--rounds N] [--threads N] [--no-record]

Targets (issue 18): sandboxed throughput at least 0.5x the plain tasks', and
at least 10x the naive per-task ``sb.run``'s.  The naive way gets fewer tasks
(a cold container and interpreter each: 10,000 would take minutes); the
figures compared are tasks per second.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Tuple

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
from distributed import Client, LocalCluster

import sandboxlib as sb
from sandboxlib.dask import SandboxPlugin, sandboxed


def tiny(x: int) -> int:
    return x * x


def naive(x: int) -> int:
    return int(sb.run(["python3", "-c", f"print({x} * {x})"], check=True).stdout)


def cpu_seconds() -> float:
    """CPU time of this process and every process under it (the scheduler
    runs here; the workers, their sandboxes and the naive containers below),
    with what each has reaped: what the cluster cost, whoever else loads the machine."""
    total = 0.0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def measure(client: Client, fn, tasks: int) -> Tuple[float, float]:
    """(tasks per second, CPU ms per task): ``tasks`` submitted at once, all gathered (results checked)."""
    cpu, start = cpu_seconds(), time.perf_counter()
    results = client.gather(client.map(fn, range(tasks), pure=False))
    elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
    assert results == [x * x for x in range(tasks)]
    return tasks / elapsed, used * 1e3 / tasks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--naive-tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--sandboxes", type=int, default=None, help="sandboxes per worker (default: --threads)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=args.threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(SandboxPlugin(size=args.sandboxes or args.threads))
        workloads = {
            "plain tasks": lambda: measure(client, tiny, args.tasks),
            "sandboxed(tiny): the workers' warm pools": lambda: measure(client, sandboxed(tiny), args.tasks),
            'naive: sb.run(["python3", "-c", ...]) per task': lambda: measure(client, naive, args.naive_tasks),
        }
        for fn in workloads.values():  # warm-up: imports, connections, the pools' first forks
            fn()
        samples = {name: [] for name in workloads}
        order = list(workloads.items())
        for _ in range(args.rounds):
            random.Random(0).shuffle(order)
            for name, fn in order:
                samples[name].append(fn())
    rates = {name: statistics.median(r for r, _ in values) for name, values in samples.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in samples.items()}
    plain, boxed, cold = rates.values()
    plain_cpu, boxed_cpu, cold_cpu = cpu.values()
    lines = [
        "| workload | tasks per round | tasks/s (median) | all rounds | CPU ms per task (median) |",
        "|---|---:|---:|---|---:|",
    ]
    for (name, values), tasks in zip(samples.items(), (args.tasks, args.tasks, args.naive_tasks)):
        rounds = ", ".join(f"{r:,.0f}" for r, _ in values)
        lines.append(f"| {name} | {tasks:,} | {rates[name]:,.0f} | {rounds} | {cpu[name]:.2f} |")
    sandboxes = args.sandboxes or args.threads
    body = "\n".join(lines) + (
        f"\n\n2 workers x {args.threads} threads (a pool of {sandboxes} sandboxes each), "
        f"{args.rounds} interleaved rounds after a warm-up.  Sandboxed vs plain: "
        f"**{boxed / plain:.2f}x** the throughput (target: at least 0.5x); vs naive per-task "
        f"sb.run: **{boxed / cold:.1f}x** faster (target: at least 10x).  CPU per task (the "
        f"cluster's processes and their sandboxes, whatever else loads the machine): sandboxed "
        f"{boxed_cpu / plain_cpu:.2f}x plain's, naive {cold_cpu / boxed_cpu:.1f}x sandboxed's.  "
        f"Load average at the end: {os.getloadavg()[0]:.2f} (the benchmark's own load included)."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_dask: tiny Dask tasks, plain, sandboxed and naive", body)


if __name__ == "__main__":
    main()
