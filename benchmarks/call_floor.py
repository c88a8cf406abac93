"""Where the sandbox's CPU of one warm call goes (issue 18): the fork server
and the process forked for each call, in page faults and CPU per call, next
to what a fork of the same interpreter costs with nothing run in the child.

    python benchmarks/call_floor.py [--calls N] [--tree CHECKOUT]

Part 1 reads the real fork server's counters (``/proc/PID/stat``: its own
minor faults and CPU, and those of the call processes it reaped) around N
``c.call(tiny, 3)``.  Part 2 forks this process (cloudpickle imported, as the
server has it) N times per row: a child that exits at once through
``os.fork`` (Python's after-fork work: threading's and random's handlers,
the interpreter's locks) and through libc's ``fork`` (none of it: the
kernel's floor for this address space), then children doing the call's own
work.  Figures are per call; CPU in ms (clock ticks: 10 ms resolution,
hence the many calls).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys
from typing import Callable, Tuple

TICK = os.sysconf("SC_CLK_TCK")


def tiny(x: int) -> int:
    return x * x


def server_counters(pid: int) -> Tuple[int, int, float, float]:
    """(own minor faults, reaped children's, own CPU s, reaped children's CPU s) of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    minflt, cminflt = int(fields[7]), int(fields[8])
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return minflt, cminflt, utime + stime, cutime + cstime


def real_server(calls: int) -> None:
    import sandboxlib as sb

    with sb.Container() as box:
        for _ in range(200):
            box.call(tiny, 3)
        pid = box._calls.server._proc.pid  # the server's pid as this host sees it
        before = server_counters(pid)
        for _ in range(calls):
            box.call(tiny, 3)
        after = server_counters(pid)
    own_f, child_f, own_cpu, child_cpu = ((a - b) / calls for a, b in zip(after, before))
    print("| the real fork server, per c.call(tiny, 3) | faults | CPU ms |\n|---|---:|---:|")
    print(f"| server (fork, supervise, relay) | {own_f:.0f} | {own_cpu * 1e3:.3f} |")
    print(f"| the call's process (reaped by the server) | {child_f:.0f} | {child_cpu * 1e3:.3f} |")
    print(f"| total | {own_f + child_f:.0f} | {(own_cpu + child_cpu) * 1e3:.3f} |\n")


def forks(fork: Callable[[], int], child: Callable[[], object], calls: int) -> Tuple[float, float, float, float]:
    """(child faults, parent faults, child CPU ms, parent CPU ms) per fork."""
    c0, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        pid = fork()
        if pid == 0:
            try:
                child()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    c1, s1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)

    def cpu(a, b):
        return (a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime) * 1e3 / calls

    return (c1.ru_minflt - c0.ru_minflt) / calls, (s1.ru_minflt - s0.ru_minflt) / calls, cpu(c1, c0), cpu(s1, s0)


def fork_floor(calls: int) -> None:
    import pickle
    import threading

    import cloudpickle  # the server has it loaded

    from sandboxlib.calls import forkserver, framing

    server = forkserver.Server(0, 1, False)
    warm = forkserver._warm_request()
    call = framing.request("call", None, False, cloudpickle.dumps((tiny, (3,), {})))
    libc_fork = ctypes.PyDLL(None).fork  # holds the GIL; skips the interpreter's after-fork work
    rows = [
        ("os.fork, the child exits at once", os.fork, lambda: None),
        ("libc fork(), the child exits at once (no Python after-fork work)", libc_fork, lambda: None),
        ("libc fork() + threading's after-fork handler", libc_fork, threading._after_fork),
        ("os.fork + unpickle and run tiny(3)", os.fork, lambda: pickle.loads(framing.split_request(call)[1])[0](3)),
        ("os.fork + the call's work (server.run_request)", os.fork, lambda: server.run_request(call)),
        (
            "os.fork + rehearsal + the call (what a spare does)",
            os.fork,
            lambda: [server.run_request(r) for r in (warm, call)],
        ),
    ]
    print(
        "| forking this interpreter (cloudpickle loaded), per fork "
        "| child faults | parent faults | child CPU ms | parent CPU ms |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, fork, child in rows:
        cf, pf, cc, pc = forks(fork, child, calls)
        print(f"| {name} | {cf:.0f} | {pf:.0f} | {cc:.3f} | {pc:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tree", help="import sandboxlib from this checkout")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    real_server(args.calls)
    fork_floor(args.calls)
    print(f"\nLoad average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
