"""CPU per sandbox: what one ``sb.run(["/bin/true"])`` costs the machine, next
to bubblewrap, crun and the C floor (issue 16).

    python benchmarks/bench_cpu.py [--runs N] [--blocks B] [--no-record]

Per run, for each tool:

- host: the calling Python process (user + sys, ``RUSAGE_SELF``);
- container: every process the run started and reaped (``RUSAGE_CHILDREN``:
  sbx-init and its command; bwrap or crun and their containers);
- kthreads: kernel threads (kworkers, RCU, ksoftirqd: the children of
  kthreadd), from their ``/proc/PID/stat``: namespace teardown and RCU work
  done after the run, on other CPUs;
- elsewhere: the whole machine's busy time (``/proc/stat``) minus host and
  container, minus an idle baseline measured in between (the issue's
  measure; with other work on the machine it carries their noise, which the
  kthreads column does not).

The tools take turns in blocks of runs (``--blocks`` rounds of ``--runs``
each), so that drift hits them alike.  Then the issue's other two figures,
side by side in the same run: sandboxes per second with 2 worker threads,
sb.run and bwrap taking turns in 1 s slices; and the p50 of sb.run next to
the C floor's, interleaved.  Runs as root (crun needs it), in a private
mount namespace of its own, as run_all.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import _common  # noqa: E402
import bench_spawn  # noqa: E402
import peers  # noqa: E402
import run_all  # noqa: E402
import workloads  # noqa: E402

import sandboxlib as sb  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
FIELDS = ("host", "container", "kthreads", "elsewhere")


def machine_busy() -> float:
    """Seconds of non-idle CPU time of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle, iowait
    return (sum(v[:8]) - idle) / TICK  # user..steal (guest is inside user)


def kthread_cpu() -> float:
    """Seconds of CPU of every kernel thread (kthreadd's children) alive now."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == b"2" or name == "2":  # ppid kthreadd
            total += int(fields[11]) + int(fields[12])
    return total / TICK


class Meter:
    """Accumulates the four parts of CPU over the blocks of one tool."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(FIELDS, 0.0)
        self.runs = 0
        self.wall = 0.0

    def block(self, fn: Callable[[], object], runs: int, idle_rate: Dict[str, float]) -> None:
        s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        m0, k0, t0 = machine_busy(), kthread_cpu(), time.perf_counter()
        for _ in range(runs):
            fn()
        t1, m1, k1 = time.perf_counter(), machine_busy(), kthread_cpu()
        s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = t1 - t0
        host = (s1.ru_utime - s0.ru_utime) + (s1.ru_stime - s0.ru_stime)
        container = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        self.totals["host"] += host
        self.totals["container"] += container
        self.totals["kthreads"] += (k1 - k0) - idle_rate["kthreads"] * wall
        self.totals["elsewhere"] += (m1 - m0) - host - container - idle_rate["machine"] * wall
        self.runs += runs
        self.wall += wall

    def per_run_ms(self) -> Dict[str, float]:
        out = {k: v / self.runs * 1e3 for k, v in self.totals.items()}
        out["total"] = out["host"] + out["container"] + max(out["elsewhere"], out["kthreads"])
        out["wall"] = self.wall / self.runs * 1e3
        return out


def idle_rates(seconds: float) -> Dict[str, float]:
    """Busy CPU-seconds per second of the machine and of kernel threads while we sleep."""
    m0, k0, t0 = machine_busy(), kthread_cpu(), time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    return {"machine": (machine_busy() - m0) / wall, "kthreads": (kthread_cpu() - k0) / wall}


def throughput(fns: Dict[str, Callable[[], object]], slices: int) -> Dict[str, float]:
    """Sandboxes per second with 2 worker threads, the tools taking turns in 1 s slices."""
    done = dict.fromkeys(fns, 0)
    for _ in range(slices):
        for tool, fn in fns.items():
            done[tool] += workloads.rate(fn, 2, 1.0)
    return {tool: n / slices for tool, n in done.items()}


