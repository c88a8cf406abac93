"""Pseudo-terminals (``tty=True``): the container's own devpts, the
terminal as the command's stdio and controlling terminal, the master end
in the host process (read, write, resize), bad input.  Root and rootless."""

from __future__ import annotations

import errno
import os
import re

import sandboxlib as sb
from sandboxlib.native.binding import Step


def _read_all(p: sb.Process) -> bytes:
    out = b""
    while True:
        chunk = p.read()
        if not chunk:
            return out
        out += chunk


def _until(p: sb.Process, marker: bytes) -> bytes:
    out = b""
    while marker not in out:
        chunk = p.read(4096)
        assert chunk, f"the terminal ended before {marker!r}: {out!r}"
        out += chunk
    return out


def check_spawn_terminal() -> dict:
    out = {}
    with sb.Container() as c:
        with c.spawn(["sh"], tty=(30, 100)) as p:
            p.write("PS1='$ '; stty size; tty; echo to-stderr >&2\n")
            out["first"] = _until(p, b"to-stderr\r\n$ ").decode()
            p.resize(50, 132)
            p.write(b"stty size\n")
            out["resized"] = _until(p, b"132\r\n").decode()
            p.write("ps -o pid,sid,tty,comm | grep ' sh$' | head -n 1; exit 5\n")
            out["rest"] = _read_all(p).decode()
            out["status"] = p.wait(30)
        r = c.run(["sh", "-c", "stty size; tty; echo err >&2; test -t 0 && test -t 1 && test -t 2"], tty=True)
        out["run"] = (r.exit_code, r.stdout, r.stderr)
        r = c.run(["sh", "-c", "read line; echo got=$line"], tty=(10, 20), input="typed\n", text=True)
        out["run input"] = (r.exit_code, r.stdout)
        with c.spawn(["true"], stdin=sb.DEVNULL, stdout=sb.DEVNULL) as plain:
            plain.wait(30)
            try:
                plain.read()
            except sb.ConfigError as err:
                out["no terminal"] = (err.field, str(err))
    r = sb.run(["sh", "-c", "tty; echo err >&2; exit 3"], tty=True)
    out["one-shot"] = (r.exit_code, r.stdout, r.stderr)
    return out


def test_spawn_terminal(runner):
    out = runner(check_spawn_terminal)
    first = out["first"].replace("\r\n", "\n")
    assert "30 100\n" in first and "/dev/pts/0\n" in first and "to-stderr\n" in first, first  # merged
    assert "50 132" in out["resized"]
    rest = out["rest"].split("\r\n")
    # sh leads its own session and has the terminal as its controlling terminal
    found = [m.groups() for m in map(re.compile(r"(\d+)\s+(\d+)\s+pts/0\s+sh$").search, rest) if m]
    assert len(found) == 1 and found[0][0] == found[0][1], rest
    assert out["status"] == 5
    assert out["run"] == (0, b"24 80\r\n/dev/pts/0\r\nerr\r\n", None)
    assert out["run input"] == (0, "typed\r\ngot=typed\r\n")  # the terminal echoes what is typed
    assert out["no terminal"][0] == "tty" and "tty=True" in out["no terminal"][1]
    assert out["one-shot"] == (3, b"/dev/pts/0\r\nerr\r\n", None)


def check_bad_input() -> dict:
    out = {}

    def catch(call):
        try:
            call()
        except sb.ConfigError as err:
            return err.field
        raise AssertionError("no ConfigError")

    with sb.Container() as c:
        with open(os.devnull, "rb") as f:
            out["stdin file"] = catch(lambda: c.spawn(["true"], tty=True, stdin=f))
        out["stdin PIPE"] = catch(lambda: c.spawn(["true"], tty=True, stdin=sb.PIPE))
        out["stdout PIPE spawn"] = catch(lambda: c.spawn(["true"], tty=True, stdout=sb.PIPE))
        out["stdin run"] = catch(lambda: c.run(["true"], tty=True, stdin=sb.DEVNULL))
        out["stderr STDOUT run"] = catch(lambda: c.run(["true"], tty=True, stderr=sb.STDOUT))
        out["zero rows"] = catch(lambda: c.spawn(["true"], tty=(0, 80)))
        out["negative cols"] = catch(lambda: c.run(["true"], tty=(24, -1)))
        out["not a size"] = catch(lambda: c.run(["true"], tty="yes"))
        with c.spawn(["sleep", "100"], tty=True) as p:
            out["resize negative"] = catch(lambda: p.resize(-1, 80))
            out["resize zero"] = catch(lambda: p.resize(24, 0))
            out["resize huge"] = catch(lambda: p.resize(70000, 80))
            p.kill()
            p.wait(30)
        out["one-shot stdin"] = catch(lambda: sb.run(["true"], tty=True, stdin=sb.PIPE))
        out["still runs"] = c.run(["echo", "ok"]).stdout
    return out


def test_bad_input(runner):
    out = runner(check_bad_input)
    assert out == {
        "stdin file": "stdin",
        "stdin PIPE": "stdin",
        "stdout PIPE spawn": "stdout",
        "stdin run": "stdin",
        "stderr STDOUT run": "stderr",
        "zero rows": "rows",
        "negative cols": "cols",
        "not a size": "tty",
        "resize negative": "rows",
        "resize zero": "cols",
        "resize huge": "rows",
        "one-shot stdin": "stdin",
        "still runs": b"ok\n",
    }


def check_tty_step_fails() -> dict:
    """The init's failure to open the terminal comes back as (step TTY, errno)."""
    out = {}
    with sb.Container() as c:
        c._fault = (int(Step.TTY), errno.EIO)
        for how, call in (("spawn", lambda: c.spawn(["true"], tty=True)), ("run", lambda: c.run(["true"], tty=True))):
            try:
                call()
            except sb.SetupError as err:
                out[how] = (err.step, err.errno, err.field)
        c._fault = None
        out["after"] = c.run(["tty"], tty=True).stdout
    one = sb.Container()
    one._fault = (int(Step.TTY), errno.EIO)
    try:
        sb.run(["true"], tty=True, container=one)
    except sb.SetupError as err:
        out["one-shot"] = (err.step, err.errno, err.field)
    return out


def test_tty_step_fails(runner):
    out = runner(check_tty_step_fails)
    assert out == {
        "spawn": ("TTY", errno.EIO, "tty"),
        "run": ("TTY", errno.EIO, "tty"),
        "after": b"/dev/pts/0\r\n",
        "one-shot": ("TTY", errno.EIO, "tty"),
    }


def check_timeout_kills() -> tuple:
    with sb.Container() as c:
        r = c.run(["sh", "-c", "echo started; sleep 100"], tty=True, timeout=0.5)
        return r.timed_out, r.stdout


def test_timeout_with_terminal(runner):
    assert runner(check_timeout_kills) == (True, b"started\r\n")
