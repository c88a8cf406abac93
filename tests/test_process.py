"""Process hygiene and streams: what a command inherits (fds, signals,
environment, limits, identity), how it ends, its orphans, timeouts, and its
stdio through the ``Process`` API.

Root and rootless (``runner``): the checks are module-level functions that
do the work, assert, and return plain values.  Commands never inherit our
stdio here unless a test says so: the rootless worker's stdin and stdout
are its channel to pytest."""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

import sandboxlib as sb
from sandboxlib.runtime.container import DEFAULT_PATH

from .conftest import wait_until

QUIET = {"stdin": sb.DEVNULL, "stdout": sb.DEVNULL, "stderr": sb.DEVNULL}
NO_STDIN = {"stdin": sb.DEVNULL}
MB100 = 100_000_000


def _status(text: str) -> dict:
    """/proc/PID/status as a dict."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _limits(text: str) -> dict:
    """/proc/PID/limits: name -> [soft, hard]."""
    return {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines()[1:]}


def _env(output: bytes) -> dict:
    return dict(line.split("=", 1) for line in output.decode().splitlines())


# -- file descriptors ---------------------------------------------------------
FD_LINE = re.compile(r" (\d+) -> (.*)$")


def _fd_table(output: bytes) -> dict:
    """``ls -l /proc/self/fd/`` -> {fd: target}, without ls's own directory fd."""
    table = {}
    for line in output.decode().splitlines():
        match = FD_LINE.search(line)
        if match:
            table[int(match.group(1))] = match.group(2)
    own = [fd for fd, target in table.items() if fd > 2 and re.fullmatch(r"/proc/\d+/fd", target)]
    assert len(own) <= 1, table  # at most the lister's own directory
    for fd in own:
        del table[fd]
    return table


def _inheritable_fds(high_number: int) -> list:
    """Inheritable fds of many kinds, one at a high number."""
    r, w = os.pipe()
    top = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    path = os.open("/etc", os.O_PATH)
    high = os.dup2(w, high_number, inheritable=True)
    fds = [r, w, top, path, high]
    for fd in fds:
        os.set_inheritable(fd, True)
    return fds


def check_only_stdio_fds():
    early = _inheritable_fds(77)  # open before the container starts ...
    late = []
    try:
        seen = {"one-shot": _fd_table(sb.run(["ls", "-l", "/proc/self/fd/"], **NO_STDIN).stdout)}
        with sb.Container() as c:
            late = _inheritable_fds(78)  # ... and after
            seen["run"] = _fd_table(c.run(["ls", "-l", "/proc/self/fd/"], **NO_STDIN).stdout)
            with c.spawn(["ls", "-l", "/proc/self/fd/"], stdin=sb.DEVNULL, stdout=sb.PIPE) as p:
                seen["spawn"] = _fd_table(p.communicate(timeout=30)[0])
            # a stdio fd given by number lands on 0/1/2 only, not at its own number
            r, w = os.pipe()
            try:
                high_w = os.dup2(w, 90, inheritable=True)
                c.run(["ls", "-l", "/proc/self/fd/"], stdin=sb.DEVNULL, stdout=high_w)
                os.close(high_w)
                os.close(w)
                w = None
                seen["by number"] = _fd_table(os.read(r, 1 << 16))
            finally:
                os.close(r)
                if w is not None:
                    os.close(w)
            # The init holds none of ours either (as seen from the host).
            ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in early + late}
            init_fds = {int(fd): os.readlink(f"/proc/{c.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{c.pid}/fd")}
    finally:
        for fd in early + late:
            os.close(fd)
    for how, table in seen.items():
        assert sorted(table) == [0, 1, 2], (how, table)
        assert table[0] == "/dev/null", (how, table)
        assert table[1].startswith("pipe:"), (how, table)
    assert not ours & set(init_fds.values()), (ours, init_fds)
    low = sorted(fd for fd in init_fds if fd < 1000)
    assert low == list(range(len(low))) and len(low) <= 8, init_fds
    assert set(init_fds) - set(low) == {1001}, init_fds  # the launcher's socket (csrc/launcher.c)
    return max(early + late)


def test_only_stdio_fds(runner):
    assert runner(check_only_stdio_fds) > 3


# -- signals ----------------------------------------------------------------
PIPE_STATUS = "(yes; echo yes=$? >&2) | head -n 1"