def table(results: Dict[str, Dict[str, float]]) -> str:
    base = results.get("bwrap")
    lines = [
        "| tool | host ms | container ms | kthreads ms | elsewhere ms | total ms | total / bwrap | wall ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, r in results.items():
        ratio = f"{r['total'] / base['total']:.2f}x" if base else "-"
        lines.append(
            f"| {tool} | {r['host']:.3f} | {r['container']:.3f} | {r['kthreads']:.3f} | "
            f"{r['elsewhere']:.3f} | {r['total']:.3f} | {ratio} | {r['wall']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per block")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per tool")
    parser.add_argument("--slices", type=int, default=5, help="1 s throughput slices per tool")
    parser.add_argument("--rounds", type=int, default=300, help="interleaved rounds of the latency pair")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--note", default="", help="a remark for the record (e.g. machine load)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_cpu.py needs root (crun)")
    run_all.enter_private_mount_ns()
    workdir = tempfile.mkdtemp(prefix="sbxcpu-")
    os.chmod(workdir, 0o755)
    env = run_all.Env(workdir)
    try:
        rootfs = peers.busybox_rootfs(os.path.join(workdir, "rootfs"))
        env.add("crun", peers.OciRuntime, "crun", workdir, rootfs, f"/sbxbench{os.getpid()}-crun")
        floor = bench_spawn.load_floor(workdir)
        bwrap = workloads.bwrap_argv()
        fns: Dict[str, Callable[[], object]] = {"sb.run": lambda: sb.run([bench_spawn.TRUE])}
        if shutil.which("bwrap"):
            fns["bwrap"] = lambda: peers.true_run(bwrap)
        if "crun" in env.peers:
            fns["crun"] = env.peers["crun"].run_true
        fns["floor (clone 7 ns + exec, C)"] = bench_spawn.floor_call(floor, 1)
        for fn in fns.values():  # warm-up
            for _ in range(10):
                fn()
        meters = {tool: Meter() for tool in fns}
        idle: List[Dict[str, float]] = []
        for _ in range(args.blocks):
            idle.append(idle_rates(0.3))
            rate = {k: min(i[k] for i in idle) for k in idle[0]}  # the quietest seen: noise only adds
            for tool, fn in fns.items():
                meters[tool].block(fn, args.runs, rate)
        results = {tool: m.per_run_ms() for tool, m in meters.items()}
        rates = throughput({t: fns[t] for t in ("sb.run", "bwrap") if t in fns}, args.slices)
        floor_name = "floor (clone 7 ns + exec, C)"
        latency = _common.interleaved({t: fns[t] for t in ("sb.run", floor_name)}, rounds=args.rounds)
    finally:
        run_all.cleanup(env)
    sb_total, bwrap_total = results["sb.run"]["total"], results.get("bwrap", {}).get("total")
    body = table(results) + "\n\n"
    if bwrap_total:
        body += f"Total CPU per sb.run / bwrap's: **{sb_total / bwrap_total:.2f}** (target: at most 0.50). "
    body += (
        "total = host + container + the larger of kthreads and elsewhere (both count kernel work outside "
        f"our processes). {args.blocks} blocks of {args.runs} runs per tool, taking turns; idle baseline "
        f"{min(i['machine'] for i in idle):.3f} busy CPU/s (machine), "
        f"{min(i['kthreads'] for i in idle) * 1e3:.2f} ms/s (kthreads). "
        f"{_common.tool_version(['bwrap', '--version'])}; {_common.tool_version(['crun', '--version'])}."
    )
    if "bwrap" in rates:
        body += (
            f"\n\nThroughput, 2 workers: sb.run **{rates['sb.run']:.0f}/s**, bwrap {rates['bwrap']:.0f}/s: "
            f"**{rates['sb.run'] / rates['bwrap']:.2f}x** bwrap's (target: at least 2.00); "
            f"{args.slices} slices of 1 s per tool, taking turns."
        )
    sb_p50 = _common.percentiles(latency["sb.run"])[0]
    floor_p50 = _common.percentiles(latency[floor_name])[0]
    body += (
        f"\n\nStart-to-exit p50: sb.run **{sb_p50:.3f} ms**, the C floor {floor_p50:.3f} ms: "
        f"**{sb_p50 / floor_p50:.2f}x** the floor (target: at most 2.00); {args.rounds} interleaved rounds."
    )
    if args.note:
        body += f" {args.note}"
    if "crun" in env.why:
        body += f" {env.why['crun']}"
    print(body)
    if not args.no_record:
        _common.record("bench_cpu: CPU per sandbox", body)


if __name__ == "__main__":
    main()
