"""Round trip of a Python call into a sandbox, interleaved in one process:
``c.call(noop)`` on a warm container, ``pool.submit(noop).result()``, a
``multiprocessing`` pool (forkserver start method, no isolation) doing the
same, and a cold ``sb.run([python, "-c", "pass"])``; then the throughput of
a 2-sandbox ``sb.Pool`` against a 2-process multiprocessing pool.

    python benchmarks/bench_call.py [--rounds N] [--calls N] [--no-record]

Targets (issue 5): warm call p50 under 2 ms and at most the multiprocessing
pool's round trip; pool throughput with 2 workers above 1,000 calls/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb


def noop() -> None:
    return None


def throughput(submit, calls: int) -> float:
    """Calls per second with ``calls`` submitted at once."""
    start = time.perf_counter()
    for future in [submit(noop) for _ in range(calls)]:
        future.get() if hasattr(future, "get") else future.result()
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    mp = multiprocessing.get_context("forkserver")
    with sb.Container() as box, sb.Pool(size=2) as pool, mp.Pool(2) as mp_pool:
        workloads = {
            "c.call(noop), warm container": lambda: box.call(noop),
            "sb.Pool(2).submit(noop).result()": lambda: pool.submit(noop).result(),
            "multiprocessing forkserver Pool(2).apply_async(noop).get()": lambda: mp_pool.apply_async(noop).get(),
            "sb.run([python, -c, pass]) (cold)": lambda: sb.run([sys.executable, "-c", "pass"]),
        }
        samples = _common.interleaved(workloads, rounds=args.rounds)
        rates = {
            "sb.Pool(size=2)": throughput(pool.submit, args.calls),
            "multiprocessing forkserver Pool(2)": throughput(lambda fn: mp_pool.apply_async(fn), args.calls),
        }
    stats = {name: _common.percentiles(v) for name, v in samples.items()}
    names = list(workloads)
    call_p50, mp_p50 = stats[names[0]][0], stats[names[2]][0]
    rows = [
        (name, stats[name], "1" if name == names[0] else f"{stats[name][0] / call_p50:.2f}x c.call") for name in names
    ]
    rate_lines = "\n".join(f"| {name} | {rate:,.0f} |" for name, rate in rates.items())
    body = (
        _common.table(rows) + "\n\n| throughput, " + f"{args.calls} calls submitted at once | calls/s |\n"
        "|---|---:|\n" + rate_lines + "\n\n"
        f"Warm call p50: **{call_p50:.3f} ms** (target: under 2 ms and at most the multiprocessing "
        f"pool's {mp_p50:.3f} ms); pool throughput **{rates['sb.Pool(size=2)']:,.0f} calls/s** "
        f"(target: above 1,000).  {args.rounds} interleaved rounds after 20 warm-up rounds; "
        f"load average at the end: {os.getloadavg()[0]:.2f} (the benchmark's own load included)."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_call: a Python call into a sandbox", body)


if __name__ == "__main__":
    main()