def check_signals_reset():
    """Ignored, caught and blocked signals of the host thread that starts
    the container and its commands reach no command."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # CPython's, the premise
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGUSR1)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM, signal.SIGCHLD})
    try:
        out = {"one-shot": sb.run(["cat", "/proc/self/status"], **NO_STDIN).stdout.decode()}
        pipe = {"one-shot": sb.run(["sh", "-c", PIPE_STATUS], **NO_STDIN)}
        with sb.Container() as c:
            out["run"] = c.run(["cat", "/proc/self/status"], **NO_STDIN).stdout.decode()
            pipe["run"] = c.run(["sh", "-c", PIPE_STATUS], **NO_STDIN)
            with c.spawn(["cat", "/proc/self/status"], stdin=sb.DEVNULL, stdout=sb.PIPE) as p:
                out["spawn"] = p.communicate(timeout=30)[0].decode()
            # a plain sleep dies of SIGTERM/SIGHUP/SIGINT (not ignored, not blocked)
            codes = []
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2):
                with c.spawn(["sleep", "100"], **QUIET) as p:
                    p.send_signal(sig)
                    codes.append(p.wait(30))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    for how, text in out.items():
        fields = _status(text)
        for key in ("SigBlk", "SigIgn", "SigCgt", "SigPnd"):
            assert int(fields[key], 16) == 0, (how, key, fields[key])
    for how, r in pipe.items():
        # yes dies of SIGPIPE (128 + 13) instead of reading EPIPE and exiting 1
        assert (r.stdout, r.stderr) == (b"y\n", b"yes=141\n"), (how, r)
    assert codes == [-signal.SIGTERM, -signal.SIGHUP, -signal.SIGINT, -signal.SIGUSR2], codes


def test_signals_reset(runner):
    runner(check_signals_reset)


IGNORE_32 = r"""
#include <stdint.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
struct ksa { void (*h)(int); unsigned long f; void (*r)(void); uint64_t m; };
int main(int argc, char **argv) {
    struct ksa ign = {SIG_IGN, 0, 0, 0};
    syscall(SYS_rt_sigaction, 32, &ign, 0, 8);  /* libc refuses: it reserves 32-34 */
    execv(argv[1], argv + 1);
    return 127;
}
"""


def test_reserved_signals_ignored_by_the_host_are_reset(tmp_path):
    """A host process may ignore a signal its libc reserves (32-34): the
    command still gets the default disposition."""
    source, wrapper = tmp_path / "ignore32.c", tmp_path / "ignore32"
    source.write_text(IGNORE_32)
    subprocess.run(["cc", "-o", str(wrapper), str(source)], check=True)
    code = (
        "import sandboxlib as sb; "
        "print([l for l in sb.run(['cat', '/proc/self/status']).stdout.decode().splitlines() "
        "if l.startswith('SigIgn')][0].split()[1])"
    )
    out = subprocess.run(
        [str(wrapper), sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    assert int(out.stdout, 16) == 0, out


TERMINAL_SIGNALS_PY = r"""
import asyncio, json, os, signal, subprocess, sys, time
import sandboxlib as sb, sandboxlib.aio as sba
for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # (the host process survives them: the container's processes must too)

def launchers(init_pid):
    out = subprocess.run(["ps", "-o", "pid=,stat=,comm=", "--ppid", str(init_pid)], capture_output=True, text=True)
    rows = [l.split()[1:] for l in out.stdout.splitlines()]
    return sorted(" ".join(row) for row in rows if row[-1] in ("sbx-launcher", "sbx-forker"))

async def main():
    found = {}
    async with sba.Container() as c:
        await c.run(["true"])  # the launcher of commands with a cgroup of their own, then a forker in that cgroup
        await c.run(["true"])
        c.sync.run(["true"])  # the launcher
        found["before"] = launchers(c.sync.pid)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
            os.killpg(0, sig)  # what a terminal sends its foreground process group
        time.sleep(0.2)
        found["after"] = launchers(c.sync.pid)
        r = await asyncio.wait_for(c.run(["sh", "-c", "grep SigBlk /proc/self/status"]), 10)
        found["run"] = [r.exit_code, r.stdout.decode().split()]
    print(json.dumps(found))

