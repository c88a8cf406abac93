"""4. Peak RSS (VmHWM) of the host-side processes that each idle container
keeps alive, summed per container, for N idle containers of each tool."""

from __future__ import annotations

from typing import Dict, List

import psutil
from peers import PeerUnavailable
from table import Cell, Row

import sandboxlib as sb


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of ``pid`` and all its descendants, in MiB."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total_kib = 0
    for proc in procs:
        with open(f"/proc/{proc.pid}/status") as f:
            total_kib += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return total_kib / 1024


def _sandboxlib(n: int) -> tuple[List[float], float]:
    """Per container: its init (PID 1, the only process of an idle container).
    Also returns the growth of our own RSS per container (the library's share)."""
    me = psutil.Process()
    before = me.memory_info().rss
    boxes = [sb.Container().start() for _ in range(n)]
    try:
        per_box = [_peak_rss_mib(box.pid) for box in boxes]
        growth = (me.memory_info().rss - before) / n / 2**20
    finally:
        for box in boxes:
            box.close()
    return per_box, growth


def _peer(peer, n: int, start) -> List[float]:
    """``start(peer)`` starts one idle container and returns the pid of its
    top host-side process."""
    try:
        pids = [start(peer) for _ in range(n)]
        return [_peak_rss_mib(pid) for pid in pids]
    finally:
        peer.remove_all()


def _crun(crun, n: int, notes: List[str]) -> List[float]:
    """crun under conmon, as podman runs it; without conmon, crun's own detach."""
    try:
        return _peer(crun, n, lambda p: p.start_monitored()[1])
    except PeerUnavailable as err:
        notes.append(
            f"crun without a monitor ({err}): counted the container's `sleep`, "
            "`crun run --detach` leaves no process of its own."
        )
        return _peer(crun, n, lambda p: p.container_pid(p.start_idle()))


def idle_memory(env, n: int) -> List[Row]:
    cells: Dict[str, Cell] = {}
    per_box, growth = _sandboxlib(n)
    cells["sandboxlib"] = Cell.sizes(per_box)
    crun, podman = env.peers.get("crun"), env.peers.get("podman")
    measures = {
        "crun": lambda: _crun(crun, n, env.notes),
        "podman": lambda: _peer(podman, n, lambda p: p.conmon_pid(p.start_idle())),
    }
    for tool, peer in (("crun", crun), ("podman", podman)):
        if peer is None:
            cells[tool] = Cell.unavailable(env.why[tool])
            continue
        try:
            cells[tool] = Cell.sizes(measures[tool]())
        except PeerUnavailable as err:
            cells[tool] = Cell.unavailable(f"{tool}: {err}")
    env.notes.append(
        f"Memory ({n} idle containers): sandboxlib counts its init (PID 1, the only process of "
        f"an idle container); the calling Python process grew by {growth:.3f} MiB per container. "
        "crun counts conmon (started as podman starts it) and the container's `sleep`. "
        "podman counts the same two for a container it started (runtime crun); podman has no "
        "daemon. The idle process of the peers is a static busybox `sleep`."
    )
    return [Row(f"4. peak RSS per idle container ({n} running)", "MiB", cells)]
