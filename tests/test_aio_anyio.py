"""``sandboxlib.aio`` under anyio: on its asyncio backend and on trio (where
the waits are ``aio/anyio_loop.py``'s).  Results, streams by line, stdin,
``call``, one-shots and main commands; anyio's cancel scopes (``fail_after``,
``move_on_after``) kill what a command started and cancel starts at any
point, also many at once, leaving nothing behind.  Root and rootless."""

from __future__ import annotations

import random
import time

import anyio
import pytest

import sandboxlib as sb
import sandboxlib.aio as sba

from .conftest import RUNTIME_PROCESSES

QUIET = {"stdin": sb.DEVNULL}
BACKENDS = ["asyncio", "trio"]


def _sleepers(c: sba.Container) -> list:
    return [p.name for p in c.sync.top() if p.name not in RUNTIME_PROCESSES]


async def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.02)
    return True


def check_api(backend: str):
    async def main():
        async with sba.Container() as c:
            r = await c.run(["sh", "-c", "echo out; echo err >&2; exit 3"], **QUIET)
            fed = await c.run(["cat"], input="héllo", text=True)
            p = await c.spawn(
                ["sh", "-c", "echo one; read x; echo two $x; echo three"],
                stdin=sb.PIPE,
                stdout=sb.PIPE,
                stderr=sb.DEVNULL,
            )
            first = await p.stdout.readline()
            p.stdin.write(b"2\n")
            await p.stdin.drain()
            rest = [line async for line in p.stdout]
            code = await p.wait()
            p.close()
            q = await c.spawn(["sh", "-c", "head -c 300000 /dev/zero; echo done >&2"], stdout=sb.PIPE, stderr=sb.PIPE)
            out, err = await q.communicate()
            q.close()
            value = await c.call(sorted, [3, 1, 2])
            try:
                await c.invoke(time.sleep, (1000,), timeout=0.3)
                late = None
            except sb.CallTimeout:
                late = "CallTimeout"
        one_shot = await sba.run(["sh", "-c", "echo one; exit 2"], **QUIET)
        async with sba.Container(command=["sh", "-c", "echo main"], log=True) as m:
            logged = [data for _, data in m.sync.logs(follow=True)]
        return [
            (r.exit_code, r.stdout, r.stderr, r.verdict),
            fed.stdout,
            (first, rest, code),
            (len(out), err),
            (value, late),
            (one_shot.exit_code, one_shot.stdout),
            logged,
        ]

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_api(runner, backend):
    assert runner(check_api, backend) == [
        (3, b"out\n", b"err\n", sb.Verdict.EXITED),
        "héllo",
        (b"one\n", [b"two 2\n", b"three\n"], 0),
        (300000, b"done\n"),
        ([1, 2, 3], "CallTimeout"),
        (2, b"one\n"),
        [b"main\n"],
    ]


def check_cancel_scopes(backend: str, escape: bool):
    tree = "setsid sleep 1000 & sleep 1000" if escape else "sleep 1000 & sleep 1000"

    async def main():
        async with sba.Container() as c:
            started = time.monotonic()
            with anyio.move_on_after(0.5) as scope:
                await c.run(["sh", "-c", tree], **QUIET)
            took = time.monotonic() - started
            gone = await _until(lambda: _sleepers(c) == [])
            try:
                with anyio.fail_after(0.5):
                    await c.call(time.sleep, 1000)
                failed = False
            except TimeoutError:
                failed = True
            after = (await c.run(["echo", "ok"], **QUIET)).stdout
            return scope.cancelled_caught, took < 5, gone, failed, after

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_scopes_kill_the_tree(runner, backend):
    assert runner(check_cancel_scopes, backend, not runner.rootless) == (True, True, True, True, b"ok\n")


def check_start_storm(backend: str, rounds: int):
    """Starts, one-shots and main-command starts under random move_on_after deadlines, a dozen at once."""
    rng = random.Random(3)

    async def use(i: int, limit: float, counts: dict):
        with anyio.move_on_after(limit) as scope:
            if i % 3 == 0:
                await sba.run(["true"], **QUIET)
            else:
                options = {"command": ["sleep", "1000"]} if i % 3 == 1 else {}
                async with sba.Container(**options) as c:
                    await c.run(["true"], **QUIET)
        counts["cancelled" if scope.cancelled_caught else "done"] += 1

    async def main():
        counts = {"done": 0, "cancelled": 0}
        for _ in range(rounds):
            async with anyio.create_task_group() as group:
                for i in range(12):
                    group.start_soon(use, i, rng.uniform(0, 0.03) if i % 2 else 10.0, counts)
        return counts

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancelled_starts_leave_nothing(runner, backend):
    counts = runner(check_start_storm, backend, 4)
    assert counts["done"] >= 24 and counts["cancelled"] > 0, counts


def check_many(backend: str, containers: int, commands: int):
    async def main():
        boxes = [sba.Container() for _ in range(containers)]
        results = []

        async def one(i: int):
            results.append(await boxes[i % containers].run(["true"], **QUIET))

        try:
            async with anyio.create_task_group() as group:
                for b in boxes:
                    group.start_soon(b.start)
            async with anyio.create_task_group() as group:
                for i in range(commands):
                    group.start_soon(one, i)
        finally:
            for b in boxes:
                b.close()
        return sorted({(r.exit_code, r.signal) for r in results}), len(results)

    return anyio.run(main, backend=backend)


def test_many_commands_under_trio(runner):
    assert runner(check_many, "trio", 5, 200) == ([(0, None)], 200)


def check_pool_under_trio():
    async def main():
        try:
            await sba.Pool(size=1).call(abs, -1)
        except sb.UnsupportedError as err:
            return str(err)

    return anyio.run(main, backend="trio")


def test_pool_is_asyncio_only():
    assert "asyncio" in check_pool_under_trio()


def check_main_command(backend: str):
    """A main command awaited: wait() (with a timeout that lets it run), logs() followed."""

    async def main():
        async with sba.Container(command=["sleep", "1000"]) as c:
            try:
                await c.wait(timeout=0.2)
                early = None
            except sb.TimeoutExpired:
                early = "TimeoutExpired"
            running = c.sync.running
        script = "echo a; echo b >&2; sleep 0.3; echo c; exit 5"
        async with sba.Container(command=["sh", "-c", script], log=True) as c:
            records = [record async for record in c.logs(follow=True)]
            r = await c.wait()
            tail = [record async for record in c.logs(tail=1)]
        return early, running, sorted(records), (r.exit_code, r.verdict), tail

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_main_command_awaited(runner, backend):
    assert runner(check_main_command, backend) == (
        "TimeoutExpired",
        True,
        [("stderr", b"b\n"), ("stdout", b"a\n"), ("stdout", b"c\n")],
        (5, sb.Verdict.EXITED),
        [("stdout", b"c\n")],
    )