asyncio.run(main())
"""


def test_a_terminals_signals_to_the_callers_group_leave_the_launchers_alone():
    """The init and its launchers share the caller's process group: a terminal's
    ^C, ^\\, ^Z and hang-up (sent to the whole group) neither end nor stop a
    launcher (a stopped one hung the container's next command), and a command
    still starts with nothing blocked."""
    out = subprocess.run(
        [sys.executable, "-c", TERMINAL_SIGNALS_PY],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # a group of its own: the signals go to it alone
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [entry.split()[-1] for entry in found["before"]] == ["sbx-forker", "sbx-launcher", "sbx-launcher"], found
    assert all(stat.startswith("S") for stat in found["before"]), found
    assert found["after"] == found["before"], found
    assert found["run"] == [0, ["SigBlk:", "0000000000000000"]], found


# -- environment --------------------------------------------------------------
def check_environment(root):
    os.environ["SANDBOXLIB_TEST_SECRET"] = "host-only"  # never passed on
    try:
        out = {}
        out["default"] = _env(sb.run(["env"], **NO_STDIN).stdout)
        r = sb.run(["env"], env={"A": "1", "B": "two words", "C": ""}, hostname="envbox", **NO_STDIN)
        out["one-shot"] = _env(r.stdout)
        with sb.Container(env={"A": "1", "K": "kept"}) as c:
            out["config"] = (_env(c.run(["env"], **NO_STDIN).stdout), c.hostname)
            out["per call"] = _env(c.run(["env"], env={"A": "2", "C": "3"}, **NO_STDIN).stdout)
            out["after"] = _env(c.run(["env"], **NO_STDIN).stdout)  # per-call env does not stick
            out["defaults overridden"] = _env(
                c.run(
                    ["env"],
                    env={"PATH": "/usr/bin:/bin", "HOME": "/elsewhere", "TERM": "dumb", "HOSTNAME": "x"},
                    **NO_STDIN,
                ).stdout
            )
            # PATH from env= is the one searched
            with pytest.raises(sb.CommandNotFoundError):
                c.run(["env"], env={"PATH": "/nonexistent-sbx"}, **NO_STDIN)
        with sb.Container(rootfs=root, read_only=True) as c:
            out["root home"] = _env(c.run(["env"], **NO_STDIN).stdout)["HOME"]
            out["app home"] = _env(c.run(["env"], user="app", **NO_STDIN).stdout)["HOME"]
            out["uid home"] = _env(c.run(["env"], user="1000:1000", **NO_STDIN).stdout)["HOME"]
            out["nobody home"] = _env(c.run(["env"], user="nobody", **NO_STDIN).stdout)["HOME"]
        with sb.Container(rootfs=root, read_only=True, user="app") as c:
            out["config user home"] = _env(c.run(["env"], **NO_STDIN).stdout)["HOME"]
            out["config user, per-call root"] = _env(c.run(["env"], user="root", **NO_STDIN).stdout)["HOME"]
        out["errors"] = _env_errors()
    finally:
        del os.environ["SANDBOXLIB_TEST_SECRET"]
    return out


def _env_errors():
    fields = []
    for bad in ({"A=B": "1"}, {"": "1"}, {"A\0B": "1"}, {"A": "x\0y"}):
        with pytest.raises(sb.ConfigError) as info:
            sb.Container(env=bad)
        fields.append(info.value.field)
        with pytest.raises(sb.ConfigError) as info:
            sb.run(["true"], env=bad, **NO_STDIN)
        fields.append(info.value.field)
    with sb.Container() as c:
        with pytest.raises(sb.ConfigError) as info:
            c.run(["true"], env={"A=B": "1"}, **NO_STDIN)
        fields.append(info.value.field)
        with pytest.raises(sb.ConfigError) as info:
            c.spawn(["true"], env={"A=B": "1"}, **QUIET)
        fields.append(info.value.field)
        assert c.run(["true"], **NO_STDIN).exit_code == 0  # still usable
    return fields


def test_environment(runner, busybox_root):
    out = runner(check_environment, busybox_root)
    defaults = {"PATH": DEFAULT_PATH, "HOME": "/root", "TERM": "xterm"}
    env = out["default"]  # exactly the defaults: nothing of the host's environment
    assert set(env) == {"PATH", "HOME", "TERM", "HOSTNAME"}, env
    assert {k: env[k] for k in defaults} == defaults and re.fullmatch("[0-9a-f]{12}", env["HOSTNAME"]), env
    assert out["one-shot"] == {**defaults, "HOSTNAME": "envbox", "A": "1", "B": "two words", "C": ""}
    env, hostname = out["config"]
    assert env == {**defaults, "HOSTNAME": hostname, "A": "1", "K": "kept"}, env
    assert out["per call"] == {**defaults, "HOSTNAME": hostname, "A": "2", "K": "kept", "C": "3"}
    assert out["after"] == env
    assert out["defaults overridden"] == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/elsewhere",
        "TERM": "dumb",
        "HOSTNAME": "x",
        "A": "1",
        "K": "kept",
    }
    # HOME comes from the user's passwd entry in the container's root
    assert (out["root home"], out["app home"], out["uid home"], out["nobody home"]) == (
        "/root",
        "/home/app",
        "/home/app",
        "/",
    )
    assert (out["config user home"], out["config user, per-call root"]) == ("/home/app", "/root")
    assert all(field.startswith("env") for field in out["errors"]), out["errors"]


# -- rlimits ------------------------------------------------------------------
def check_rlimits():
    limits = sb.Limits(nofile=(256, 512), nproc=(1000, 2000), core=0, fsize="1M", stack=(8 << 20, 16 << 20))
    texts = {"one-shot": sb.run(["cat", "/proc/self/limits"], limits=limits, **NO_STDIN).stdout.decode()}
    with sb.Container(limits=limits) as c:
        texts["run"] = c.run(["cat", "/proc/self/limits"], **NO_STDIN).stdout.decode()
        with c.spawn(["cat", "/proc/self/limits"], stdin=sb.DEVNULL, stdout=sb.PIPE) as p:
            texts["spawn"] = p.communicate(timeout=30)[0].decode()
        ulimit = c.run(["sh", "-c", "ulimit -n; ulimit -Hn"], **NO_STDIN).stdout.split()
        # the limits hold: fsize stops a 2 MB file
        big = c.run(["dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=2"], **NO_STDIN)
    for how, text in texts.items():
        rows = _limits(text)
        assert rows["Max open files"] == ["256", "512"], (how, rows)
        assert rows["Max processes"] == ["1000", "2000"], (how, rows)
        assert rows["Max core file size"] == ["0", "0"], (how, rows)
        assert rows["Max file size"] == [str(1 << 20), str(1 << 20)], (how, rows)
        assert rows["Max stack size"] == [str(8 << 20), str(16 << 20)], (how, rows)
    assert ulimit == [b"256", b"512"], ulimit
    assert (big.signal, big.exit_code) == (signal.SIGXFSZ, 128 + signal.SIGXFSZ), big


def test_rlimits(runner):
    runner(check_rlimits)


def check_soft_above_hard():
    fields = []
    for make in (
        lambda: sb.Limits(nofile=(10, 5)).rlimits(),
        lambda: sb.Container(limits=sb.Limits(nofile=(10, 5))),
        lambda: sb.run(["true"], limits=sb.Limits(fsize=("2M", "1M")), **NO_STDIN),
    ):
        with pytest.raises(sb.ConfigError) as info:
            make()
        fields.append(info.value.field)
    return fields


def test_rlimit_soft_above_hard(runner):
    assert runner(check_soft_above_hard) == ["limits.nofile", "limits.nofile", "limits.fsize"]


def check_rlimit_above_the_hosts_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(sb.ConfigError) as info:  # refused when the Limits is made: nothing started
        sb.Limits(nofile=(soft, hard + 1))
    # the host process's own limits are untouched
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    return info.value.field, f"above this process's hard limit {hard}" in info.value.message


def test_rlimit_above_the_hosts_hard_limit_is_refused(runner):
    # no command keeps CAP_SYS_RESOURCE in the init user namespace, so raising
    # a hard limit would be EPERM after clone: refused before anything starts
    assert runner(check_rlimit_above_the_hosts_hard_limit) == ("limits.nofile", True)


# -- working directory and user -----------------------------------------------
def check_cwd_and_user(root):
    out = {}
    with sb.Container(rootfs=root, read_only=True, cwd="/etc") as c:
        out["config cwd"] = c.run(["pwd"], **NO_STDIN).stdout
        out["per-call cwd"] = c.run(["pwd"], cwd="/bin", **NO_STDIN).stdout
        out["per-call cwd normalized"] = c.run(["pwd"], cwd="/home//app/", **NO_STDIN).stdout
        out["root"] = c.run(["sh", "-c", "id -u; id -g; id -G"], **NO_STDIN).stdout.split()
        out["numeric"] = c.run(["sh", "-c", "id -u; id -g"], user="1000:1000", **NO_STDIN).stdout.split()
        out["uid only"] = c.run(["sh", "-c", "id -u; id -g"], user="1234", **NO_STDIN).stdout.split()
        out["app"] = c.run(["sh", "-c", "id -u; id -g"], user="app", **NO_STDIN).stdout.split()
        out["app groups"] = c.run(["id", "-G"], user="app", **NO_STDIN).stdout.split()
        out["app:extra"] = c.run(["sh", "-c", "id -u; id -g"], user="app:extra", **NO_STDIN).stdout.split()
        for bad in ("nosuchuser", "app:nosuchgroup"):
            with pytest.raises(sb.ConfigError) as info:
                c.run(["true"], user=bad, **NO_STDIN)
            out[f"per-call {bad}"] = info.value.field
    with sb.Container(rootfs=root, read_only=True, user="app", cwd="/home/app") as c:
        out["config user"] = c.run(["sh", "-c", "id -u; id -g; pwd"], **NO_STDIN).stdout.split()
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["true"], rootfs=root, read_only=True, user="nosuchuser", **NO_STDIN)
    out["one-shot unknown"] = (info.value.field, "nosuchuser" in str(info.value))
    with pytest.raises(sb.ConfigError) as info:
        sb.Container(rootfs=root, read_only=True, user="nosuchuser").start()
    out["start unknown"] = info.value.field
    return out


def test_cwd_and_user(runner, busybox_root):
    out = runner(check_cwd_and_user, busybox_root)
    assert (out["config cwd"], out["per-call cwd"], out["per-call cwd normalized"]) == (
        b"/etc\n",
        b"/bin\n",
        b"/home/app\n",
    )
    assert out["root"][:2] == [b"0", b"0"]
    assert out["numeric"] == [b"1000", b"1000"]
    assert out["uid only"] == [b"1234", b"1234"]
    assert out["app"] == [b"1000", b"1000"]
    assert out["app:extra"] == [b"1000", b"1001"]
    # Supplementary groups from /etc/group where setgroups is allowed (root);
    # rootless, setgroups is denied and the command keeps the init's group,
    # the container's gid 0, which is the caller's own group.
    assert out["app groups"] == ([b"1000", b"1001"] if runner.mode == "root" else [b"1000", b"0"])
    assert out["config user"] == [b"1000", b"1000", b"/home/app"]
    assert out["per-call nosuchuser"] == out["per-call app:nosuchgroup"] == "user"
    assert out["one-shot unknown"] == ("user", True)
    assert out["start unknown"] == "user"


def check_unmapped_user_rejected(root):
    fields = []
    for user in ("app", "1000:1000", "0:1000", "1000:0"):
        with pytest.raises(sb.ConfigError) as info:
            sb.run(["true"], rootfs=root, read_only=True, user=user, **NO_STDIN)
        fields.append((info.value.field, "not mapped" in str(info.value)))
    with sb.Container(rootfs=root, read_only=True) as c:
        for user in ("app", "1000:1000"):
            with pytest.raises(sb.ConfigError) as info:
                c.run(["true"], user=user, **NO_STDIN)
            fields.append((info.value.field, "not mapped" in str(info.value)))
        # root, the one id mapped, works
        assert c.run(["id", "-u"], user="root", **NO_STDIN).stdout == b"0\n"
    return fields


def test_unmapped_user_rejected(single_id_runner, busybox_root):
    assert single_id_runner(check_unmapped_user_rejected, busybox_root) == [("user", True)] * 6


# -- how commands end -----------------------------------------------------------
def check_exit_codes_and_signals():
    out = {}
    for argv in (
        ["sh", "-c", "exit 3"],
        ["sh", "-c", "kill -9 $$"],
        ["sh", "-c", "kill -TERM $$"],
        ["sh", "-c", "exit 255"],
        ["true"],
    ):
        r = sb.run(argv, **NO_STDIN)
        out[f"one-shot {argv[-1]}"] = (r.exit_code, r.signal, r.timed_out, r.ok)
    with sb.Container() as c:
        r = c.run(["sh", "-c", "exit 3"], **NO_STDIN)
        out["run exit 3"] = (r.exit_code, r.signal, r.timed_out, r.ok)
        r = c.run(["sh", "-c", "kill -9 $$"], **NO_STDIN)
        out["run kill -9"] = (r.exit_code, r.signal, r.timed_out, r.ok)
        with c.spawn(["sh", "-c", "exit 3"], **QUIET) as p:
            out["spawn exit 3"] = p.wait(30)
        with c.spawn(["sh", "-c", "kill -9 $$"], **QUIET) as p:
            out["spawn kill -9"] = (p.wait(30), p.returncode, p.poll())
        with c.spawn(["sleep", "100"], **QUIET) as p:
            p.kill()
            out["kill()"] = p.wait(30)
        with c.spawn(["sleep", "100"], **QUIET) as p:
            p.terminate()
            out["terminate()"] = p.wait(30)
    # and like subprocess:
    sub = subprocess.run(["sh", "-c", "kill -9 $$"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    out["subprocess kill -9"] = sub.returncode
    return out


def test_exit_codes_and_signals(runner):
    out = runner(check_exit_codes_and_signals)
    assert out["one-shot exit 3"] == (3, None, False, False)
    assert out["one-shot kill -9 $$"] == (137, signal.SIGKILL, False, False)
    assert out["one-shot kill -TERM $$"] == (143, signal.SIGTERM, False, False)
    assert out["one-shot exit 255"] == (255, None, False, False)
    assert out["one-shot true"] == (0, None, False, True)
    assert out["run exit 3"] == (3, None, False, False)
    assert out["run kill -9"] == (137, signal.SIGKILL, False, False)
    assert isinstance(out["run kill -9"][1], signal.Signals)
    assert out["spawn exit 3"] == 3
    assert out["spawn kill -9"] == (-9, -9, -9) == (out["subprocess kill -9"],) * 3
    assert (out["kill()"], out["terminate()"]) == (-signal.SIGKILL, -signal.SIGTERM)


# -- orphans ------------------------------------------------------------------
ORPHANS = "for i in 1 2 3 4 5; do (sleep 0.2 &); done; (setsid sleep 0.2 &); ps -e -o ppid=,stat=,comm="


def _sleepers(c) -> list:
    lines = c.run(["ps", "-e", "-o", "ppid=,stat=,comm="], **NO_STDIN).stdout.decode().splitlines()
    return [line.split() for line in lines if line.split()[-1] == "sleep"]


def check_zombies_reaped():
    with sb.Container() as c:
        # the orphans' parents are gone at once: the init (pid 1) adopts them
        first = c.run(["sh", "-c", ORPHANS], **NO_STDIN).stdout.decode().splitlines()
        adopted = [line.split() for line in first if line.split()[-1] == "sleep"]
        # when they exit, the init reaps them: no sleep is left, not even a zombie
        gone = wait_until(lambda: not _sleepers(c))
        left = _sleepers(c)
        zombies = [
            line for line in c.run(["ps", "-e", "-o", "stat="], **NO_STDIN).stdout.split() if line.startswith(b"Z")
        ]
        # the same for a spawned command that leaves orphans and exits
        with c.spawn(["sh", "-c", "(sleep 0.2 &); (sleep 0.2 &); exit 0"], **QUIET) as p:
            assert p.wait(30) == 0
        gone_spawned = wait_until(lambda: not _sleepers(c))
        assert c.run(["true"], **NO_STDIN).exit_code == 0
    assert gone and gone_spawned, left
    assert zombies == [], zombies
    return adopted


def test_zombies_reaped(runner):
    adopted = runner(check_zombies_reaped)
    # (the orphans may have ended already when ps ran; those listed were adopted by the init)
    assert all(ppid == "1" for ppid, *_ in adopted), adopted


# -- timeouts -------------------------------------------------------------------
def _host_processes_with(marker: str) -> list:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in (proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def check_timeouts_kill_grandchildren():
    marker = f"1{secrets.randbelow(10**6)}.5"  # a sleep argument no other process uses
    with sb.Container() as c:
        r = c.run(["sh", "-c", f"sleep {marker} & sleep {marker} & sleep {marker}"], timeout=0.5, **NO_STDIN)
        assert r.timed_out and r.signal == signal.SIGKILL and r.exit_code == 137 and not r.ok, r
        assert r.duration < 60, r  # an upper bound for a hang: it is far below the sleeps' 100000+ s
        assert _sleepers(c) == [], _sleepers(c)
        assert _host_processes_with(marker) == []
        # spawn + communicate(timeout) + kill leaves the grandchildren alone (like Popen) ...
        p = c.spawn(["sh", "-c", f"sleep {marker} & sleep {marker}"], **QUIET)
        with pytest.raises(sb.TimeoutExpired):
            p.wait(0.2)
        p.close()
        # ... while the container's end takes them
        assert wait_until(lambda: len(_host_processes_with(marker)) == 2)
    assert _host_processes_with(marker) == []
    r = sb.run(["sh", "-c", f"sleep {marker} & setsid sleep {marker} & sleep {marker}"], timeout=0.5, **NO_STDIN)
    assert r.timed_out and r.signal == signal.SIGKILL and r.duration < 60, r
    assert _host_processes_with(marker) == []  # one-shot: the whole container is gone


def test_timeouts_kill_grandchildren(runner):
    runner(check_timeouts_kill_grandchildren)


# -- streams ----------------------------------------------------------------------
def check_capture_and_devnull():
    out = {}
    both = ["sh", "-c", "echo out; echo err >&2"]
    for how, kwargs in {
        "default": {},
        "stdout DEVNULL": {"stdout": sb.DEVNULL},
        "stderr DEVNULL": {"stderr": sb.DEVNULL},
        "both DEVNULL": {"stdout": sb.DEVNULL, "stderr": sb.DEVNULL},
        "merged": {"stderr": sb.STDOUT},
    }.items():
        r = sb.run(both, **NO_STDIN, **kwargs)
        out[f"one-shot {how}"] = (r.stdout, r.stderr)
    with sb.Container() as c:
        r = c.run(["sh", "-c", "echo 1; echo 2 >&2; echo 3; echo 4 >&2"], stderr=sb.STDOUT, **NO_STDIN)
        out["run merged"] = (r.stdout, r.stderr)
        r = c.run(["sh", "-c", "cat; echo rc=$?"], stdin=sb.DEVNULL)
        out["stdin DEVNULL"] = r.stdout
        r = c.run(["sh", "-c", "echo x > /dev/stdout; ls -l /proc/self/fd/1"], stdout=sb.DEVNULL, **NO_STDIN)
        out["devnull write"] = (r.stdout, r.exit_code)
    return out


def test_capture_and_devnull(runner):
    out = runner(check_capture_and_devnull)
    assert out["one-shot default"] == (b"out\n", b"err\n")
    assert out["one-shot stdout DEVNULL"] == (None, b"err\n")
    assert out["one-shot stderr DEVNULL"] == (b"out\n", None)
    assert out["one-shot both DEVNULL"] == (None, None)
    assert out["one-shot merged"] == (b"out\nerr\n", None)
    assert out["run merged"] == (b"1\n2\n3\n4\n", None)  # one pipe: the order is kept
    assert out["stdin DEVNULL"] == b"rc=0\n"
    assert out["devnull write"] == (None, 0)


def check_files_and_fds():
    with tempfile.TemporaryDirectory() as tmp:
        with (
            open(os.path.join(tmp, "out"), "w+b") as out_f,
            open(os.path.join(tmp, "err"), "w+b") as err_f,
            open(os.path.join(tmp, "in"), "w+b") as in_f,
        ):
            in_f.write(b"from a host file\n")
            in_f.flush()
            in_f.seek(0)
            r = sb.run(["sh", "-c", "cat; echo to-err >&2"], stdin=in_f, stdout=out_f, stderr=err_f)
            assert (r.stdout, r.stderr, r.exit_code) == (None, None, 0), r
            with sb.Container() as c:
                # an fd number, a file again (appending where the file is), merged into a file
                c.run(["echo", "by number"], stdin=sb.DEVNULL, stdout=out_f.fileno())
                c.run(
                    ["sh", "-c", "echo merged-out; echo merged-err >&2"],
                    stdin=sb.DEVNULL,
                    stdout=out_f,
                    stderr=sb.STDOUT,
                )
                in_f.seek(0)
                with c.spawn(["tr", "a-z", "A-Z"], stdin=in_f.fileno(), stdout=sb.PIPE, stderr=err_f) as p:
                    upper = p.communicate(timeout=30)
            out_f.seek(0)
            err_f.seek(0)
            return out_f.read(), err_f.read(), upper


def test_files_and_fds(runner):
    out, err, upper = runner(check_files_and_fds)
    assert out == b"from a host file\nby number\nmerged-out\nmerged-err\n"
    assert err == b"to-err\n"
    assert upper == (b"FROM A HOST FILE\n", None)


INHERIT = """
import sys, sandboxlib as sb
r = sb.run(["sh", "-c", "cat; echo one-shot-out; echo one-shot-err >&2"], stdin=None, stdout=None, stderr=None)
assert (r.stdout, r.stderr) == (None, None), r
with sb.Container() as c:
    c.run(["sh", "-c", "echo run-out; echo run-err >&2"], stdin=sb.DEVNULL, stdout=None, stderr=None)
    p = c.spawn(["sh", "-c", "echo spawn-out; echo spawn-err >&2"], stdin=sb.DEVNULL)  # default: inherit
    assert (p.stdin, p.stdout, p.stderr) == (None, None, None)
    assert p.wait(30) == 0
    p.close()
"""


def check_inherited_stdio():
    """stdio None: the command writes to our own fds 0, 1, 2 (here a
    Python child whose stdio are files)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, name) for name in ("in", "out", "err")]
        with open(paths[0], "wb") as f:
            f.write(b"host stdin\n")
        with open(paths[0], "rb") as i, open(paths[1], "wb") as o, open(paths[2], "wb") as e:
            subprocess.run([sys.executable, "-c", INHERIT], stdin=i, stdout=o, stderr=e, check=True, timeout=120)
        outputs = []
        for path in paths[1:]:
            with open(path, "rb") as f:
                outputs.append(f.read())
        return outputs


