"""Shared helpers of the benchmarks: interleaved timing, percentiles, the
machine facts and the RESULTS.md writer."""

from __future__ import annotations

import datetime
import os
import platform
import random
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Sequence, Tuple

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def interleaved(workloads: Dict[str, Callable[[], object]], *, rounds: int, warmup: int = 20) -> Dict[str, List[float]]:
    """Run every workload once per round, in a fresh order each round (a
    seeded shuffle), so that drift of the machine, and the after-effects of
    one tool's teardown on whatever runs next, hit all of them alike.
    Returns seconds per call."""
    for _ in range(warmup):
        for fn in workloads.values():
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in workloads}
    clock = time.perf_counter
    order = list(workloads.items())
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name, fn in order:
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return samples


def percentiles(values: Sequence[float]) -> Tuple[float, float, float]:
    """p50, p90, p99 in milliseconds."""
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values) * 1e3, q[89] * 1e3, q[98] * 1e3


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
    )


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def table(rows: List[Tuple[str, Tuple[float, float, float], str]]) -> str:
    lines = ["| workload | p50 ms | p90 ms | p99 ms | ratio |", "|---|---:|---:|---:|---|"]
    for name, (p50, p90, p99), ratio in rows:
        lines.append(f"| {name} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {ratio} |")
    return "\n".join(lines)


def record(title: str, body: str) -> None:
    """Append a dated section to RESULTS.md."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(RESULTS, "a") as f:
        f.write(f"\n## {title} ({stamp})\n\nMachine: {machine()}\n\n{body}\n")
