"""``Pool``: the Executor interface (submit, map, exceptions, cancellation,
shutdown), recycling of worn-out and failed sandboxes, nothing left behind.

Root and rootless (``runner``)."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import psutil
import pytest

import sandboxlib as sb


def _descendants() -> set:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _box():
    """Which sandbox ran the call (each container has its own hostname)."""
    return os.uname().nodename


def check_executor():
    before = _descendants()
    with sb.Pool(size=2, preload=["json"]) as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        squares = list(pool.map(pow, range(10), [2] * 10))
        future = pool.submit(divmod, 7, 0)
        error = future.exception(timeout=30)
        kw = pool.submit(dict, a=1).result(timeout=30)
        servers = {pool.submit(_box).result() for _ in range(20)}
        during = _descendants() - before
    after = _descendants() - before
    return squares, type(error).__name__, kw, len(servers) <= 2, len(during) >= 2, sorted(after)


def test_executor_interface(runner):
    squares, error, kw, bounded, started, left = runner(check_executor)
    assert squares == [i * i for i in range(10)]
    assert error == "ZeroDivisionError" and kw == {"a": 1}
    assert bounded and started and left == []


def check_recycling():
    with sb.Pool(size=1, max_uses=3) as pool:
        servers = [pool.submit(_box).result() for _ in range(7)]
        crashed = pool.submit(os._exit, 1).exception()
        after_crash = pool.submit(_box).result()
        timed_out = sb.Pool(size=1, timeout=0.5)
        try:
            late = timed_out.submit(time.sleep, 30).exception()
            fine = timed_out.submit(pow, 2, 5).result()
        finally:
            timed_out.shutdown()
    return servers, type(crashed).__name__, after_crash, type(late).__name__, fine


def test_sandboxes_are_recycled(runner):
    servers, crashed, after_crash, late, fine = runner(check_recycling)
    # Three calls per sandbox, then a fresh one.
    assert servers[0] == servers[1] == servers[2] and len({servers[2], servers[3], servers[6]}) == 3
    assert crashed == "CallCrashed" and after_crash not in servers
    assert late == "CallTimeout" and fine == 32


def _wait_for(event_path: str) -> str:
    while not os.path.exists(event_path):
        time.sleep(0.01)
    return "done"


def check_cancel_and_shutdown(tmp):
    gate = os.path.join(tmp, "gate")
    pool = sb.Pool(size=1, mounts=[sb.Mount.bind(tmp, tmp)])
    try:
        first = pool.submit(_wait_for, gate)
        queued = [pool.submit(pow, 2, i) for i in range(5)]
        cancelled = queued[0].cancel()
        deadline = time.monotonic() + 60
        while not first.running() and time.monotonic() < deadline:
            if first.done():
                first.result()  # it failed: say why
            time.sleep(0.01)
        running_cancel = first.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        with open(gate, "w"):
            pass
        result = first.result(timeout=30)
        states = [f.cancelled() for f in queued]
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(pow, 2, 2)
    finally:
        pool.shutdown()
    return cancelled, running_cancel, result, states


def test_cancel_and_shutdown(runner, shared_dir):
    tmp = str(shared_dir / f"pool-{runner.mode}")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o777)
    cancelled, running_cancel, result, states = runner(check_cancel_and_shutdown, tmp)
    assert cancelled and not running_cancel and result == "done" and states == [True] * 5


def check_concurrency():
    """Two sandboxes run two calls at once (each waits for the other)."""
    with sb.Pool(size=2) as pool:
        a = pool.submit(time.sleep, 1.0)
        b = pool.submit(time.sleep, 1.0)
        start = time.monotonic()
        a.result(), b.result()
        return time.monotonic() - start


def test_calls_run_in_parallel(runner):
    assert runner(check_concurrency) < 1.9


def test_options_are_checked():
    for kwargs, field in (
        ({"size": 0}, "size"),
        ({"size": True}, "size"),
        ({"max_uses": 0}, "max_uses"),
        ({"network": True}, "network"),
        ({"timeout": -1}, "timeout"),
        ({"preload": ["a b"]}, "preload"),
    ):
        with pytest.raises(sb.ConfigError, match=field):
            sb.Pool(**kwargs)
    with pytest.raises(sb.ConfigError, match="memory"):
        sb.Pool(memory="lots")


def test_a_dropped_pool_closes_its_sandboxes():
    before = _descendants()
    pool = sb.Pool(size=2)
    assert pool.submit(pow, 2, 2).result() == 4
    threads = list(pool._threads)
    del pool
    for thread in threads:
        thread.join(30)
    assert _descendants() - before == set()
    assert threading.active_count() >= 1


def test_network_takes_the_container_values():
    """Pool and sandboxed take Container's network values (sandboxed: bools too, an alias)."""
    assert sb.sandboxed(pow, network="host")._config["network"] is sb.Network.HOST
    assert sb.sandboxed(pow, network=True)._config["network"] is sb.Network.HOST
    assert sb.sandboxed(pow, network=sb.Network.NONE)._config["network"] is sb.Network.NONE
    with sb.Pool(size=1, network="host") as pool:
        assert pool._config["network"] is sb.Network.HOST
        assert pool.submit(pow, 2, 3).result() == 8
