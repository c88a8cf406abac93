"""Forkers: a launcher resident in each kept command cgroup (csrc/launcher.c,
csrc/init.c).  A command with a cgroup of its own (a timeout, every aio run)
whose cgroup is found empty at its exit leaves a forker there; the cgroup's
next commands are forked by it.  Root only: the suite's rootless user has no
delegated cgroup, so its commands have no cgroups of their own."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import sandboxlib as sb
import sandboxlib.aio as sba
from sandboxlib.runtime import statedir

from .conftest import FORKER, wait_until

NO_STDIN = {"stdin": sb.DEVNULL}
KILL_FORKERS = 'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = sbx-forker ] && kill -{sig} ${{p#/proc/}}; done; true'


def _forkers(c: sb.Container) -> dict:
    """The container's forkers: host pid -> its cgroup (relative to the container's)."""
    found = {}
    for proc in psutil.Process(c.pid).children():
        try:
            if proc.name() == FORKER:
                found[proc.pid] = _cgroup(proc.pid)
        except (psutil.NoSuchProcess, FileNotFoundError):
            pass
    return found


def _cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.strip()[3:] for line in f if line.startswith("0::")).rsplit("/", 1)[-1]


def _timed_cgroup(c: sb.Container) -> str:
    """The cgroup a timed command runs in (its name: cmd-N)."""
    return c.run(["cat", "/proc/self/cgroup"], timeout=30, **NO_STDIN).stdout.decode().split("::")[-1].strip()[1:]


def test_a_kept_cgroup_gets_a_forker_that_forks_its_next_commands():
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: list(_forkers(c).values()) == [first])  # (started once the reply is sent)
        (forker,) = _forkers(c)
        r = c.run(["grep", "-E", "^(PPid|Seccomp_filters):", "/proc/self/status"], timeout=30, **NO_STDIN)
        # Still the init's child; the init's filter and the container's, both inherited from the forker.
        assert r.stdout.split() == [b"PPid:", b"1", b"Seccomp_filters:", b"2"]
        assert _timed_cgroup(c) == first and list(_forkers(c)) == [forker]
        # Commands without a cgroup of their own never use it.
        assert c.run(["cat", "/proc/self/cgroup"], **NO_STDIN).stdout.decode().endswith("::/\n")


def test_a_command_that_leaves_a_daemon_retires_its_forker():
    """A forker beside a command's leftovers would be killed with the next
    command's cgroup: the init kills it, and the host keeps the cgroup for
    the daemon alone until the container ends."""
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: list(_forkers(c).values()) == [first])
        r = c.run(["sh", "-c", "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo started"], timeout=30, **NO_STDIN)
        assert r.stdout == b"started\n"
        assert wait_until(lambda: _forkers(c) == {})
        assert wait_until(lambda: any(p.name == "sleep" for p in c.top()))
        second = _timed_cgroup(c)
        assert second != first  # the daemon's cgroup is not given to another command
        assert wait_until(lambda: list(_forkers(c).values()) == [second])
        procs = open(os.path.join(c._cgroup.v2.path, first, "cgroup.procs")).read().split()
        assert [psutil.Process(int(pid)).name() for pid in procs] == ["sleep"]


def _cgroup2_mount() -> str:
    with open("/proc/self/mounts") as f:
        return next(fields[1] for fields in (line.split() for line in f) if fields[2] == "cgroup2")


# Leaves `sleep 1000` in a cgroup below its own (which it makes), and waits until it is there.
LEAVE_IN_CHILD_CGROUP = """
below=/cg/$BOX$(sed -n 's/^0:://p' /proc/self/cgroup)/below
mkdir $below
setsid sh -c "echo \\$\\$ > $below/cgroup.procs && exec sleep 1000" > /dev/null 2>&1 < /dev/null &
until [ -n "$(cat $below/cgroup.procs)" ]; do sleep 0.01; done
"""


def test_a_daemon_left_in_a_cgroup_below_keeps_its_command_cgroup():
    """Where the container may write its cgroup tree (root without a user
    namespace, the tree bound in), a command may
    move a daemon into a cgroup it makes below its own: its own then lists
    only its forker, but a later command's kill of it would reach the
    daemon, so it is not given to another command."""
    mount = _cgroup2_mount()
    with sb.Container(userns=False, mounts=[sb.Mount.bind(mount, "/cg")]) as c:
        box = os.path.relpath(c._cgroup.v2.path, mount)
        first = _timed_cgroup(c)
        assert wait_until(lambda: list(_forkers(c).values()) == [first])
        r = c.run(["sh", "-c", LEAVE_IN_CHILD_CGROUP], env={"BOX": box}, timeout=30, **NO_STDIN)
        assert r.exit_code == 0, r
        assert _timed_cgroup(c) != first
        assert c.run(["sleep", "10"], timeout=0.3, **NO_STDIN).timed_out  # (a kept cgroup's kill)
        assert [p.name for p in c.top() if p.name == "sleep"] == ["sleep"]


def _command_cgroups(c) -> list:
    return sorted(d for d in os.listdir(c._cgroup.v2.path) if d.startswith("cmd-"))


def test_no_forker_in_the_hosts_pid_namespace():
    """There the init is not PID 1, and a launcher ends at once (it checks
    that its parent is): the init starts no forker either, rather than fork
    one to end at each command's exit (its clone3 traced)."""
    with sb.Container(pid_namespace=sb.Namespace.HOST) as c:
        _timed_cgroup(c)
        tracer = subprocess.Popen(["strace", "-p", str(c.pid), "-e", "trace=clone3"], stderr=subprocess.PIPE, text=True)
        try:
            assert tracer.stderr is not None and "attached" in tracer.stderr.readline()
            for _ in range(3):
                assert c.run(["true"], timeout=30, **NO_STDIN).ok
        finally:
            tracer.terminate()
            traced = tracer.communicate()[1]
        clones = [line for line in traced.splitlines() if line.startswith("clone3(")]
        assert len(clones) == 3 and all("CLONE_VM|CLONE_VFORK" in line for line in clones), traced