def test_inherited_stdio(runner):
    out, err = runner(check_inherited_stdio)
    assert out == b"host stdin\none-shot-out\nrun-out\nspawn-out\n"
    assert err == b"one-shot-err\nrun-err\nspawn-err\n"


def check_input_and_stdin_pipe():
    out = {}
    data = os.urandom(1 << 20) + b"end"  # more than a pipe holds: written in pieces
    r = sb.run(["cat"], input=data)
    out["one-shot input"] = r.stdout == data
    r = sb.run(["sh", "-c", "head -c 5; echo; exit 4"], input=data)  # reads little, exits early
    out["early exit"] = (r.stdout == data[:5] + b"\n", r.exit_code)
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["cat"], input=b"x", stdin=sb.DEVNULL)
    out["input and stdin"] = info.value.field
    with sb.Container() as c:
        out["run input"] = c.run(["wc", "-c"], input=data).stdout.strip()
        out["run empty input"] = c.run(["wc", "-c"], input=b"").stdout.strip()
        p = c.spawn(["tr", "a-z", "A-Z"], stdin=sb.PIPE, stdout=sb.PIPE, stderr=sb.DEVNULL)
        with p:
            assert p.stderr is None
            p.stdin.write(b"by ")
            p.stdin.write(b"hand")
            p.stdin.close()
            out["manual"] = p.stdout.read()
            out["manual rc"] = p.wait(30)
        with c.spawn(["cat"], stdin=sb.PIPE, stdout=sb.PIPE, stderr=sb.DEVNULL) as p:
            out["communicate input"] = p.communicate(b"via communicate", timeout=30)
    return out


