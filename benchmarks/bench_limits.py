"""The start-up cost of a cgroup, of limits and of seccomp: ``sb.run(["/bin/true"])``
with no limits and no seccomp filter vs with memory+pids+cpu limits and the
default seccomp policy (issue 4's pair), interleaved in one process;
also ``c.run(["/bin/true"])`` with and without a per-command cgroup (a timeout).

    python benchmarks/bench_limits.py [--rounds N] [--no-record]

Target (issue 4): "limits + default seccomp" p50 under 1.5x "no limits, no seccomp".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb
from sandboxlib.runtime import container

TRUE = ["/bin/true"]
LIMITS = sb.Limits(memory="256M", memory_swap="256M", pids=64, cpus=1.0)


def cgroup_operations(rounds: int = 200) -> str:
    """Median cost of making (limits written) and removing a container's cgroup
    directories, on their own."""
    layout = container.cgroups.detect()
    lines = []
    for label, limits in (("no limits", sb.Limits()), ("memory+swap+pids+cpus", LIMITS)):
        made, removed = [], []
        for i in range(rounds):
            group = container.cgroups.plan_cgroup(layout, limits.cgroup(), f"sandboxlib-bench-{os.getpid()}-{i}")
            start = time.perf_counter()
            group.create()
            middle = time.perf_counter()
            group.remove()
            made.append(middle - start)
            removed.append(time.perf_counter() - middle)
        lines.append(
            f"- {label}: {len(group.nodes)} directories, create {statistics.median(made) * 1e3:.3f} ms, "
            f"remove {statistics.median(removed) * 1e3:.3f} ms (median of {rounds})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with sb.Container() as box:
        workloads = {
            "sb.run([/bin/true]), no limits, seccomp=None": lambda: sb.run(TRUE, seccomp=None),
            "sb.run([/bin/true]), memory+memory_swap+pids+cpus limits, default seccomp": lambda: sb.run(
                TRUE, limits=LIMITS
            ),
            "sb.run([/bin/true]), no limits, default seccomp (a one-shot run without limits has no cgroup)": lambda: (
                sb.run(TRUE)
            ),
            "c.run([/bin/true]) in a running container": lambda: box.run(TRUE),
            "c.run([/bin/true], timeout=60) (its own cgroup)": lambda: box.run(TRUE, timeout=60),
        }
        samples = _common.interleaved(workloads, rounds=args.rounds)
    stats = {name: _common.percentiles(v) for name, v in samples.items()}
    names = list(workloads)
    base = stats[names[0]][0]
    rows = [(name, stats[name], "1" if name == names[0] else f"{stats[name][0] / base:.2f}x") for name in names[:3]]
    rows += [
        (names[3], stats[names[3]], "1"),
        (names[4], stats[names[4]], f"{stats[names[4]][0] / stats[names[3]][0]:.2f}x c.run"),
    ]
    body = _common.table(rows) + (
        f"\n\nlimits + seccomp / neither p50: **{stats[names[1]][0] / base:.2f}x** (target: under 1.5x); "
        f"the default seccomp policy alone: {stats[names[2]][0] - base:+.3f} ms p50; "
        f"a command's own cgroup: {stats[names[4]][0] - stats[names[3]][0]:+.3f} ms p50. "
        f"{args.rounds} interleaved rounds after 20 warm-up rounds; cgroup layout: "
        f"{container.cgroups.detect().kind}."
    )
    body += "\n\nThe cgroup directories alone:\n\n" + cgroup_operations()
    print(body)
    if not args.no_record:
        _common.record("bench_limits: cgroup and limits cost at start-up", body)


if __name__ == "__main__":
    main()
