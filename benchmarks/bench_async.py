"""The asyncio front's throughput, and a terminal's time to first byte
(issue 13), side by side in one process:

- 1,000 ``run(["/bin/true"])`` over 20 running containers: ``sandboxlib.aio``
  with ``asyncio.gather``, the sync API on a 20-thread pool (also with a
  ``timeout``, which puts each run in a cgroup of its own, as every aio
  run is: a cancelled run kills its whole tree), and, as the
  baseline without containers, ``asyncio.create_subprocess_exec`` of
  ``/bin/true`` (1,000 gathered).  Rounds interleaved in a shuffled order;
  each row also says this process's CPU per command (all its threads: the
  loop's one, or the pool's twenty; the inits and commands not included).
- time to first byte of ``printf x`` spawned in a running container with
  ``tty=True`` (read from the terminal) vs ``stdout=PIPE``.

    python benchmarks/bench_async.py [--rounds N] [--commands N] [--ttfb-rounds N] [--no-record]

Targets: aio throughput at least the thread pool's and at least 0.5x of bare
``create_subprocess_exec``; the terminal's first byte within 0.2 ms of the pipe's.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb
import sandboxlib.aio as sba

TRUE = ["/bin/true"]
QUIET = {"stdin": sb.DEVNULL}
CONTAINERS = 20


async def _start_all(boxes) -> None:
    await asyncio.gather(*(b.start() for b in boxes))


async def _aio_batch(boxes, commands: int) -> None:
    results = await asyncio.gather(*(boxes[i % len(boxes)].run(TRUE, **QUIET) for i in range(commands)))
    assert all(r.ok for r in results)


def _threads_batch(pool, boxes, commands: int, timeout=None) -> None:
    results = list(pool.map(lambda i: boxes[i % len(boxes)].run(TRUE, timeout=timeout, **QUIET), range(commands)))
    assert all(r.ok for r in results)


async def _bare_one() -> int:
    proc = await asyncio.create_subprocess_exec(*TRUE, stdin=asyncio.subprocess.DEVNULL)
    return await proc.wait()


async def _bare_batch(commands: int) -> None:
    codes = await asyncio.gather(*(_bare_one() for _ in range(commands)))
    assert codes == [0] * commands


def throughput(rounds: int, commands: int) -> tuple:
    """(name -> commands per second of each round, name -> this process's CPU
    seconds per command of each round: the host side, all its threads)."""
    loop = asyncio.new_event_loop()
    aio_boxes = [sba.Container() for _ in range(CONTAINERS)]
    sync_boxes = [sb.Container() for _ in range(CONTAINERS)]
    try:
        loop.run_until_complete(_start_all(aio_boxes))
        for b in sync_boxes:
            b.start()
        with concurrent.futures.ThreadPoolExecutor(CONTAINERS) as pool:
            workloads = {
                "sandboxlib.aio, asyncio.gather": lambda: loop.run_until_complete(_aio_batch(aio_boxes, commands)),
                "sync API on a 20-thread pool": lambda: _threads_batch(pool, sync_boxes, commands),
                # (as every aio run: in a cgroup of its own, which a timeout gives a sync run)
                "sync API on a 20-thread pool, timeout=3600": lambda: _threads_batch(pool, sync_boxes, commands, 3600),
                "bare asyncio.create_subprocess_exec": lambda: loop.run_until_complete(_bare_batch(commands)),
            }
            for fn in workloads.values():  # warm-up
                fn()
            rates: dict = {name: [] for name in workloads}
            cpu: dict = {name: [] for name in workloads}
            order = list(workloads.items())
            for _ in range(rounds):
                random.Random(len(rates[order[0][0]])).shuffle(order)
                for name, fn in order:
                    start, cpu_start = time.perf_counter(), time.process_time()
                    fn()
                    rates[name].append(commands / (time.perf_counter() - start))
                    cpu[name].append((time.process_time() - cpu_start) / commands)
    finally:
        for b in aio_boxes:
            b.close()
        for b in sync_boxes:
            b.close()
        loop.close()
    return rates, cpu


def first_byte(rounds: int) -> dict:
    """name -> seconds from spawn to the first byte of output, per round."""
    with sb.Container() as c:

        def tty() -> None:
            p = c.spawn(["printf", "x"], tty=True)
            assert p.read(1) == b"x"
            p.wait()
            p.close()

        def pipe() -> None:
            p = c.spawn(["printf", "x"], stdin=sb.DEVNULL, stdout=sb.PIPE)
            assert p.stdout.read(1) == b"x"
            p.wait()
            p.close()

        return _common.interleaved({"tty=True, first byte": tty, "stdout=PIPE, first byte": pipe}, rounds=rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--ttfb-rounds", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rates, cpu = throughput(args.rounds, args.commands)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    aio, threads, _threads_in_cgroups, bare = medians.values()
    samples = first_byte(args.ttfb_rounds)
    stats = {name: _common.percentiles(values) for name, values in samples.items()}
    tty_p50, pipe_p50 = (stats[name][0] for name in samples)
    lines = [
        f"| throughput, {args.commands} `run([/bin/true])` | median commands/s | min | max | ratio "
        "| host CPU us/command |"
    ]
    lines.append("|---|---:|---:|---:|---|---:|")
    for name, values in rates.items():
        ratio = "1" if name.startswith("sandboxlib.aio") else f"aio {aio / medians[name]:.2f}x"
        host = statistics.median(cpu[name]) * 1e6
        lines.append(
            f"| {name} | {medians[name]:,.0f} | {min(values):,.0f} | {max(values):,.0f} | {ratio} | {host:,.0f} |"
        )
    ttfb = _common.table(
        [(name, stats[name], "1" if "tty" in name else f"{stats[name][0] - tty_p50:+.3f} ms") for name in samples]
    )
    body = (
        "\n".join(lines) + "\n\n" + ttfb + "\n\n"
        f"aio/thread pool: **{aio / threads:.2f}x** (target: at least 1); aio/bare create_subprocess_exec: "
        f"**{aio / bare:.2f}x** (target: at least 0.5); terminal first byte p50 **{tty_p50 - pipe_p50:+.3f} ms** "
        f"from the pipe's (target: within 0.2 ms).  {CONTAINERS} containers per front; {args.rounds} interleaved "
        f"throughput rounds after one warm-up each, {args.ttfb_rounds} interleaved first-byte rounds.  "
        f"Load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} (the benchmark's own load included)."
    )
    print(body)
    if not args.no_record:
        _common.record("bench_async: the asyncio front's throughput, a terminal's first byte", body)


if __name__ == "__main__":
    main()