def test_input_and_stdin_pipe(runner):
    out = runner(check_input_and_stdin_pipe)
    assert out["one-shot input"]
    assert out["early exit"] == (True, 4)
    assert out["input and stdin"] == "stdin"
    assert out["run input"] == str((1 << 20) + 3).encode()
    assert out["run empty input"] == b"0"
    assert (out["manual"], out["manual rc"]) == (b"BY HAND", 0)
    assert out["communicate input"] == (b"via communicate", None)


def check_hundred_megabytes():
    # two writers at once: both pipes fill while the other is being read
    script = f"head -c {MB100} /dev/zero & head -c {MB100} /dev/zero >&2 & wait; printf end; printf end >&2"
    r = sb.run(["sh", "-c", script], **NO_STDIN)
    sizes = [(len(r.stdout), len(r.stderr), r.exit_code)]
    assert r.stdout.count(0) == MB100 and r.stderr.count(0) == MB100
    assert r.stdout.endswith(b"end") and r.stderr.endswith(b"end")
    del r
    with sb.Container() as c:
        with c.spawn(["sh", "-c", script], stdin=sb.DEVNULL, stdout=sb.PIPE, stderr=sb.PIPE) as p:
            out, err = p.communicate(timeout=300)
            sizes.append((len(out), len(err), p.returncode))
    return sizes


