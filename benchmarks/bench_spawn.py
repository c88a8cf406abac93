"""Start-to-exit of /bin/true with full isolation, interleaved in one process:
sandboxlib's ``sb.run`` vs bubblewrap, ``subprocess.run`` and ``os.posix_spawn``,
plus ``c.run`` into a running container.

    python benchmarks/bench_spawn.py [--rounds N] [--no-record]

Targets (issue 2): sb.run p50 at most half of bwrap's; c.run p50 under 1 ms.

Two reference rows show what the kernel alone costs here (floor.c, called
through ctypes): vfork+exec of /bin/true, and the same clone()d into the
seven namespaces sb.run makes - no mounts, no id maps, no init, no Python.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb

TRUE = "/bin/true"
BWRAP = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", TRUE]


def posix_spawn_true() -> None:
    pid = os.posix_spawn(TRUE, [TRUE], {})
    os.waitpid(pid, 0)


def load_floor(tmp: str) -> ctypes.CDLL:
    """floor.c as a shared library (gcc)."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    library = os.path.join(tmp, "floor.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    return ctypes.CDLL(library)


def floor_call(lib: ctypes.CDLL, namespaces: int):
    def run() -> None:
        if lib.floor_run(namespaces) != 0:
            raise RuntimeError("floor.c: /bin/true failed")

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not shutil.which("bwrap"):
        sys.exit("bwrap is not installed (apt-get install bubblewrap)")
    with sb.Container() as box, tempfile.TemporaryDirectory() as tmp:
        floor = load_floor(tmp)
        workloads = {
            "sb.run([/bin/true]) (full isolation, host view)": lambda: sb.run([TRUE]),
            "bwrap --unshare-all --ro-bind / / --proc --dev /bin/true": lambda: subprocess.run(BWRAP, check=True),
            "subprocess.run([/bin/true])": lambda: subprocess.run([TRUE], check=True),
            "os.posix_spawn + waitpid": posix_spawn_true,
            "c.run([/bin/true]) in a running container": lambda: box.run([TRUE]),
            "floor: vfork + exec /bin/true (C)": floor_call(floor, 0),
            "floor: clone into the 7 namespaces + exec /bin/true (C)": floor_call(floor, 1),
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
        f"The kernel's floor with sb.run's namespaces is {stats[names[6]][0]:.3f} ms, "
        f"{stats[names[6]][0] / bwrap_p50:.2f} of bwrap's p50; half of bwrap leaves "
        f"{bwrap_p50 / 2 - stats[names[6]][0]:.3f} ms above it for everything else. "
        f"{args.rounds} interleaved rounds after 20 warm-up rounds; "
        f"{_common.tool_version(['bwrap', '--version'])}."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_spawn: start-to-exit of /bin/true", body)


if __name__ == "__main__":
    main()
