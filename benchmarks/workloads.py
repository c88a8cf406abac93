"""The five workloads of run_all.py.  Each returns rows for the table: a
workload name, a unit and one cell per tool (see table.py)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Callable, Dict, List

import _common
import peers
import psutil
from table import Cell, Row

import sandboxlib as sb

TRUE = "/bin/true"


def bwrap_argv() -> List[str]:
    """bwrap with the namespaces sandboxlib uses and a similar host view:
    /usr, /etc and the /bin, /lib* links or directories read-only, fresh
    /proc, /dev, /tmp."""
    argv = [
        "bwrap",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-ipc",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc",
        "/etc",
    ]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + top
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", TRUE]


def posix_spawn_true() -> None:
    os.waitpid(os.posix_spawn(TRUE, [TRUE], {}), 0)


def _latency_cells(samples: Dict[str, List[float]]) -> Dict[str, Cell]:
    return {tool: Cell.latency(values) for tool, values in samples.items()}


def _interleave(fns: Dict[str, Callable[[], object]], why: Dict[str, str], rounds: int, warmup: int) -> Dict[str, Cell]:
    cells = _latency_cells(_common.interleaved(fns, rounds=rounds, warmup=warmup))
    cells.update({tool: Cell.unavailable(reason) for tool, reason in why.items()})
    return cells


def start_to_exit(env, rounds: int, warmup: int) -> List[Row]:
    """1. A fresh fully isolated sandbox running /bin/true, start to exit."""
    bwrap = bwrap_argv()
    fns: Dict[str, Callable[[], object]] = {
        "sandboxlib": lambda: sb.run([TRUE]),
        "bwrap": lambda: peers.true_run(bwrap),
    }
    for tool in ("crun", "runc", "podman", "docker"):
        peer = env.peers.get(tool)
        if peer is not None:
            fns[tool] = peer.run_true
    fns["subprocess.run"] = lambda: subprocess.run([TRUE], check=True)
    fns["os.posix_spawn"] = posix_spawn_true
    why = {t: r for t, r in env.why.items() if t in ("crun", "runc", "podman", "docker")}
    cells = _interleave(fns, why, rounds, warmup)
    env.notes.append(
        "Roots: sandboxlib and bwrap run /bin/true in a host view (/usr, /etc and "
        "the /bin, /lib links read-only; fresh /proc, /dev, /tmp); crun, runc, "
        "podman and docker in a read-only busybox root; all with user (except "
        "docker), pid, mount, net, uts, ipc namespaces."
    )
    return [Row("1. start-to-exit of /bin/true, full isolation", "ms", cells)]


def exec_into_running(env, rounds: int, warmup: int) -> List[Row]:
    """2. /bin/true executed in an already running container."""
    fns: Dict[str, Callable[[], object]] = {}
    why: Dict[str, str] = {}
    with sb.Container() as box:
        fns["sandboxlib"] = lambda: box.run([TRUE])
        for tool in ("crun", "runc", "podman", "docker"):
            peer = env.peers.get(tool)
            if peer is None:
                why[tool] = env.why[tool]
                continue
            try:
                cid = peer.start_idle()
            except peers.PeerUnavailable as err:
                why[tool] = f"{tool}: {err}"
                continue
            argv = peer.exec_argv(cid)
            penv = getattr(peer, "env", None) or None
            fns[tool] = lambda argv=argv, penv=penv: subprocess.run(
                argv, stdin=peers.DEVNULL, stdout=peers.DEVNULL, env=penv, check=True
            )
        try:
            cells = _interleave(fns, why, rounds, warmup)
        finally:
            for tool in ("crun", "runc", "podman", "docker"):
                peer = env.peers.get(tool)
                if peer is not None:
                    peer.remove_all()
    return [Row("2. exec /bin/true in a running container", "ms", cells)]


def rate(fn: Callable[[], object], workers: int, seconds: float) -> int:
    """How many calls ``workers`` threads complete in ``seconds``."""
    counts = [0] * workers
    errors: List[BaseException] = []
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        try:
            while time.perf_counter() < stop:
                fn()
                counts[i] += 1
        except BaseException as err:  # a failing run must fail the benchmark, not skew it
            errors.append(err)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts)


def throughput(env, slices: int, seconds: float) -> List[Row]:
    """3. Sandboxes per second with 1 and 2 worker threads; the tools take
    turns in short slices so that drift hits them alike."""
    bwrap = bwrap_argv()
    fns = {"sandboxlib": lambda: sb.run([TRUE]), "bwrap": lambda: peers.true_run(bwrap)}
    if env.peers.get("crun") is not None:
        fns["crun"] = env.peers["crun"].run_true
    rows = []
    for workers in (1, 2):
        done = dict.fromkeys(fns, 0)
        for _ in range(slices):
            for tool, fn in fns.items():
                done[tool] += rate(fn, workers, seconds)
        cells = {tool: Cell.rate(n / (slices * seconds)) for tool, n in done.items()}
        if "crun" not in fns:
            cells["crun"] = Cell.unavailable(env.why["crun"])
        rows.append(Row(f"3. throughput, {workers} worker{'s' if workers > 1 else ''}", "sandboxes/s", cells))
    return rows


def scaling_sequence(total: int, window: int) -> Row:
    """5a. The 1st, 1,000th and ``total``th sb.run of one process: that run's
    latency, the p50 of the ``window`` runs up to it, and our fds and RSS
    then (flat means no leak)."""
    marks = sorted({1, min(1000, total), total})
    times: List[float] = []
    fds: Dict[int, int] = {}
    rss: Dict[int, float] = {}
    me = psutil.Process()
    for i in range(1, total + 1):
        start = time.perf_counter()
        sb.run([TRUE])
        times.append(time.perf_counter() - start)
        if i in marks:
            fds[i] = len(os.listdir("/proc/self/fd"))
            rss[i] = me.memory_info().rss / 2**20
    parts = []
    for n in marks:
        recent = sorted(times[max(0, n - window) : n])
        parts.append(
            f"#{n:,}: {times[n - 1] * 1e3:.2f} ms (p50 of last {len(recent)}: "
            f"{recent[len(recent) // 2] * 1e3:.2f}; our fds {fds[n]}, "
            f"RSS {rss[n]:.1f} MiB)"
        )
    return Row(
        f"5a. scaling: sb.run #{', #'.join(f'{n:,}' for n in marks)} in one process",
        "ms",
        {"sandboxlib": Cell.note("; ".join(parts))},
    )


def start_with_running(env, levels, rounds: int, warmup: int) -> List[Row]:
    """5b. Start-to-exit latency while N idle containers of the same tool run."""
    crun = env.peers.get("crun")
    rows = []
    for n in levels:
        boxes = [sb.Container().start() for _ in range(n)]
        try:
            for _ in range(n if crun else 0):
                crun.start_idle()
            fns: Dict[str, Callable[[], object]] = {"sandboxlib": lambda: sb.run([TRUE])}
            if crun:
                fns["crun"] = crun.run_true
            cells = _interleave(fns, {} if crun else {"crun": env.why["crun"]}, rounds, warmup)
        finally:
            for box in boxes:
                box.close()
            if crun:
                crun.remove_all()
        rows.append(Row(f"5b. start-to-exit with {n} idle container{'s' if n > 1 else ''} running", "ms", cells))
    return rows
