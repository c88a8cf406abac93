"""The fork server's spare process: forked ahead of time from the clean
server, it reads its one request from the host's channel itself.  Each call
still starts from the server's state (nothing of a previous call, nor of the
spare's rehearsal), cannot read the channel, and a spare lost while it waited
costs nothing but a new server.

Root and rootless (``runner``): the checks are module-level functions."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import sandboxlib as sb


def _in_container(check, *args):
    with sb.Container() as c:
        return check(c, *args)


def _server_children(c, server: int) -> list:
    """Pids of the fork server's children, as the container's /proc shows them."""
    script = f'for p in /proc/[0-9]*; do [ "$(cut -d" " -f4 $p/stat)" = {server} ] && echo ${{p#/proc/}}; done'
    return sorted(int(p) for p in c.run(["sh", "-c", script], stdin=sb.DEVNULL).stdout.split())


def _ids() -> tuple:
    return os.getpid(), os.getppid()


def _wait_for_children(c, server: int, count: int, exclude: tuple = ()) -> list:
    """The server's children but ``exclude`` (a call's process, which lingers
    until the server reaps it, after forking the next spare), once there are
    ``count`` of them."""
    deadline = time.monotonic() + 10  # the next spare is forked after the answer
    while True:  # the list that had ``count`` entries: a second read may catch a fork or a reap
        children = [p for p in _server_children(c, server) if p not in exclude]
        if len(children) == count or time.monotonic() >= deadline:
            return children
        time.sleep(0.02)


# -- a fresh process per call, forked before the call existed -------------------------------------
def _dirty() -> int:
    import json

    os.environ["SBX_MARKER"] = "1"
    json.marker = 1
    sys.modules["sbx_marker"] = json
    globals()["_seen"] = True
    return os.getpid()


def _traces() -> list:
    import json

    return [
        name
        for name, there in (
            ("environ", "SBX_MARKER" in os.environ),
            ("module", hasattr(json, "marker")),
            ("sys.modules", "sbx_marker" in sys.modules),
            ("globals", "_seen" in globals()),
        )
        if there
    ]


def check_prefork(c):
    c.preload(["json"])
    server = c.call(os.getppid)
    spares = _wait_for_children(c, server, 1)
    ran_in = c.call(_dirty)
    return spares == [ran_in], c.call(_traces), c.call(os.getpid) != ran_in


def test_a_call_runs_in_the_process_forked_before_it_and_sees_nothing_of_the_last(runner):
    prefork, traces, fresh = runner(_in_container, check_prefork)
    assert prefork and traces == [] and fresh


def _channel_state() -> dict:
    """What the call's process holds of the server's channel to the host."""
    import gc

    server = next(o for o in gc.get_objects() if type(o).__name__ == "Server")
    held = []
    for fd in (server.chan_in, server.chan_out):
        try:
            os.fstat(fd)
            held.append(fd)
        except OSError:
            pass
    return {"held": held, "warm": server.warm_request is not None}


def check_channel(c):
    return c.call(_channel_state)


def test_the_call_cannot_read_or_write_the_channel(runner):
    assert runner(_in_container, check_channel) == {"held": [], "warm": True}


# -- a spare that dies while it waits ------------------------------------------------------------
def check_lost_spare(c):
    caller, server = c.call(_ids)
    (spare,) = _wait_for_children(c, server, 1, exclude=(caller,))
    c.run(["kill", "-9", str(spare)], stdin=sb.DEVNULL)
    value = c.call(pow, 2, 10)  # the server gave up; the call ran on a new one
    caller, new_server = c.call(_ids)
    (new_spare,) = _wait_for_children(c, new_server, 1, exclude=(caller,))
    return value, new_server != server, c.call(pow, 3, 2), _server_children(c, server), new_spare != spare


def test_a_spare_killed_while_waiting_costs_a_new_server_not_the_call(runner):
    value, replaced, later, old_children, new_spare = runner(_in_container, check_lost_spare)
    assert (value, replaced, later, old_children, new_spare) == (1024, True, 9, [], True)


def check_server_gone_before_the_call(c):
    """The spare died a while ago: its server has ended too, the request meets a closed pipe."""
    caller, server = c.call(_ids)
    (spare,) = _wait_for_children(c, server, 1, exclude=(caller,))
    c.run(["kill", "-9", str(spare)], stdin=sb.DEVNULL)
    deadline = time.monotonic() + 10  # the server notices its lost spare and ends
    while c.run(["kill", "-0", str(server)], stdin=sb.DEVNULL).ok and time.monotonic() < deadline:
        time.sleep(0.02)
    return c.call(pow, 2, 5), c.call(os.getppid) != server


def test_after_a_lost_spare_the_next_call_is_retried_once(runner):
    assert runner(_in_container, check_server_gone_before_the_call) == (32, True)


# -- timeouts, crashes and what is left ---------------------------------------------------------
def _sleep_in_group(seconds):
    os.system(f"sleep {seconds} &")
    time.sleep(seconds)


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def check_many_calls(c):
    server = c.call(os.getppid)
    pids = set()
    for i in range(30):
        if i % 10 == 3:
            with pytest.raises(sb.CallCrashed) as crash:
                c.call(_kill_self)
            assert crash.value.signal == signal.SIGKILL
        elif i % 10 == 7:
            with pytest.raises(sb.CallTimeout):
                c.invoke(_sleep_in_group, (30,), timeout=0.2)
        else:
            pids.add(c.call(os.getpid))
    children = _wait_for_children(c, server, 1)
    names = sorted(c.run(["sh", "-c", "cat /proc/[0-9]*/comm"], stdin=sb.DEVNULL).stdout.decode().split())
    return len(pids), c.call(os.getppid) == server, len(children), [n for n in names if n == "sleep"]


def test_crashes_and_timeouts_keep_the_server_and_leave_nothing(runner):
    distinct, same_server, children, sleeps = runner(_in_container, check_many_calls)
    assert (distinct, same_server, children, sleeps) == (24, True, 1, [])


def test_back_to_back_calls_each_get_a_fresh_process():
    with sb.Container() as c:
        pids = [c.call(os.getpid) for _ in range(50)]
    assert len(set(pids)) == 50


@pytest.mark.parametrize("size", [0, 1, 5, 4091, 65536, 3 << 20])
def test_requests_of_any_size_are_read_whole(size):
    with sb.Container() as c:
        blob = os.urandom(size)
        assert c.call(len, blob) == size and c.call(bytes, blob) == blob


def _forge_start():
    """The call writes a second 'taken, no timeout' message to the server."""
    import struct

    message = b"SN"  # S + the safe encoding of None
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack(">I", len(message)) + message)
        except OSError:
            pass
    time.sleep(30)


def check_forged_start(c):
    start = time.monotonic()
    with pytest.raises(sb.CallTimeout):
        c.invoke(_forge_start, timeout=0.3)
    return time.monotonic() - start < 2, c.call(pow, 2, 2)  # the server's own clock, not the host's grace


def test_a_call_cannot_cancel_its_timeout(runner):
    assert runner(_in_container, check_forged_start) == (True, 4)


def _random() -> float:
    import random

    return random.random()


def test_each_call_draws_its_own_random_numbers():
    with sb.Container() as c:
        draws = [c.call(_random) for _ in range(5)]
    assert len(set(draws)) == 5  # each process reseeds after fork, as os.fork's handlers do


def test_a_pids_limit_with_no_room_for_two_call_processes():
    # init, its launcher (it forked the server), server and one call's process:
    # the next spare is forked only once the last call's process is reaped
    # (else it is forked first)
    with sb.Container(limits=sb.Limits(pids=4)) as c:
        pids = [c.call(os.getpid) for _ in range(5)]
    assert len(set(pids)) == 5