def test_a_failed_start_leaves_its_cgroup_and_forker_to_the_next_command():
    """A command that fails to start (no such file) in a cgroup with a forker
    leaves the cgroup as it found it: kept, not left to the container's end
    with a forker in it, for each of the sync and aio paths."""
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: list(_forkers(c).values()) == [first])
        for _ in range(3):
            with pytest.raises(sb.CommandNotFoundError):
                c.run(["/nonexistent"], timeout=30, **NO_STDIN)
            assert _command_cgroups(c) == [first]
            assert _timed_cgroup(c) == first

        async def aio_failures():
            async with sba.Container() as box:
                kept = (await box.run(["cat", "/proc/self/cgroup"], **NO_STDIN)).stdout.decode().split("::")[-1]
                for _ in range(3):
                    with pytest.raises(sb.CommandNotFoundError):
                        await box.run(["/nonexistent"], **NO_STDIN)
                    assert _command_cgroups(box.sync) == [kept.strip()[1:]]

        asyncio.run(aio_failures())


def test_forkers_are_capped_by_the_pids_and_memory_limits():
    """Each is a process in the container's accounting: one per 4 MiB of a
    memory limit, none under a pids limit."""
    for limits, most in ((sb.Limits(memory="8M"), 2), (sb.Limits(pids=64), 0), (sb.Limits(memory="1G", pids=24), 0)):
        with sb.Container(limits=limits) as c:
            with concurrent.futures.ThreadPoolExecutor(5) as pool:
                for _ in range(2):  # (the second round runs where the first left forkers)
                    runs = [pool.submit(c.run, ["sleep", "0.3"], timeout=30, **NO_STDIN) for _ in range(5)]
                    assert [run.result().exit_code for run in runs] == [0] * 5
            time.sleep(0.1)
            assert len(_forkers(c)) == most, limits


def test_a_container_at_its_pids_limit_forks_what_it_did_without_forkers():
    """Gathered timed runs leave no idle forkers behind to take the pids a
    command then needs: 16 = the init, its two launchers, sh and 12 sleeps."""
    with sb.Container(limits=sb.Limits(pids=16)) as c:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(c.run, ["sleep", "0.3"], timeout=30, **NO_STDIN) for _ in range(2)]
            assert [run.result().exit_code for run in runs] == [0, 0]
        r = c.run(["sh", "-c", "for i in $(seq 12); do sleep 1 & done; wait; echo done"], **NO_STDIN)
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"done\n", b""), r


def test_an_idle_forker_ends_and_the_next_command_starts_another():
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: len(_forkers(c)) == 1)
        assert wait_until(lambda: _forkers(c) == {}, seconds=15)  # (10 s without a request)
        assert _timed_cgroup(c) == first  # forked by the cgroup launcher again, into the kept cgroup
        assert wait_until(lambda: list(_forkers(c).values()) == [first])


def test_a_forker_killed_or_stopped_from_inside_costs_no_command():
    """The container's root may kill or stop its forkers: a killed one makes
    the init fall back to the cgroup launcher; so does a stopped one, which
    the init kills (it would hold the init until continued)."""
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: len(_forkers(c)) == 1)
        assert c.run(["sh", "-c", KILL_FORKERS.format(sig="KILL")], **NO_STDIN).ok
        assert wait_until(lambda: _forkers(c) == {})
        assert c.run(["echo", "ok"], timeout=30, **NO_STDIN).stdout == b"ok\n"  # (the launcher's)
        assert wait_until(lambda: len(_forkers(c)) == 1)
        assert c.run(["sh", "-c", KILL_FORKERS.format(sig="STOP")], **NO_STDIN).ok
        assert wait_until(lambda: _stopped(_forkers(c)))
        assert c.run(["echo", "held"], timeout=30, **NO_STDIN).stdout == b"held\n"
        assert _timed_cgroup(c) == first
        assert c.run(["echo", "ok"], **NO_STDIN).stdout == b"ok\n"


def _stopped(pids) -> bool:
    return bool(pids) and all(psutil.Process(pid).status() == psutil.STATUS_STOPPED for pid in pids)


