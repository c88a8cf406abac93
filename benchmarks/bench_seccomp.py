"""The start-up cost of the default seccomp policy: ``sb.run(["/bin/true"])``
and ``c.run`` into a running container, with ``seccomp=None`` and with
Docker's default policy, interleaved in one process.

    python benchmarks/bench_seccomp.py [--rounds N] [--no-record]

The policy is compiled once per process (cached); what a run pays is the
filter in the PLAN message, its install before execve, and the filter
running on every syscall of the command.  Target: about 0.1-0.2 ms.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb
import sandboxlib.security.bpf

TRUE = "/bin/true"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with sb.Container(seccomp=None) as bare, sb.Container() as filtered:
        workloads = {
            "sb.run([/bin/true], seccomp=None)": lambda: sb.run([TRUE], seccomp=None),
            "sb.run([/bin/true]) (default policy)": lambda: sb.run([TRUE]),
            "c.run([/bin/true]), seccomp=None": lambda: bare.run([TRUE]),
            "c.run([/bin/true]), default policy": lambda: filtered.run([TRUE]),
        }
        samples = _common.interleaved(workloads, rounds=args.rounds)
    stats = {name: _common.percentiles(v) for name, v in samples.items()}
    names = list(workloads)
    rows = [
        (name, stats[name], "1" if i % 2 == 0 else f"{stats[name][0] / stats[names[i - 1]][0]:.2f}x")
        for i, name in enumerate(names)
    ]
    run_cost = stats[names[1]][0] - stats[names[0]][0]
    exec_cost = stats[names[3]][0] - stats[names[2]][0]
    insns = len(sb.security.bpf.compile_policy(sb.Seccomp.default(), sb.ContainerConfig().capabilities())) // 8
    body = _common.table(rows) + (
        f"\n\nThe default policy costs **{run_cost:+.3f} ms** per `sb.run` and **{exec_cost:+.3f} ms** "
        f"per `c.run` (p50 differences; target: about 0.1-0.2 ms).  Its filter: {insns} BPF "
        f"instructions (our range search + libseccomp's binary tree), compiled once per process.  "
        f"{args.rounds} interleaved rounds after 20 warm-up rounds."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_seccomp: the default seccomp policy", body)


if __name__ == "__main__":
    main()
