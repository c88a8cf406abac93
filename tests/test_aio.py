"""The asyncio front (``sandboxlib.aio``): results, streams by line,
cancellation and timeouts that kill what a command started, many commands
on one loop, errors re-raised, ``call`` awaited.  Root and rootless
(``runner``); each check runs its own ``asyncio.run``."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import sandboxlib as sb
import sandboxlib.aio as sba

from .conftest import RUNTIME_PROCESSES

NO_STDIN = {"stdin": sb.DEVNULL}


def _sleepers(c: sba.Container) -> list:
    """The container's processes but its own (the init, its launchers and forkers)."""
    return [p.name for p in c.sync.top() if p.name not in RUNTIME_PROCESSES]


async def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- results -------------------------------------------------------------------------
def check_results():
    async def main():
        async with sba.Container() as c:
            r = await c.run(["sh", "-c", "echo out; echo err >&2; exit 3"], **NO_STDIN)
            fed = await c.run(["cat"], input="héllo", text=True)
            env = await c.run(["sh", "-c", "echo $A; pwd"], env={"A": "b"}, cwd="/tmp", **NO_STDIN)
            killed = await c.run(["sh", "-c", "kill -9 $$"], **NO_STDIN)
        one_shot = await sba.run(["sh", "-c", "echo one; exit 2"], **NO_STDIN)
        return [
            (r.exit_code, r.stdout, r.stderr, r.verdict, isinstance(r, sb.Result)),
            (fed.stdout, fed.ok),
            env.stdout,
            (killed.signal, killed.verdict),
            (one_shot.exit_code, one_shot.stdout, one_shot.verdict),
        ]

    return asyncio.run(main())


def test_results(runner):
    """The same Result as the sync API: exit, output, text, env and cwd, signals, one-shots."""
    assert runner(check_results) == [
        (3, b"out\n", b"err\n", sb.Verdict.EXITED, True),
        ("héllo", True),
        b"b\n/tmp\n",
        (signal.SIGKILL, sb.Verdict.SIGNALED),
        (2, b"one\n", sb.Verdict.EXITED),
    ]


# -- streaming by line -------------------------------------------------------------------
def check_streaming():
    async def main():
        async with sba.Container() as c:
            p = await c.spawn(
                ["sh", "-c", "echo one; read x; echo two $x; echo three"],
                stdin=sb.PIPE,
                stdout=sb.PIPE,
                stderr=sb.DEVNULL,
            )
            first = await asyncio.wait_for(p.stdout.readline(), 10)
            running = p.returncode is None  # the line came while the command waits for input
            p.stdin.write(b"2\n")
            await p.stdin.drain()
            rest = [line async for line in p.stdout]
            code = await p.wait()
            p.close()
            return first, running, rest, code, p.pid is not None

    return asyncio.run(main())


def test_streaming_by_line(runner):
    assert runner(check_streaming) == (b"one\n", True, [b"two 2\n", b"three\n"], 0, True)


# -- cancellation and timeouts kill what the command started --------------------------
def check_cancel_kills_tree(escape: bool):
    """``escape``: a grandchild in its own session (only a cgroup kill takes it)."""
    tree = "setsid sleep 1000 & sleep 1000" if escape else "sleep 1000 & sleep 1000"

    async def main():
        async with sba.Container() as c:
            task = asyncio.create_task(c.run(["sh", "-c", tree], **NO_STDIN))
            assert await _until(lambda: _sleepers(c).count("sleep") == 2), _sleepers(c)
            task.cancel()
            try:
                await task
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            gone = await _until(lambda: _sleepers(c) == [])
            # asyncio.timeout() as a timeout: TimeoutError, and the tree is gone too
            started = time.monotonic()
            try:
                async with asyncio.timeout(0.3):
                    await c.run(["sh", "-c", tree], **NO_STDIN)
                timeout_error = False
            except TimeoutError:
                timeout_error = True
            took = time.monotonic() - started
            gone_too = await _until(lambda: _sleepers(c) == [])
            after = (await c.run(["echo", "ok"], **NO_STDIN)).stdout
            return cancelled, gone, timeout_error, took < 5, gone_too, after

    return asyncio.run(main())


def test_cancellation_kills_the_tree(runner):
    """Root: the command's own cgroup goes, setsid grandchildren included;
    rootless without a delegated cgroup: its process group (as Container.run's timeout)."""
    assert runner(check_cancel_kills_tree, not runner.rootless) == (True, True, True, True, True, b"ok\n")


def check_timeouts():
    async def main():
        async with sba.Container() as c:
            started = time.monotonic()
            r = await c.run(["sh", "-c", "echo before; sleep 1000 & sleep 1000"], timeout=0.3, **NO_STDIN)
            took = time.monotonic() - started
            gone = await _until(lambda: _sleepers(c) == [])
            try:
                await c.run(["true"], timeout=-1)
                bad = None
            except sb.ConfigError as err:
                bad = err.field
        started = time.monotonic()
        one_shot = await sba.run(["sleep", "1000"], timeout=0.3, **NO_STDIN)
        return (
            (r.timed_out, r.verdict, r.signal, r.stdout, 0.3 <= took < 5),
            gone,
            bad,
            (one_shot.timed_out, one_shot.verdict, time.monotonic() - started < 5),
        )

    return asyncio.run(main())


