"""4. Peak RSS (VmHWM) of the host-side processes that each idle container
keeps alive, summed per container, for N idle containers of each tool."""
from __future__ import annotations

from typing import Dict, List

import psutil

from table import Cell, Row

import sandboxlib as sb


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of ``pid`` and all its descendants, in MiB."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total_kib = 0
    for proc in procs:
        with open(f"/proc/{proc.pid}/status") as f:
            total_kib += next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return total_kib / 1024


def _sandboxlib(n: int) -> "tuple[List[float], float]":
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


def _peer(peer, n: int, root_pid) -> List[float]:
    try:
        names = [peer.start_idle() for _ in range(n)]
        return [_peak_rss_mib(root_pid(peer, name)) for name in names]
    finally:
        peer.close() if peer.name in ("crun", "runc") else peer.remove_all()


def idle_memory(env, n: int) -> List[Row]:
    cells: Dict[str, Cell] = {}
    per_box, growth = _sandboxlib(n)
    cells["sandboxlib"] = Cell.sizes(per_box)
    crun, podman = env.peers.get("crun"), env.peers.get("podman")
    if crun is not None:
        cells["crun"] = Cell.sizes(_peer(crun, n, lambda p, c: p.container_pid(c)))
    else:
        cells["crun"] = Cell.unavailable(env.why["crun"])
    if podman is not None:
        cells["podman"] = Cell.sizes(_peer(podman, n, lambda p, c: p.conmon_pid(c)))
    else:
        cells["podman"] = Cell.unavailable(env.why["podman"])
    env.notes.append(
        f"Memory ({n} idle containers): sandboxlib counts its init (PID 1, the only process of "
        f"an idle container); the calling Python process grew by {growth:.3f} MiB per container. "
        "crun counts the container's process (`sleep`): `crun run --detach` leaves no monitor "
        "behind. podman counts conmon (its per-container monitor; the runtime is crun) and "
        "the container's `sleep`; podman itself has no daemon.")
    return [Row(f"4. peak RSS per idle container ({n} running)", "MiB", cells)]
