"""``tty=True`` on the awaited front: ``run``, ``spawn`` (``await p.read()``,
``await p.write()``, ``p.resize()``) and the one-shot ``sba.run``, on asyncio
and on trio (anyio); a cancelled terminal run kills its tree; bad input is
refused as the sync front refuses it.  Root and rootless."""

from __future__ import annotations

import tempfile
import time

import anyio
import pytest

import sandboxlib as sb
import sandboxlib.aio as sba

from .conftest import RUNTIME_PROCESSES

BACKENDS = ["asyncio", "trio"]


def _sleepers(c: sba.Container) -> list:
    return [p.name for p in c.sync.top() if p.name not in RUNTIME_PROCESSES]


async def _read_until(p, marker: bytes) -> bytes:
    out = b""
    while marker not in out:
        chunk = await p.read()
        if not chunk:
            break
        out += chunk
    return out


async def _read_all(p) -> bytes:
    out = b""
    while chunk := await p.read():
        out += chunk
    return out


def check_terminals(backend: str):
    async def main():
        async with sba.Container() as c:
            r = await c.run(["sh", "-c", "tty; stty size; echo err >&2; exit 4"], tty=(30, 100))
            typed = await c.run(["sh", "-c", "read x; echo got $x"], tty=True, input="hello\n", text=True)
            p = await c.spawn(["sh"], tty=True)
            await p.write("stty size\n")
            first = await _read_until(p, b"24 80")
            p.resize(40, 120)
            await p.write(b"stty size; exit 3\n")
            shown = first + await _read_all(p)
            code = await p.wait()
            p.close()
            with anyio.move_on_after(0.5) as scope:
                await c.run(["sh", "-c", "sleep 1000 & sleep 1000"], tty=True)
            deadline = time.monotonic() + 10
            while _sleepers(c) and time.monotonic() < deadline:
                await anyio.sleep(0.02)
            killed = (scope.cancelled_caught, _sleepers(c))
        one_shot = await sba.run(["tty"], tty=True)
        return (
            (r.exit_code, r.stdout.replace(b"\r", b"").split(b"\n"), r.stderr),
            typed.stdout.replace("\r", "").splitlines()[-1],
            (b"24 80" in shown, b"40 120" in shown, code),
            killed,
            (one_shot.exit_code, one_shot.stdout.strip()),
        )

    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_terminals(runner, backend):
    run, typed, spawned, killed, one_shot = runner(check_terminals, backend)
    assert run == (4, [b"/dev/pts/0", b"30 100", b"err", b""], None)
    assert typed == "got hello"
    assert spawned == (True, True, 3)
    assert killed == (True, [])
    assert one_shot == (0, b"/dev/pts/0")


def check_bad_input():
    async def main():
        found = []
        async with sba.Container() as c:
            with tempfile.TemporaryFile() as f:
                for attempt in (
                    lambda: c.run(["true"], tty=True, stdin=f),
                    lambda: c.spawn(["true"], tty=(-1, 80)),
                    lambda: c.spawn(["true"], tty=True, stdout=sb.PIPE),
                ):
                    try:
                        await attempt()
                        found.append(None)
                    except sb.ConfigError as err:
                        found.append(err.field)
            p = await c.spawn(["true"], stdin=sb.DEVNULL)
            try:
                await p.read()
            except sb.ConfigError as err:
                found.append(err.field)
            await p.wait()
            p.close()
        return found

    return anyio.run(main)


def test_bad_input(runner):
    assert runner(check_bad_input) == ["stdin", "rows", "stdout", "tty"]