def test_stopped_launchers_and_forkers_hold_no_command():
    """kill -STOP of every launcher and forker from inside (as kill -STOP -1
    does): a command sent to one would wait until it is continued, and the
    init with it (the container's other commands, its stop); the init kills
    a stopped one and forks the command another way."""
    names = ("sbx-launcher", "sbx-forker")
    with sb.Container() as c:
        _timed_cgroup(c)
        assert c.run(["true"], **NO_STDIN).ok
        expected = ["sbx-forker", "sbx-launcher", "sbx-launcher"]  # (the cgroup launcher's, the other's)
        assert wait_until(lambda: sorted(p.name for p in c.top() if p.name in names) == expected)
        stop = "; ".join(KILL_FORKERS.replace("sbx-forker", name).format(sig="STOP") for name in names)
        assert c.run(["sh", "-c", stop], **NO_STDIN).ok
        assert wait_until(lambda: _stopped([p.pid for p in c.top() if p.name in names]))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            plain = pool.submit(c.run, ["echo", "plain"], **NO_STDIN)
            timed = pool.submit(c.run, ["echo", "timed"], timeout=60, **NO_STDIN)
            assert plain.result(timeout=10).stdout == b"plain\n"
            assert timed.result(timeout=10).stdout == b"timed\n"
        assert [p.name for p in c.top() if p.status == psutil.STATUS_STOPPED] == []


KILLER_PY = r"""
import os, signal
while True:
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and open(f"/proc/{pid}/comm").read() == "sbx-forker\n":
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


def test_a_forker_killed_with_a_request_in_hand_never_runs_the_command_twice():
    """The container's root kills forkers again and again while commands
    start: one killed after forking a command but before answering the init
    must not make the init fork that command a second time (it fails
    instead, EINTR at FORK, and its cgroup is killed); an idle forker's own
    end loses no request."""
    outcomes: collections.Counter = collections.Counter()

    async def storm():
        async with sba.Container() as c:
            killer = await c.spawn(["python3", "-c", KILLER_PY], stdin=sb.DEVNULL)
            gate = asyncio.Semaphore(8)

            async def append(token: int) -> None:
                async with gate:
                    try:
                        r = await c.run(["sh", "-c", "echo $0 >> /tmp/log", str(token)], timeout=30, **NO_STDIN)
                        outcomes[r.exit_code] += 1  # (137: the killer hit its child, still named sbx-forker)
                    except sb.SetupError as err:
                        assert (err.step, err.errno) == ("FORK", errno.EINTR), err
                        outcomes["EINTR"] += 1

            await asyncio.gather(*(append(token) for token in range(3000)))
            killer.kill()
            return (await c.run(["cat", "/tmp/log"], **NO_STDIN)).stdout.split()

    tokens = asyncio.run(storm())
    twice = [token for token, count in collections.Counter(tokens).items() if count > 1]
    assert twice == [], (twice, outcomes)
    assert set(outcomes) <= {0, 137, "EINTR"} and outcomes[0] > 1000, outcomes


def test_launchers_that_end_at_their_start_cost_no_command():
    """In the host's pid namespace the init is not PID 1 and its launchers
    end at their start (they check that their parent is): its commands,
    sent to them before they ended, are forked by the init instead, not
    failed as if a launcher had died with them in hand."""
    with sb.Container(pid_namespace=sb.Namespace.HOST) as c:
        for _ in range(3):
            assert c.run(["true"], **NO_STDIN).ok
            assert c.run(["true"], timeout=30, **NO_STDIN).ok


OWNER_PY = r"""
import sys, sandboxlib as sb
c = sb.Container()
c.start()
c.run(["true"], timeout=30, stdin=sb.DEVNULL)
c.run(["true"], timeout=30, stdin=sb.DEVNULL)
print(c.pid, flush=True)
sys.stdin.read()
"""


def test_forkers_end_with_an_owner_killed_by_sigkill():
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_PY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert owner.stdout is not None
        init = psutil.Process(int(owner.stdout.readline()))
        assert wait_until(lambda: any(p.name() == FORKER for p in init.children()))
        container = [init, *init.children(recursive=True)]
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        gone, alive = psutil.wait_procs(container, timeout=10)
        assert not alive, alive
    finally:
        owner.kill()
        owner.wait()
        for pipe in (owner.stdin, owner.stdout):
            if pipe is not None:
                pipe.close()
        statedir.sweep(statedir.state_root())  # (what the next container's start does: its record and cgroups)


def test_a_command_that_outlives_its_forkers_idle_while_keeps_its_cgroup():
    """The forker ends 10 s after its last request, also while the command it
    forked runs on: the init then checks that command's cgroup at its exit
    through the forker's fds, handed to it."""
    with sb.Container() as c:
        first = _timed_cgroup(c)
        assert wait_until(lambda: list(_forkers(c).values()) == [first])
        (forker,) = _forkers(c)
        r = c.run(["sh", "-c", "sleep 11; cat /proc/self/cgroup"], timeout=60, **NO_STDIN)
        assert r.stdout.decode().strip().endswith(first)
        assert forker not in _forkers(c)  # (it ended during the sleep; another starts at the exit)
        assert _timed_cgroup(c) == first  # found ready at the exit, so kept and given again
