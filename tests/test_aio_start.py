"""The asyncio front's starts (``sba.Container.start``, ``command=``, the
one-shot ``sba.run``): awaited on the loop (no executor thread, unless an
image is unpacked), and cancelled or closed at any of their waits without
leaving anything: processes, fds, records, cgroups, the loop's readers.
Also under a storm of cancellations, and when the owner is SIGKILLed
mid-storm.  Root and rootless (rootless: the newuidmap helpers' runs are
waits too)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import subprocess
import sys
import textwrap

import pytest

import sandboxlib as sb
import sandboxlib.aio as sba
import sandboxlib.aio.container as aio_container
from sandboxlib.aio.loop import StepDriver
from sandboxlib.runtime import statedir

from .imagekit import add_image, busybox_layers

QUIET = {"stdin": sb.DEVNULL}
KINDS = ["plain", "main", "one-shot", "image"]


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    def submit(self, *args, **kwargs):
        raise AssertionError("the start used the loop's executor")


def _records() -> list:
    try:
        return sorted(n for n in os.listdir(statedir.state_root()) if not n.startswith("."))
    except FileNotFoundError:
        return []


def _loop_fds() -> int:
    return len(asyncio.get_running_loop()._selector.get_map())  # type: ignore[attr-defined]


def _image_store(path: str, rootfs: str) -> str:
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(rootfs), ["bb:1"], config={"Cmd": ["sh"], "Env": ["PATH=/bin"]})
    return store.path


async def _use(kind: str, store: str):
    """Start one container of ``kind`` and use it; returns what it printed."""
    if kind == "one-shot":
        return (await sba.run(["echo", "one-shot"], **QUIET)).stdout
    if kind == "main":
        async with sba.Container(command=["sh", "-c", "echo main; sleep 1000"], log=True) as c:
            return (await c.run(["echo", "beside"], **QUIET)).stdout
    options = {"image": "bb:1", "image_store": store} if kind == "image" else {}
    async with sba.Container(**options) as c:
        return (await c.run(["echo", kind], **QUIET)).stdout


# -- on the loop -----------------------------------------------------------------------------
def check_start_on_the_loop():
    async def main():
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        return [await _use(kind, "") for kind in ("plain", "main", "one-shot")]

    return asyncio.run(main())


def test_start_is_awaited_on_the_loop(runner):
    """Without an executor (it raises), starts and one-shots work: nothing waits in a thread."""
    assert runner(check_start_on_the_loop) == [b"plain\n", b"beside\n", b"one-shot\n"]


# -- cancelled at each wait ---------------------------------------------------------------------
class _CancelAt(StepDriver):
    """A driver that cancels its task at its ``at``-th wait (counted over every driver)."""

    count = 0
    at = 0

    async def run(self, steps):
        return await super().run(_Counted(steps))


def _Counted(steps):
    """The steps, with the task cancelled just before the wait the count names."""
    value = None
    error = None
    while True:
        try:
            need = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as done:
            return done.value
        value = error = None
        _CancelAt.count += 1
        if _CancelAt.count == _CancelAt.at:
            asyncio.current_task().cancel()
        try:
            value = yield need
        except BaseException as err:  # noqa: BLE001 - passed on to the steps
            error = err


def check_cancel_at_each_wait(kind: str, store_dir: str, rootfs: str):
    """For k = 1, 2, ...: the k-th wait of the start is cancelled, until a start has fewer waits."""
    store = _image_store(store_dir, rootfs) if kind == "image" else ""
    aio_container.StepDriver = _CancelAt  # type: ignore[misc]

    async def main():
        outcomes = []
        fds = _loop_fds()
        for at in range(1, 100):
            _CancelAt.count, _CancelAt.at = 0, at
            try:
                out = await _use(kind, store)
                outcomes.append(out)
                break
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()
                outcomes.append("cancelled")
            left = (_records(), _loop_fds() - fds)
            if left != ([], 0):
                outcomes.append(left)
        return outcomes

    try:
        return asyncio.run(main())
    finally:
        aio_container.StepDriver = StepDriver  # type: ignore[misc]


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_at_each_wait_leaves_nothing(runner, kind, store_dir, busybox_root):
    """Every wait of a start (the image's unpack in its thread, the id-map helpers rootless, the
    set-up's end, a main command's replies, a command's) cancelled in turn: each raises
    CancelledError and leaves nothing (the leak checks); then one runs to its end."""
    outcomes = runner(check_cancel_at_each_wait, kind, store_dir, busybox_root)
    expected = {"plain": b"plain\n", "main": b"beside\n", "one-shot": b"one-shot\n", "image": b"image\n"}[kind]
    assert outcomes[-1] == expected and set(outcomes[:-1]) <= {"cancelled"}, outcomes
    # The waits: the set-up's end (not a one-shot's: its command is queued behind it), the main
    # command's start, the image's unpack; rootless, the two helpers' runs besides.
    waits = {"plain": 1, "main": 2, "one-shot": 0, "image": 2}[kind] + (2 if runner.rootless else 0)
    assert len(outcomes) >= waits + 1, outcomes


# -- closed during the start ----------------------------------------------------------------------
def check_close_during_start():
    async def main():
        found = []
        fds = _loop_fds()
        for kind in ("plain", "main"):
            c = sba.Container(command=["sleep", "1000"]) if kind == "main" else sba.Container()
            task = asyncio.create_task(c.start())
            await asyncio.sleep(0)  # the start waits for its first reply
            c.close()
            try:
                await task
                found.append("started")
            except sb.ContainerStateError as err:
                found.append(str(err))
            found.append(c.sync._closed)
        try:
            async with c:
                pass
        except sb.ContainerStateError:
            found.append("not again")
        found.append((_records(), _loop_fds() - fds))
        return found

    return asyncio.run(main())


def test_close_during_start(runner):
    closed = "the container was closed during its start"
    assert runner(check_close_during_start) == [closed, True, closed, True, "not again", ([], 0)]


# -- a storm of cancellations ------------------------------------------------------------------------
def check_cancellation_storm(seconds: float, store_dir: str, rootfs: str):
    """Many tasks start and use containers of every kind; a storm cancels random ones
    (and wait_for times others out) at random moments."""
    store = _image_store(store_dir, rootfs)
    rng = random.Random(13)

    async def one(i: int):
        kind = KINDS[i % len(KINDS)]
        if i % 3 == 0:
            return await asyncio.wait_for(_use(kind, store), rng.uniform(0, 0.02))
        return await _use(kind, store)

    async def main():
        fds = _loop_fds()
        outcomes = {"done": 0, "cancelled": 0, "timed out": 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        i = 0
        live: set = set()
        while loop.time() < deadline or live:
            while loop.time() < deadline and len(live) < 12:
                live.add(asyncio.create_task(one(i)))
                i += 1
            await asyncio.sleep(rng.uniform(0, 0.005))
            if live and rng.random() < 0.5:
                rng.choice(sorted(live, key=id)).cancel()
            done = {t for t in live if t.done()}
            live -= done
            for t in done:
                if t.cancelled():
                    outcomes["cancelled"] += 1
                elif isinstance(t.exception(), TimeoutError):
                    outcomes["timed out"] += 1
                elif t.exception() is not None:
                    raise t.exception()
                else:
                    outcomes["done"] += 1
        return outcomes, (_records(), _loop_fds() - fds)

    return asyncio.run(main())


def test_cancellation_storm(runner, store_dir, busybox_root):
    outcomes, left = runner(check_cancellation_storm, 4.0, store_dir, busybox_root)
    assert left == ([], 0)
    assert all(n > 0 for n in outcomes.values()), outcomes


# -- SIGKILL of the owner mid-storm -----------------------------------------------------------------
OWNER = textwrap.dedent("""
    import asyncio, sys, sandboxlib as sb, sandboxlib.aio as sba

    async def use(i):
        if i % 3 == 0:
            return await sba.run(["true"], stdin=sb.DEVNULL)
        options = {"command": ["sleep", "1000"]} if i % 3 == 1 else {}
        async with sba.Container(**options) as c:
            await c.run(["true"], stdin=sb.DEVNULL)

    async def main():
        done, i, live = 0, 0, set()
        while True:
            while len(live) < 12:
                live.add(asyncio.create_task(use(i))); i += 1
            finished, live = await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)
            done += len(finished)
            if done >= 20 and done - len(finished) < 20:
                print("going", flush=True)

    asyncio.run(main())