def test_hundred_megabytes_both_ways(runner):
    assert runner(check_hundred_megabytes) == [(MB100 + 3, MB100 + 3, 0)] * 2


def check_process_api():
    out = {}
    with sb.Container() as c:
        # runs until SIGUSR1: every timeout below expires for sure
        p = c.spawn(
            [
                "sh",
                "-c",
                "trap 'echo late; echo warn >&2; exit 6' USR1; echo $$; echo early; while :; do sleep 0.05; done",
            ],
            stdin=sb.DEVNULL,
            stdout=sb.PIPE,
            stderr=sb.PIPE,
        )
        host = psutil.Process(p.pid)  # the host pid of the command, while it runs
        out["name"] = host.name()
        out["ppid is init"] = host.ppid() == c.pid
        out["container pid"] = p.container_pid
        out["running"] = (p.poll(), p.returncode)
        with pytest.raises(sb.TimeoutExpired) as info:
            p.wait(0.1)
        out["wait timeout"] = (info.value.timeout, tuple(info.value.argv) == p.args)
        partials = []

        def early_seen():
            try:
                p.communicate(timeout=0.1)
            except sb.TimeoutExpired as err:
                partials.append(err.stdout)
                return b"early\n" in err.stdout
            raise AssertionError("communicate returned before the command ended")

        out["early seen"] = wait_until(early_seen)
        p.send_signal(signal.SIGUSR1)
        # goes on where it stopped: nothing lost, nothing twice
        out["rest"] = p.communicate(timeout=30)
        out["partials"] = partials
        out["returncode"] = (p.returncode, p.poll(), p.wait(), p.wait(0))
        out["host pid gone"] = wait_until(lambda: not psutil.pid_exists(p.pid))
        p.send_signal(signal.SIGKILL)  # no-ops once it ended
        p.kill()
        p.terminate()
        out["after signals"] = p.returncode
        p.close()

        with c.spawn(["sleep", "100"], **QUIET) as p:
            assert psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE
            p.send_signal(signal.SIGUSR1)
            out["SIGUSR1"] = (p.wait(30), p.poll())
        with c.spawn(
            ["sh", "-c", "trap 'exit 9' USR2; echo ready; while :; do sleep 0.05; done"],
            stdin=sb.DEVNULL,
            stdout=sb.PIPE,
            stderr=sb.DEVNULL,
        ) as p:
            assert p.stdout.readline() == b"ready\n"
            p.send_signal(signal.SIGUSR2)  # caught: the command decides its exit
            out["caught"] = p.wait(30)
    return out


