"""``sandboxlib.aio.Pool``: warm sandboxes on the event loop (call, submit,
map, errors), recycling as ``sandboxlib.Pool`` does, the same options,
cancelled calls killed in their sandbox (also a storm of them), close;
nothing left behind.  Root and rootless (``runner``)."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import time

import psutil
import pytest

import sandboxlib as sb
import sandboxlib.aio as sba


def _descendants() -> set:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _box():
    """Which sandbox ran the call (each container has its own hostname)."""
    return os.uname().nodename


def _pythons() -> int:
    """Python processes below us: the fork servers and their calls."""
    count = 0
    for p in psutil.Process().children(recursive=True):
        try:
            count += p.name().startswith("python")
        except psutil.NoSuchProcess:  # ended since the listing (a cancelled call's)
            pass
    return count


def check_calls():
    before = _descendants()

    async def main():
        async with sba.Pool(size=2, preload=["json"]) as pool:
            value = await pool.call(sorted, [3, 1, 2])
            squares = await pool.map(pow, range(10), [2] * 10)
            future = pool.submit(divmod, 7, 0)
            try:
                await future
                error = None
            except ZeroDivisionError:
                error = "ZeroDivisionError"
            kw = await pool.call(dict, a=1)
            boxes = set(await asyncio.gather(*(pool.call(_box) for _ in range(20))))
            during = _descendants() - before
        return value, squares, error, kw, len(boxes), len(during) >= 2

    out = asyncio.run(main())
    return out + (sorted(_descendants() - before),)


def test_calls(runner):
    value, squares, error, kw, boxes, started, left = runner(check_calls)
    assert value == [1, 2, 3] and squares == [i * i for i in range(10)]
    assert error == "ZeroDivisionError" and kw == {"a": 1}
    assert boxes <= 2 and started and left == []


def check_recycling():
    async def main():
        async with sba.Pool(size=1, max_uses=3) as pool:
            servers = [await pool.call(_box) for _ in range(7)]
            try:
                await pool.call(os._exit, 1)
                crashed = None
            except sb.CallCrashed:
                crashed = "CallCrashed"
            after_crash = await pool.call(_box)
        async with sba.Pool(size=1, timeout=0.5) as timed:
            try:
                await timed.call(time.sleep, 30)
                late = None
            except sb.CallTimeout:
                late = "CallTimeout"
            fine = await timed.call(pow, 2, 5)
        return servers, crashed, after_crash, late, fine

    return asyncio.run(main())


def test_sandboxes_are_recycled(runner):
    servers, crashed, after_crash, late, fine = runner(check_recycling)
    assert servers[0] == servers[1] == servers[2] and len({servers[2], servers[3], servers[6]}) == 3
    assert crashed == "CallCrashed" and after_crash not in servers
    assert late == "CallTimeout" and fine == 32


def check_cancelled_calls():
    """A cancelled call (task.cancel(), asyncio.timeout()) is killed in its sandbox;
    the pool serves on.  Then a storm: many calls, random ones cancelled."""
    rng = random.Random(7)

    async def main():
        async with sba.Pool(size=2) as pool:
            await pool.map(abs, [1, 2])  # both warm
            servers = _pythons()
            task = asyncio.create_task(pool.call(time.sleep, 1000))
            await asyncio.sleep(0.3)
            task.cancel()
            try:
                await task
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            try:
                async with asyncio.timeout(0.3):
                    await pool.call(time.sleep, 1000)
                timed_out = False
            except TimeoutError:
                timed_out = True
            deadline = time.monotonic() + 10
            while _pythons() > servers - 2 and time.monotonic() < deadline:  # their servers were killed
                await asyncio.sleep(0.02)
            killed = _pythons() <= servers - 2
            after = await pool.call(pow, 2, 3)
            # the storm
            calls = [asyncio.create_task(pool.call(time.sleep, rng.uniform(0, 0.02))) for _ in range(60)]
            for _ in range(30):
                await asyncio.sleep(rng.uniform(0, 0.01))
                rng.choice(calls).cancel()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            kinds = sorted({type(o).__name__ for o in outcomes})
            last = await pool.call(len, "abc")
        return cancelled, timed_out, killed, after, kinds, last

    return asyncio.run(main())


def test_cancelled_calls_are_killed(runner):
    cancelled, timed_out, killed, after, kinds, last = runner(check_cancelled_calls)
    assert (cancelled, timed_out, killed, after, last) == (True, True, True, 8, 3)
    assert set(kinds) <= {"NoneType", "CancelledError"} and "CancelledError" in kinds, kinds


def check_close():
    before = _descendants()

    async def main():
        pool = sba.Pool(size=2)
        first = await pool.call(pow, 2, 2)
        queued = [pool.submit(time.sleep, 0.2) for _ in range(4)]
        await pool.aclose()  # runs what was submitted
        ran = [f.result() for f in queued]
        try:
            pool.submit(pow, 2, 2)
            refused = False
        except RuntimeError:
            refused = True
        other = sba.Pool(size=1)
        running = other.submit(time.sleep, 1000)
        await asyncio.sleep(0.5)
        other.close()  # cancels the calls (running or queued) and the sandboxes' tasks
        try:
            await running
            stopped = False
        except asyncio.CancelledError:
            stopped = True
        await other.aclose()  # returns once the sandboxes are closed
        return first, ran, refused, stopped

    out = asyncio.run(main())
    return out + (sorted(_descendants() - before),)


def test_close(runner):
    assert runner(check_close) == (4, [None] * 4, True, True, [])


def test_options_are_pools():
    """The same options as sandboxlib.Pool (one definition), checked the same way."""
    assert inspect.signature(sba.Pool.__init__) == inspect.signature(sb.Pool.__init__)
    for kwargs, field in (
        ({"size": 0}, "size"),
        ({"size": True}, "size"),
        ({"max_uses": 0}, "max_uses"),
        ({"network": True}, "network"),
        ({"timeout": -1}, "timeout"),
        ({"preload": ["a b"]}, "preload"),
        ({"memory": "lots"}, "memory"),
    ):
        for pool in (sb.Pool, sba.Pool):
            with pytest.raises(sb.ConfigError, match=field):
                pool(**kwargs)