def test_timeouts(runner):
    assert runner(check_timeouts) == (
        (True, sb.Verdict.TIMEOUT, signal.SIGKILL, b"before\n", True),
        True,
        "timeout",
        (True, sb.Verdict.TIMEOUT, True),
    )


# -- many commands on one loop --------------------------------------------------------------
def check_many_concurrent(containers: int, commands: int):
    async def main():
        boxes = [sba.Container() for _ in range(containers)]
        try:
            await asyncio.gather(*(b.start() for b in boxes))
            started = time.monotonic()
            results = await asyncio.gather(*(boxes[i % containers].run(["true"], **NO_STDIN) for i in range(commands)))
            took = time.monotonic() - started
        finally:
            for b in boxes:
                b.close()
        return sorted({(r.exit_code, r.verdict) for r in results}), len(results), took

    return asyncio.run(main())


def test_thousand_concurrent_runs(runner):
    """1,000 concurrent ``await c.run(["true"])`` across 20 containers on one
    loop, in bounded time; the leak checks (here and in the rootless worker)
    see nothing left behind."""
    kinds, count, took = runner(check_many_concurrent, 20, 1000)
    assert (kinds, count) == ([(0, sb.Verdict.EXITED)], 1000)
    assert took < 60, took


def check_close_during_runs():
    async def main():
        fds = set(os.listdir("/proc/self/fd"))
        c = await sba.Container().start()
        try:
            runs = [asyncio.ensure_future(c.run(["sh", "-c", "echo up; exec sleep 60"], **NO_STDIN)) for _ in range(20)]
            assert await _until(lambda: _sleepers(c).count("sleep") == 20)
        finally:
            c.close()  # while every run reads its pipes through the container's fd hub
        started = time.monotonic()
        outcomes = await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 30)
        ends = {(o.signal, o.stdout) if isinstance(o, sb.Result) else type(o).__name__ for o in outcomes}
        took = time.monotonic() - started
        await asyncio.sleep(0)  # (a callback of the loop may still hold an fd for this turn)
        return ends, took, sorted(set(os.listdir("/proc/self/fd")) - fds)

    return asyncio.run(main())


def test_close_during_runs(runner):
    """Closing a container while its runs wait on their pipes (watched as one
    reader of the loop, its epoll) ends every run at once, killed, and the
    epoll is closed once the last run let go, while the loop still runs."""
    ends, took, left_open = runner(check_close_during_runs)
    assert ends <= {(signal.SIGKILL, b"up\n"), "ContainerStateError"} and ends, ends
    assert took < 10, took
    assert left_open == [], left_open  # (the hub's epoll too, with the loop still running)


# -- errors re-raised -----------------------------------------------------------------------
def check_errors():
    async def main():
        found = []
        async with sba.Container() as c:
            for coro in (
                lambda: c.run(["/no/such/command"], **NO_STDIN),
                lambda: c.spawn(["/no/such/command"], **NO_STDIN),
                lambda: c.run("ls"),
                lambda: c.run(["true"], input=b"x", stdin=sb.DEVNULL),
                lambda: c.run(["false"], check=True, **NO_STDIN),
            ):
                try:
                    await coro()
                    found.append(None)
                except sb.SandboxError as err:
                    found.append(type(err).__name__)
            with sb.Container() as sync:  # the sync front raises the same
                try:
                    sync.run(["/no/such/command"], **NO_STDIN)
                except sb.SandboxError as err:
                    found.append(type(err).__name__)
        try:
            await c.run(["true"])
        except sb.ContainerStateError:
            found.append("closed")
        return found

    return asyncio.run(main())


def test_errors_reraised(runner):
    found = runner(check_errors)
    assert found[0] == found[1] == found[5] and found[0] is not None, found
    assert found[2:5] + found[6:] == ["ConfigError", "ConfigError", "CommandFailed", "closed"], found


# -- call awaited ----------------------------------------------------------------------------
def _fails():
    raise KeyError("inside")


def check_call():
    async def main():
        async with sba.Container() as c:
            value = await c.call(sorted, [3, 1, 2])
            together = await asyncio.gather(c.call(pow, 2, 10), c.call(len, "abc"))
            try:
                await c.call(_fails)
                raised = None
            except KeyError as err:
                raised = str(err)
            return value, together, raised

    return asyncio.run(main())


def test_call_awaited(runner):
    assert runner(check_call) == ([1, 2, 3], [1024, 3], "'inside'")


def check_call_cancelled():
    """A cancelled call (and one under asyncio.timeout) kills the fork server's
    process running it; the next call gets a new server."""

    async def main():
        async with sba.Container() as c:
            first = await c.call(os.getpid)  # the server's first call, in the container's pid namespace
            task = asyncio.create_task(c.call(time.sleep, 1000))
            await asyncio.sleep(0.5)
            task.cancel()
            try:
                await task
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            try:
                async with asyncio.timeout(0.5):
                    await c.call(time.sleep, 1000)
                timed_out = False
            except TimeoutError:
                timed_out = True
            gone = await _until(lambda: [p for p in c.sync.top() if "python" in p.name] == [])
            timeout = None
            try:
                await c.invoke(time.sleep, (1000,), timeout=0.3)
            except sb.CallTimeout:
                timeout = "CallTimeout"
            again = await c.call(sum, [1, 2])
            return first > 0, cancelled, timed_out, gone, timeout, again

    return asyncio.run(main())


def test_call_cancelled_kills_it(runner):
    assert runner(check_call_cancelled) == (True, True, True, True, "CallTimeout", 3)