def test_process_api(runner):
    out = runner(check_process_api)
    assert out["name"] == "sh" and out["ppid is init"]
    assert out["running"] == (None, None)
    assert out["wait timeout"] == (0.1, True)
    assert out["early seen"]
    stdout, stderr = out["rest"]
    assert stdout == f"{out['container pid']}\nearly\nlate\n".encode() and out["container pid"] > 1
    assert stderr == b"warn\n"
    assert all(stdout.startswith(partial) for partial in out["partials"]), out["partials"]
    assert out["returncode"] == (6, 6, 6, 6)
    assert out["host pid gone"]
    assert out["after signals"] == 6
    assert out["SIGUSR1"] == (-signal.SIGUSR1, -signal.SIGUSR1)
    assert out["caught"] == 9


def check_spawned_pid_is_known():
    """Process.pid is the host pid even when the command ended before
    spawn() returned (Popen.pid is always set).  Busy processes in the
    container make that likely: the init reaps ``true`` before we look."""
    pids = []
    with sb.Container() as c:
        hogs = [c.spawn(["sh", "-c", "while :; do :; done"], **QUIET) for _ in range(3)]
        try:
            for _ in range(50):
                with c.spawn(["true"], **QUIET) as p:
                    pids.append(p.pid)
                    assert p.wait(30) == 0
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait(30)
                hog.close()
    return pids


def test_spawned_pid_is_known(runner):
    pids = runner(check_spawned_pid_is_known)
    missing = sum(pid is None for pid in pids)
    assert missing == 0, f"Process.pid is None for {missing} of {len(pids)} spawned commands"
    assert all(pid > 1 for pid in pids)


def check_spawned_pid_is_the_commands(seccomp: bool, user: str):
    """Process.pid names the command itself in our pid namespace, whichever
    process forked it: the launcher (Docker's default policy) or the init
    (no filter), as root or as another user."""
    with sb.Container(**({} if seccomp else {"seccomp": None})) as c:
        with c.spawn(["sleep", "1000"], user=user, **QUIET) as p:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
                # vfork returns at exec's point of no return, a moment before the
                # new program's arguments are mapped: /proc shows them right after
                deadline = time.monotonic() + 5
                while True:
                    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                        cmdline = f.read()
                    if cmdline or time.monotonic() > deadline:
                        break
                    time.sleep(0.001)
            finally:
                p.kill()
                p.wait(30)
    return p.pid, p.container_pid, nspid, cmdline


@pytest.mark.parametrize("seccomp", [True, False])
@pytest.mark.parametrize("user", ["0", "1000"])
def test_spawned_pid_is_the_commands(runner, seccomp, user):
    pid, container_pid, nspid, cmdline = runner(check_spawned_pid_is_the_commands, seccomp, user)
    assert nspid == [str(pid), str(container_pid)]
    assert cmdline == b"sleep\x001000\x00"


def check_communicate_resumes_writing_input():
    """communicate(input, timeout) that times out while the input is being
    written goes on with the rest of the input when called again, as
    subprocess.Popen.communicate does."""
    data = b"x" * (1 << 20)
    counts = []
    with sb.Container() as c:
        for again in (None, data):  # the Popen idiom passes no input the second time
            with c.spawn(["sh", "-c", "sleep 1; wc -c"], stdin=sb.PIPE, stdout=sb.PIPE, stderr=sb.DEVNULL) as p:
                with pytest.raises(sb.TimeoutExpired):
                    p.communicate(data, timeout=0.2)
                counts.append(int(p.communicate(again, timeout=60)[0]))
    return counts


def test_communicate_resumes_writing_input(runner):
    assert runner(check_communicate_resumes_writing_input) == [1 << 20, 1 << 20]