""")
# Between the owner and us: a subreaper, so that whatever the owner started and
# left is its child, reaped; it says once none is left.
REAPER = textwrap.dedent("""
    import ctypes, os, random, signal, subprocess, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    owner = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert owner.stdout.readline() == b"going\\n"
    time.sleep(random.uniform(0, 0.05))
    owner.kill(); owner.wait(); owner.stdout.close()
    reaped, deadline = 0, time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            print("all gone", reaped); break
        if pid:
            reaped += 1
        else:
            time.sleep(0.01)
    else:
        print("left:", subprocess.run(["ps", "--ppid", str(os.getpid())], capture_output=True, text=True).stdout)
""")


def check_sigkill_of_an_async_owner():
    out = subprocess.run(
        [sys.executable, "-c", REAPER, OWNER], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    left_by_owner = _records()
    statedir.sweep(statedir.state_root())  # (what the next start does, once a second)
    return out.stdout.split()[:2], out.stderr[-2000:], bool(left_by_owner), _records()


def test_sigkill_of_an_async_owner(runner):
    """The owner SIGKILLed amid a dozen starting and running containers: every process
    it started ends (its inits watch it), and the sweep removes its records and cgroups."""
    said, errors, had_records, left = runner(check_sigkill_of_an_async_owner)
    assert said == ["all", "gone"], (said, errors)
    assert left == [], left
