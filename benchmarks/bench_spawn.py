"""Start-to-exit of /bin/true with full isolation, interleaved in one process:
sandboxlib's ``sb.run`` vs bubblewrap, ``subprocess.run`` and ``os.posix_spawn``,
plus ``c.run`` into a running container.

    python benchmarks/bench_spawn.py [--rounds N] [--no-record]

Targets (issue 2): sb.run p50 at most half of bwrap's; c.run p50 under 1 ms.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import sandboxlib as sb  # noqa: E402

TRUE = "/bin/true"
BWRAP = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", TRUE]


def posix_spawn_true() -> None:
    pid = os.posix_spawn(TRUE, [TRUE], {})
    os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not shutil.which("bwrap"):
        sys.exit("bwrap is not installed (apt-get install bubblewrap)")
    with sb.Container() as box:
        workloads = {
            "sb.run([/bin/true]) (full isolation, host view)": lambda: sb.run([TRUE]),
            "bwrap --unshare-all --ro-bind / / --proc --dev /bin/true": lambda: subprocess.run(BWRAP, check=True),
            "subprocess.run([/bin/true])": lambda: subprocess.run([TRUE], check=True),
            "os.posix_spawn + waitpid": posix_spawn_true,
            "c.run([/bin/true]) in a running container": lambda: box.run([TRUE]),
        }
        samples = _common.interleaved(workloads, rounds=args.rounds)
    stats = {name: _common.percentiles(v) for name, v in samples.items()}
    names = list(workloads)
    sb_p50, bwrap_p50 = stats[names[0]][0], stats[names[1]][0]
    rows = []
    for name in names:
        ratio = f"{stats[name][0] / sb_p50:.2f}x sb.run" if name != names[0] else "1"
        rows.append((name, stats[name], ratio))
    body = _common.table(rows) + (
        f"\n\nbwrap/sb.run p50 ratio: **{bwrap_p50 / sb_p50:.2f}** (target: at least 2.00); "
        f"c.run p50: **{stats[names[4]][0]:.3f} ms** (target: under 1 ms). "
        f"{args.rounds} interleaved rounds after 20 warm-up rounds; "
        f"{_common.tool_version(['bwrap', '--version'])}.")
    print(body)
    if not args.no_record:
        _common.record("bench_spawn: start-to-exit of /bin/true", body)


if __name__ == "__main__":
    main()