def check_wait_from_another_thread():
    """A Process can be waited on from another thread than the one that spawned it."""
    with sb.Container() as c:
        p = c.spawn(["sh", "-c", "read x; exit 5"], stdin=sb.PIPE, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
        codes = []
        waiter = threading.Thread(target=lambda: codes.append(p.wait(60)))
        waiter.start()
        p.stdin.write(b"go\n")
        p.stdin.flush()
        waiter.join(60)
        p.close()
    return codes


def test_wait_from_another_thread(runner):
    assert runner(check_wait_from_another_thread) == [5]


# -- subprocess habits: check=, text=, encoding=, check_returncode() ---------------
def _failure(make) -> dict:
    try:
        make()
    except sb.CommandFailed as err:
        return {
            "type": (isinstance(err, subprocess.CalledProcessError), isinstance(err, sb.SandboxError)),
            "fields": (err.returncode, err.cmd, err.stdout, err.output, err.stderr, err.verdict),
            "str": str(err),
        }
    raise AssertionError("no CommandFailed")


def check_subprocess_habits() -> dict:
    script = ["sh", "-c", "echo h\u00e9; echo oops >&2; exit 3"]
    seen = {}
    r = sb.run(script, text=True)
    seen["run text"] = (r.stdout, r.stderr, r.exit_code)
    seen["run encoding"] = sb.run(["cat"], input="\u00e9", encoding="latin-1").stdout
    seen["run errors"] = sb.run(["printf", "\\377"], errors="replace").stdout
    seen["run check"] = _failure(lambda: sb.run(script, check=True))
    seen["run check ok"] = sb.run(["true"], check=True).exit_code
    seen["run check timeout"] = _failure(lambda: sb.run(["sleep", "5"], check=True, timeout=0.3))["fields"][-1]
    seen["result check_returncode"] = _failure(sb.run(script).check_returncode)
    with sb.Container() as c:
        r = c.run(script, text=True)
        seen["c.run text"] = (r.stdout, r.stderr, r.exit_code)
        seen["c.run check"] = _failure(lambda: c.run(script, check=True, text=True))
    return seen


def test_subprocess_habits(runner):
    seen = runner(check_subprocess_habits)
    assert seen["run text"] == seen["c.run text"] == ("h\u00e9\n", "oops\n", 3)
    assert seen["run encoding"] == "\u00e9"
    assert seen["run errors"] == "\ufffd"
    assert seen["run check ok"] == 0
    assert seen["run check timeout"] is sb.Verdict.TIMEOUT
    script = ["sh", "-c", "echo h\u00e9; echo oops >&2; exit 3"]
    for key, out, err in (
        ("run check", "h\u00e9\n".encode(), b"oops\n"),
        ("result check_returncode", "h\u00e9\n".encode(), b"oops\n"),
        ("c.run check", "h\u00e9\n", "oops\n"),
    ):
        assert seen[key]["type"] == (True, True), key
        assert seen[key]["fields"] == (3, script, out, out, err, sb.Verdict.EXITED), key
        assert seen[key]["str"] == f"command {script!r} returned non-zero exit status 3", key


def test_command_failed_pickles():
    import pickle

    err = sb.CommandFailed(("false",), 1, b"out", b"err", sb.Verdict.EXITED)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.argv, copy.returncode, copy.stdout, copy.stderr, copy.verdict) == (
        ("false",),
        1,
        b"out",
        b"err",
        sb.Verdict.EXITED,
    )
    assert str(copy) == str(err)


def check_reprs() -> dict:
    seen = {
        "result": repr(sb.run(["sh", "-c", "seq 1 100; kill -9 $$"])),
        "text": repr(sb.run(["echo", "hi"], text=True)),
    }
    c = sb.Container()
    seen["new"] = repr(c)
    with c:
        seen["running"] = (repr(c), c.id[:12], c.pid)
    seen["closed"] = repr(c)
    seen["image"] = repr(sb.Container(image="app:1"))
    return seen


def test_reprs(runner):
    seen = runner(check_reprs)
    assert re.fullmatch(
        r"<sandboxlib\.Result signaled exit_code=137 signal=SIGKILL argv=\['sh', '-c', "
        r"'seq 1 100; kill -9 \$\$'\] stdout=b'1\\n2\\n.*'\.\.\. \(292 bytes\) stderr=b'' "
        r"duration=\d+\.\d{3}>",
        seen["result"],
    ), seen["result"]
    assert re.fullmatch(
        r"<sandboxlib\.Result exited exit_code=0 argv=\['echo', 'hi'\] stdout='hi\\n' "
        r"stderr='' duration=\d+\.\d{3}>",
        seen["text"],
    ), seen["text"]
    text, short_id, pid = seen["running"]
    assert text == f"<sandboxlib.Container {short_id} running pid={pid} host view>"
    assert seen["new"] == f"<sandboxlib.Container {short_id} not started host view>"
    assert seen["closed"] == f"<sandboxlib.Container {short_id} closed host view>"
    assert re.fullmatch(r"<sandboxlib\.Container [0-9a-f]{12} not started image='app:1'>", seen["image"])


def check_root_ids_on_host() -> tuple:
    c = sb.Container()
    try:
        _ = c.root_ids_on_host
    except sb.ContainerStateError as err:
        before = str(err)
    with c:
        ids = c.root_ids_on_host
        owner = c.run(["sh", "-c", "touch /tmp/x && stat -c %u:%g /tmp/x"]).stdout
    return before, ids, owner, (os.geteuid(), os.getegid())


def test_root_ids_on_host(runner):
    # who owns what the container's root writes to a bind mount (the pytest marker's tmp_path)
    before, ids, owner, own_ids = runner(check_root_ids_on_host)
    assert before == "the container's ids are chosen when it starts"
    assert owner == b"0:0\n"
    assert ids == ((1_000_000_000, 1_000_000_000) if own_ids == (0, 0) else own_ids)
