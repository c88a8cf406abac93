"""Resource limits with the real kernel: cgroup limits (memory, pids, cpu,
cpuset), kill-all, verdicts, statistics, rlimits, the cgroup file system as
the container sees it, and cleanup of every cgroup (also after a SIGKILL of
the owner).

Root gets a cgroup per container; rootless here has no delegated cgroup, so
rootless checks that a cgroup limit is refused with UnsupportedError and
that everything else (rlimits, stats from psutil) works without one."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import sandboxlib as sb
from sandboxlib import cgroups
from sandboxlib.runtime import statedir

from .conftest import (
    FORKER,
    LAUNCHER,
    commands_of,
    expire_sweep_stamp,
    run_cli,
    session_cgroup_prefix,
    session_cgroups,
    wait_until,
)

NO_STDIN = {"stdin": sb.DEVNULL}
PY = sys.executable


def _wait_until(predicate) -> bool:
    return wait_until(predicate, seconds=20.0)  # cgroup teardown on a loaded 2-core machine


def _paths_exist(paths) -> list:
    return [p for p in paths if os.path.exists(p)]


# -- a cgroup per container ---------------------------------------------------------
def test_container_cgroup_layout_and_removal():
    """As root every container gets a cgroup below ours in each hierarchy it
    uses (the unified v2 one for kill and events, v1 ones for limits and
    stats); the init is in all of them; close() removes them all."""
    with sb.Container(limits=sb.Limits(memory="64M", pids=50, cpus=1, cpu_shares=512, cpuset_cpus="0")) as c:
        paths = c._cgroup.paths
        layout = cgroups.detect()
        assert all(os.path.basename(p).startswith(session_cgroup_prefix()) for p in paths)
        assert os.path.dirname(c._cgroup.node("memory").path) == layout.v1["memory"]  # nested below ours
        assert c._cgroup.v2 is not None and os.path.dirname(c._cgroup.v2.path) == layout.v2
        for path in paths:
            with open(os.path.join(path, "cgroup.procs")) as f:
                assert str(c.pid) in f.read().split(), path
        files = {
            "memory": ("memory.limit_in_bytes", "67108864"),
            "pids": ("pids.max", "50"),
            "cpu": ("cpu.cfs_quota_us", "100000"),
            "cpuset": ("cpuset.cpus", "0"),
        }
        for controller, (name, value) in files.items():
            with open(os.path.join(c._cgroup.node(controller).path, name)) as f:
                assert f.read().strip() == value, name
        with open(os.path.join(c._cgroup.node("cpu").path, "cpu.shares")) as f:
            assert f.read().strip() == "512"
        # every command is in them too, and sees its cgroups as "/"
        r = c.run(["cat", "/proc/self/cgroup"], **NO_STDIN)
        assert all(line.endswith(":/") for line in r.stdout.decode().splitlines()), r.stdout
        with open(f"/proc/{c.pid}/status") as f:
            threads = next(line for line in f if line.startswith("Threads:"))
        assert threads.split()[1] == "1"
    assert _paths_exist(paths) == []


def test_no_limits_still_gets_a_cgroup_as_root():
    with sb.Container() as c:
        paths = c._cgroup.paths
        assert c._cgroup.v2 is not None and _paths_exist(paths) == list(paths)
    assert _paths_exist(paths) == []
    r = sb.run(["true"], **NO_STDIN)
    assert r.ok and session_cgroups() == []


def check_rootless_limits_refused():
    out = {}
    for limits in (sb.Limits(memory="64M"), sb.Limits(pids=10), sb.Limits(cpus=0.5)):
        try:
            with sb.Container(limits=limits):
                out[repr(limits)] = "started"
        except sb.UnsupportedError as err:
            out[repr(limits)] = str(err)
    with sb.Container(limits=sb.Limits(nofile=64)) as c:  # no cgroup needed: works
        out["cgroup"] = c._cgroup is not None
        out["run"] = c.run(["sh", "-c", "ulimit -n"], **NO_STDIN).stdout
        stats = c.stats()
        out["stats"] = (stats.source, stats.pids >= 1, stats.memory_bytes > 0)
    return out


def test_cgroup_limits_need_root_or_delegation(runner):
    """Rootless here has no delegated cgroup: a cgroup limit is refused (never
    ignored), saying what to configure; without one a container runs."""
    out = runner(check_rootless_limits_refused)
    refused = [v for k, v in out.items() if k.startswith("Limits(")]
    assert len(refused) == 3
    for text in refused:
        if not runner.rootless:
            assert text == "started"
            continue
        assert "is not available on this host" in text and "delegated cgroup v2 subtree" in text, text
        assert "Delegate=" in text, text
    assert out["cgroup"] is (not runner.rootless) and out["run"] == b"64\n"
    assert out["stats"] == ("psutil" if runner.rootless else "cgroup", True, True)


# -- memory ---------------------------------------------------------------------------
HOG = "import sys; print('before', flush=True); x = bytearray(200 << 20); print('survived')"


def test_memory_hog_is_oom_killed():
    limits = sb.Limits(memory="32M", memory_swap="32M")
    r = sb.run([PY, "-c", HOG], limits=limits, **NO_STDIN)
    assert r.verdict is sb.Verdict.OOM and r.oom_killed, r
    assert r.signal == signal.SIGKILL and r.stdout == b"before\n", r  # output kept
    with sb.Container(limits=limits) as c:
        r = c.run(["sh", "-c", f'{PY} -c "{HOG}"; echo rc=$?'], **NO_STDIN)
        # the shell survives its child's OOM kill and exits 0: not the OOM's verdict
        assert r.oom_killed and r.verdict is sb.Verdict.EXITED and r.stdout == b"before\nrc=137\n", r
        r = c.run([PY, "-c", HOG], **NO_STDIN)
        assert r.verdict is sb.Verdict.OOM and r.oom_killed, r
        r = c.run(["echo", "fine"], **NO_STDIN)  # the counter moved before: not this one's
        assert r.verdict is sb.Verdict.EXITED and not r.oom_killed and r.stdout == b"fine\n"
        stats = c.stats()
        assert stats.memory_peak_bytes is not None and stats.memory_peak_bytes <= 32 << 20
    r = sb.run([PY, "-c", HOG], limits=sb.Limits(memory="512M"), **NO_STDIN)
    assert r.ok and r.verdict is sb.Verdict.EXITED and not r.oom_killed, r


# -- pids ----------------------------------------------------------------------------------
# Every process forks for ever, and keeps trying when the limit refuses.
BOMB = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n"
    "    try:\n"
    "        os.fork()\n"
    "    except OSError:\n"
    "        time.sleep(0.005)\n"
)


def test_fork_bomb_is_contained_and_stop_kills_it():
    limit = 40
    c = sb.Container(limits=sb.Limits(pids=limit))
    c.start()
    try:
        paths = c._cgroup.paths
        pids_dir = c._cgroup.node("pids").path
        p = c.spawn([PY, "-c", BOMB], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)

        def events():
            with open(os.path.join(pids_dir, "pids.events")) as f:
                return int(f.read().split()[1])

        assert _wait_until(lambda: events() > 50), "the bomb never hit the limit"
        with open(os.path.join(pids_dir, "pids.current")) as f:
            assert int(f.read()) <= limit
        assert subprocess.run(["true"]).returncode == 0  # the host can still fork
        assert c.stats().pids_peak == limit
        started = time.monotonic()
        c.stop(timeout=0.5)
        assert time.monotonic() - started < 30
        assert p.poll() is not None
    finally:
        c.close()
    assert _paths_exist(paths) == []


def test_pids_limit_verdict():
    with sb.Container(limits=sb.Limits(pids=10)) as c:
        r = c.run(["sh", "-c", "for i in $(seq 20); do sleep 5 & done; wait"], timeout=60, **NO_STDIN)
        assert r.verdict is sb.Verdict.PIDS_LIMIT and r.exit_code != 0, r
        assert b"fork" in r.stderr.lower(), r.stderr  # stderr kept
        r = c.run(["sh", "-c", "sleep 0.1 & wait"], **NO_STDIN)
        assert r.verdict is sb.Verdict.EXITED and r.ok


# Forks 1,000 children that each sleep a little, counts the refused forks
# (EAGAIN) and exits 0 all the same.
SURVIVOR = (
    "import os, time\n"
    "refused = 0\n"
    "for _ in range(1000):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(0.5)\n"
    "            os._exit(0)\n"
    "    except BlockingIOError:\n"
    "        refused += 1\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        break\n"
    "print(refused)\n"
)


def test_pids_limit_hit_is_reported_when_the_command_exits_0():
    """A program that survives the pids limit exits 0: the verdict is
    EXITED, and Result.pids_limit_hit says that forks were refused."""
    r = sb.run([PY, "-c", SURVIVOR], limits=sb.Limits(pids=64), **NO_STDIN)
    assert r.exit_code == 0 and int(r.stdout) > 0, r
    assert r.verdict is sb.Verdict.EXITED and r.pids_limit_hit, r
    with sb.Container(limits=sb.Limits(pids=64)) as c:
        assert c.run(["true"], **NO_STDIN).pids_limit_hit is False
        r = c.run([PY, "-c", SURVIVOR], **NO_STDIN)
        assert r.exit_code == 0 and int(r.stdout) > 0 and r.pids_limit_hit, r
        r = c.run([PY, "-c", SURVIVOR], timeout=60, **NO_STDIN)  # in a cgroup of its own
        assert r.exit_code == 0 and int(r.stdout) > 0 and r.pids_limit_hit, r
        assert c.run(["true"], **NO_STDIN).pids_limit_hit is False  # only while the command ran


def check_no_pids_limit_hit():
    return sb.run(["sh", "-c", "true & wait"], **NO_STDIN).pids_limit_hit


def test_pids_limit_hit_is_false_without_a_limit(runner):
    assert runner(check_no_pids_limit_hit) is False


# -- cpu -----------------------------------------------------------------------------------
SPIN = "import time\nend = time.monotonic() + {secs}\nwhile time.monotonic() < end: pass\n"


def test_cpu_quota_is_enforced():
    """A busy loop with cpus=0.3 gets about 30% of a CPU: never much more (the
    quota is a hard cap); not much less unless the machine is busy (loose)."""
    with sb.Container(limits=sb.Limits(cpus=0.3)) as c:
        before = c.stats().cpu_seconds
        start = time.monotonic()
        r = c.run([PY, "-c", SPIN.format(secs=2.0)], **NO_STDIN)
        wall = time.monotonic() - start
        used = c.stats().cpu_seconds - before
    assert r.ok, r
    share = used / wall
    assert 0.1 < share < 0.45, (used, wall)


def test_cpuset_pins_the_container():
    with sb.Container(limits=sb.Limits(cpuset_cpus="1")) as c:
        r = c.run(["grep", "Cpus_allowed_list", "/proc/self/status"], **NO_STDIN)
    assert r.stdout.split() == [b"Cpus_allowed_list:", b"1"], r.stdout


# -- rlimits -------------------------------------------------------------------------
def check_rlimits():
    out = {}
    limits = sb.Limits(nofile=(20, 40), nproc=500, core=0, fsize="1M", address_space="1G", cpu=(100, 200), stack="4M")
    with sb.Container(limits=limits) as c:
        text = c.run(["cat", "/proc/self/limits"], **NO_STDIN).stdout.decode()
        rows = {}
        for line in text.splitlines()[1:]:
            name, values = line[:26].strip(), line[26:].split()
            rows[name] = values[:2]
        out["limits"] = rows
        script = (
            "import os\nn = 0\ntry:\n    while True:\n        os.open('/dev/null', os.O_RDONLY); n += 1\n"
            "except OSError as e:\n    print(n, e.errno)"
        )
        out["nofile"] = c.run([PY, "-c", script], **NO_STDIN).stdout
        r = c.run(["dd", "if=/dev/zero", "of=/tmp/big", "bs=64k", "count=64"], **NO_STDIN)
        out["fsize"] = (r.verdict, r.signal, c.run(["stat", "-c", "%s", "/tmp/big"], **NO_STDIN).stdout)
    with sb.Container(limits=sb.Limits(cpu=(1, 30))) as c:  # soft: SIGXCPU (hard: SIGKILL)
        r = c.run([PY, "-c", SPIN.format(secs=60)], timeout=120, **NO_STDIN)
        out["cpu"] = (r.verdict, r.signal, r.duration < 60)
    try:
        sb.Limits(nofile=(50, 10)).rlimits()
    except sb.ConfigError as err:
        out["soft above hard"] = (err.field, str(err))
    return out


def test_rlimits_end_to_end(runner):
    out = runner(check_rlimits)
    rows = out["limits"]
    assert rows["Max open files"] == ["20", "40"]
    assert rows["Max processes"] == ["500", "500"]
    assert rows["Max core file size"] == ["0", "0"]
    assert rows["Max file size"] == [str(1 << 20)] * 2
    assert rows["Max address space"] == [str(1 << 30)] * 2
    assert rows["Max cpu time"] == ["100", "200"]
    assert rows["Max stack size"] == [str(4 << 20)] * 2
    opened, err = out["nofile"].split()
    assert int(opened) == 20 - 3 and int(err) == errno.EMFILE  # 0-2 are open
    assert out["fsize"] == (sb.Verdict.FSIZE, signal.SIGXFSZ, f"{1 << 20}\n".encode())
    assert out["cpu"] == (sb.Verdict.CPU_TIME, signal.SIGXCPU, True)
    assert out["soft above hard"][0] == "limits.nofile" and "above the hard limit" in out["soft above hard"][1]


# -- timeouts kill whole trees ---------------------------------------------------------
@pytest.mark.parametrize("userns", [True, False])
def test_run_timeout_kills_setsid_grandchild_holding_stdout(userns):
    """The grandchild starts its own session (so it escapes a process-group
    kill) and holds stdout open (so run() would wait for it): its own cgroup
    takes it too, and run() returns at once."""
    with sb.Container(userns=userns) as c:
        started = time.monotonic()
        r = c.run(
            ["sh", "-c", "setsid sh -c 'echo grandchild; sleep 1000' & echo main; sleep 1000"], timeout=0.5, **NO_STDIN
        )
        took = time.monotonic() - started
        assert r.timed_out and r.verdict is sb.Verdict.TIMEOUT and r.signal == signal.SIGKILL, r
        assert sorted(r.stdout.split()) == [b"grandchild", b"main"], r.stdout
        assert took < 10, took  # 1000 s without the cgroup kill
        # (left: the init and the launcher that forked the command into its cgroup)
        assert _wait_until(lambda: [p.name for p in c.top()] == ["sbx-init", LAUNCHER]), c.top()
        assert c.run(["echo", "ok"], timeout=5, **NO_STDIN).stdout == b"ok\n"
        v2 = c._cgroup.v2.path
        # The killed command's cgroup is removed; the next one's is kept for reuse, with the forker
        # the init started there (found empty at the command's exit), and nothing else.
        assert _wait_until(lambda: [e for e in os.listdir(v2) if e.startswith("cmd-")] == ["cmd-2"])
        procs = os.path.join(v2, "cmd-2", "cgroup.procs")
        # (started once the reply is sent; named once it runs its own code: a fork of the init until then)
        assert _wait_until(lambda: [psutil.Process(int(pid)).name() for pid in open(procs).read().split()] == [FORKER])


def test_command_cgroup_of_a_command_that_left_a_daemon():
    """A command whose daemon outlives it keeps its cgroup until the container ends."""
    with sb.Container() as c:
        r = c.run(["sh", "-c", "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo started"], timeout=30, **NO_STDIN)
        assert r.ok and r.stdout == b"started\n"
        assert _wait_until(lambda: any(p.name == "sleep" for p in c.top()))
        assert [e for e in os.listdir(c._cgroup.v2.path) if e.startswith("cmd-")] == ["cmd-1"]
        # Not reused: a later command's timeout kills that command's tree, not the daemon.
        late = c.run(["sleep", "1000"], timeout=0.3, **NO_STDIN)
        assert late.timed_out and any(p.name == "sleep" for p in c.top())
        paths = c._cgroup.paths
    assert _paths_exist(paths) == []


def test_command_cgroups_are_reused():
    """An empty command cgroup serves the next commands (no mkdir and rmdir per command)."""
    with sb.Container() as c:
        for _ in range(5):
            assert c.run(["true"], timeout=30, **NO_STDIN).ok
        assert [e for e in os.listdir(c._cgroup.v2.path) if e.startswith("cmd-")] == ["cmd-1"]
        paths = c._cgroup.paths
    assert _paths_exist(paths) == []


# -- stats and top ---------------------------------------------------------------------
def check_stats_and_top(limited: bool):
    with sb.Container(limits=sb.Limits(pids=100) if limited else None) as c:
        p = c.spawn(["sleep", "1000"], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
        c.run([PY, "-c", SPIN.format(secs=0.3)], **NO_STDIN)
        stats = c.stats()
        top = c.top()
        p.kill()
        p.wait()
        p.close()
    return stats, [(i.container_pid, i.name, i.cmdline, i.pid == p.pid) for i in top]


def test_stats_without_limits():
    """Without limits a container (as root) has only its v2 cgroup: CPU time
    from it, the rest from psutil (no peaks)."""
    with sb.Container() as c:
        c.run([PY, "-c", SPIN.format(secs=0.3)], **NO_STDIN)
        stats = c.stats()
        assert [n.version for n in c._cgroup.nodes] == ["v2"]
    assert stats.source == "cgroup" and stats.cpu_seconds > 0.1, stats
    assert stats.memory_bytes > 0 and stats.pids >= 1 and stats.memory_peak_bytes is None, stats


def test_stats_and_top(runner):
    stats, top = runner(check_stats_and_top, not runner.rootless)  # rootless: no cgroup limits here
    assert stats.source == ("psutil" if runner.rootless else "cgroup")
    assert stats.memory_bytes > 0 and stats.pids >= 2
    assert top[0][:2] == (1, "sbx-init")
    assert sum(name == LAUNCHER for _, name, _, _ in top) == 1
    top = [entry for entry in top if entry[1] != LAUNCHER]
    assert (top[1][1], top[1][2], top[1][3]) == ("sleep", ("sleep", "1000"), True) and top[1][0] > 1
    if not runner.rootless:
        assert stats.cpu_seconds > 0.1, stats  # the spin ran in it (gone now, still counted)
        assert stats.memory_peak_bytes >= stats.memory_bytes and stats.pids_peak >= 2
        assert stats.io_read_bytes is not None


def test_stats_need_a_running_container():
    c = sb.Container()
    with pytest.raises(sb.ContainerStateError):
        c.stats()
    with pytest.raises(sb.ContainerStateError):
        c.top()


# -- the cgroup file system inside ------------------------------------------------------
def check_cgroupfs_inside():
    script = (
        "ls -A /sys/fs/cgroup; echo ls=$?; mkdir /sys/fs/cgroup/x 2>&1; echo mkdir=$?; "
        "echo /x > /sys/fs/cgroup/release_agent 2>&1; echo write=$?; "
        "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg 2>&1; echo mount2=$?; "
        "mount -t cgroup -o memory none /tmp/cg 2>&1; echo mount1=$?; "
        "grep -c ' /sys ro,' /proc/self/mountinfo"
    )
    with sb.Container() as c:
        return c.run(["sh", "-c", script], **NO_STDIN).stdout.decode()


def test_cgroupfs_inside_is_read_only(runner):
    out = runner(check_cgroupfs_inside)
    assert "ls=0" in out and "mkdir=0" not in out and "write=0" not in out, out
    assert "mount2=0" not in out and "mount1=0" not in out, out
    assert out.splitlines()[0] == "ls=0"  # nothing of the host's cgroups is there
    assert out.rstrip().splitlines()[-1] == "1"  # /sys is read-only


# -- configuration errors ---------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"memory": "1M"}, "limits.memory"),
        ({"memory": "lots"}, "limits.memory"),
        ({"memory": -5}, "limits.memory"),
        ({"memory_swap": "1G"}, "limits.memory_swap"),
        ({"memory": "64M", "memory_swap": "32M"}, "limits.memory_swap"),
        ({"cpus": 0}, "limits.cpus"),
        ({"cpus": 1000}, "limits.cpus"),
        ({"cpus": "lots"}, "limits.cpus"),  # ("1.5" is 1.5, as docker run --cpus)
        ({"cpus": "0"}, "limits.cpus"),
        ({"cpu_shares": 1}, "limits.cpu_shares"),
        ({"pids": 0}, "limits.pids"),
        ({"pids": 1.5}, "limits.pids"),
        ({"cpuset_cpus": "0-"}, "limits.cpuset_cpus"),
        ({"cpuset_cpus": "4096"}, "limits.cpuset_cpus"),
        ({"nofile": (10, 5)}, "limits.nofile"),
        ({"nofile": (1, 2, 3)}, "limits.nofile"),
        ({"fsize": "big"}, "limits.fsize"),
        ({"device_rules": ["c 7:128"]}, "limits.device_rules[0]"),
        ({"device_rules": ["c 1:3 rwm", "x 7:128 rwm"]}, "limits.device_rules[1]"),
        ({"cpu_rt_period_us": 0}, "limits.cpu_rt_period_us"),
        ({"cpu_rt_period_us": 1000, "cpu_rt_runtime_us": 1001}, "limits.cpu_rt_runtime_us"),
        ({"cpu_rt_runtime_us": 2_000_000}, "limits.cpu_rt_runtime_us"),
    ],
)
def test_bad_limits_name_the_field(kwargs, field):
    with pytest.raises(sb.ConfigError) as info:
        sb.Container(limits=sb.Limits(**kwargs))
    assert info.value.field == field, info.value
    with pytest.raises(sb.ConfigError) as info:
        sb.run(["true"], limits=sb.Limits(**kwargs))
    assert info.value.field == field


def test_limits_from_dict():
    assert sb.Limits.from_dict({"as": "1G", "memory": "64M"}).cgroup().memory == 64 << 20
    with pytest.raises(sb.ConfigError) as info:
        sb.Limits.from_dict({"memroy": 1})
    assert info.value.field == "limits"


# -- the owner is SIGKILLed --------------------------------------------------------------
OWNER = textwrap.dedent("""
    import sandboxlib as sb, time
    c = sb.Container(limits=sb.Limits(memory="64M", pids=50)); c.start()
    c.spawn(["sleep", "1000"], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
    print(c.id, " ".join(c._cgroup.paths), flush=True)
    time.sleep(1000)
""")
SWEEPER = "import sandboxlib as sb; assert sb.run(['true'], stdin=sb.DEVNULL).ok"


def test_cgroups_of_a_sigkilled_owner_are_swept():
    env = dict(os.environ)
    owner = subprocess.Popen([PY, "-c", OWNER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    try:
        ident, *paths = owner.stdout.readline().decode().split()
    finally:
        owner.stdout.close()
    assert len(paths) >= 4 and _paths_exist(paths) == paths
    record = os.path.join(statedir.state_root(), ident)
    with open(record) as f:
        lines = f.read().splitlines()
    assert sorted(line.split()[1] for line in lines if line.startswith("cgroup ")) == sorted(paths)
    assert lines[-1].startswith("init ")
    owner.kill()
    owner.wait()
    # its container dies with it, but nobody removed the cgroups or the record ...
    assert _wait_until(lambda: not cgroups.fs.populated(paths[0]))
    assert _paths_exist(paths) == paths and os.path.exists(record)
    expire_sweep_stamp(os.path.join(statedir.state_root(), ".swept"))  # the owner's start swept just now
    subprocess.run([PY, "-c", SWEEPER], env=env, check=True, timeout=120, stdin=subprocess.DEVNULL)
    assert _paths_exist(paths) == [] and not os.path.exists(record)  # ... the next start did


def test_sweep_kills_what_is_left_in_a_cgroup():
    """A record whose owner is gone but whose cgroup still has processes (say,
    an init that outlived it): the sweep kills them and removes the cgroup."""
    c = sb.Container(limits=sb.Limits(pids=20))
    c.start()
    try:
        c.spawn(["sleep", "1000"], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
        paths = c._cgroup.paths
        sleeper = [p.pid for p in commands_of(c.pid)]
        assert cgroups.release_paths(paths) is False  # as a sweep does it
        assert _wait_until(lambda: not any(psutil.pid_exists(p) for p in sleeper))
        assert _paths_exist(paths) == []
    finally:
        c.close()


# -- command line -------------------------------------------------------------------------
def test_cli_limits():
    proc = run_cli(
        "--memory",
        "64M",
        "--memory-swap",
        "64M",
        "--pids-limit",
        "30",
        "--cpus",
        "1.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--ulimit",
        "nofile=20:40",
        "--ulimit",
        "fsize=1M",
        "--",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; grep Cpus_allowed_list /proc/self/status",
    )
    assert proc.returncode == 0, proc
    assert proc.stdout.split() == [b"20", b"40", b"Cpus_allowed_list:", b"0"], proc.stdout
    proc = run_cli("--memory", "32M", "--memory-swap", "32M", "--", PY, "-c", HOG)
    assert proc.returncode == 137 and proc.stdout == b"before\n", proc
    assert b"out of memory (--memory)" in proc.stderr, proc.stderr
    proc = run_cli("--ulimit", "fsize=64k", "--", "dd", "if=/dev/zero", "of=/tmp/fsize-probe.out", "bs=64k", "count=4")
    assert proc.returncode == 128 + signal.SIGXFSZ and b"file size limit" in proc.stderr, proc


@pytest.mark.parametrize(
    "args, option",
    [
        (["--memory", "1M"], "--memory"),
        (["--memory", "x"], "--memory"),
        (["--memory-swap", "1G"], "--memory-swap"),
        (["--cpus", "0"], "--cpus"),
        (["--cpu-shares", "1"], "--cpu-shares"),
        (["--pids-limit", "0"], "--pids-limit"),
        (["--cpuset-cpus", "a"], "--cpuset-cpus"),
        (["--ulimit", "nofile"], "--ulimit"),
        (["--ulimit", "bogus=1"], "--ulimit"),
        (["--ulimit", "nofile=10:5"], "--ulimit"),
        (["--cpus", "half"], "--cpus"),
        (["--pids-limit", "many"], "--pids-limit"),
        (["--device-cgroup-rule", "c 7:128"], "--device-cgroup-rule"),
        (["--cpu-rt-period", "1000", "--cpu-rt-runtime", "2000"], "--cpu-rt-runtime"),
    ],
)
def test_cli_bad_limits_name_the_option(args, option):
    proc = run_cli(*args, "--", "true")
    assert proc.returncode in (2, 125), proc  # 2: argparse's own type errors
    assert f"{option}" in proc.stderr.decode(), proc.stderr


def test_a_limit_the_kernel_refuses_is_a_setup_error():
    """cpuset.cpus must be within the parent's: the kernel's refusal names the
    file, and nothing is left behind."""
    from sandboxlib.config import CgroupLimits

    layout = cgroups.detect()
    name = cgroups.cgroup_name(statedir.state_root(), "f" * 16)
    bad = cgroups.plan_cgroup(layout, CgroupLimits(cpuset_cpus="4000"), name)  # past Limits' own check
    with pytest.raises(sb.SetupError) as info:
        bad.create()
    assert info.value.step == "CGROUP" and "cpuset.cpus" in str(info.value), info.value
    assert _paths_exist(bad.paths) == []


# -- rootless in a delegated cgroup v2 subtree -------------------------------------------
DELEGATED = textwrap.dedent("""
    import json, time, sandboxlib as sb
    from sandboxlib import cgroups
    out = {"own": cgroups.detect().v2}
    try:
        sb.Container(limits=sb.Limits(memory="64M")).start()
    except sb.UnsupportedError as err:
        out["memory"] = str(err)
    with sb.Container() as c:
        out["paths"] = list(c._cgroup.paths)
        started = time.monotonic()
        r = c.run(["sh", "-c", "setsid sh -c 'echo grandchild; sleep 1000' & echo main; sleep 1000"],
                  timeout=0.5, stdin=sb.DEVNULL)
        out["run"] = [r.timed_out, sorted(r.stdout.decode().split()), time.monotonic() - started < 10]
        deadline = time.monotonic() + 10
        while [p.name for p in c.top()] != ["sbx-init", "sbx-launcher"] and time.monotonic() < deadline:
            time.sleep(0.02)
        out["top"] = [p.name for p in c.top()]
        out["stats"] = c.stats().source
    print(json.dumps(out), flush=True)
""")


def test_rootless_in_a_delegated_cgroup():
    """A rootless process whose own cgroup v2 is delegated to it (here the
    controller-less unified tree: kill and events, no limits) gives each
    container a cgroup there, and c.run(timeout) kills setsid grandchildren."""
    import pwd

    from . import rootless

    user = pwd.getpwnam("sbxtest")
    delegated = os.path.join(cgroups.detect().v2, session_cgroup_prefix() + "delegated")
    os.mkdir(delegated)
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(delegated, name), user.pw_uid, user.pw_gid)
        argv = rootless.launcher(user, [PY, "-c", DELEGATED])
        proc = subprocess.run(
            ["sh", "-c", f'echo $$ > {delegated}/cgroup.procs && exec "$@"', "sh", *argv],
            capture_output=True,
            timeout=120,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        import json

        out = json.loads(proc.stdout)
    finally:
        assert _wait_until(lambda: cgroups.release_paths([delegated]) is False)
    assert out["own"] == delegated
    assert "limits.memory" in out["memory"], out
    assert [os.path.dirname(p) for p in out["paths"]] == [delegated]
    assert out["run"] == [True, ["grandchild", "main"], True], out
    assert out["top"] == ["sbx-init", LAUNCHER] and out["stats"] == "cgroup"  # (the launcher forked the run)


# -- a v1-only host: the freezer kills ------------------------------------------------------
def test_v1_only_layout_kills_with_the_freezer():
    """Without a v2 tree (as on a v1-only host) a container's cgroup includes
    the v1 freezer, and kill-all is freeze, SIGKILL every process, thaw: a
    fork bomb cannot outrun it.  Timeouts fall back to the process group."""
    from unittest import mock

    real = cgroups.detect()
    v1_only = cgroups.Layout(v1=real.v1, v2=None, v2_controllers=frozenset())
    with mock.patch("sandboxlib.runtime.lifecycle.cgroups.detect", return_value=v1_only):
        c = sb.Container(limits=sb.Limits(pids=40))
        c.start()
        try:
            freezer = c._cgroup.node("freezer")
            assert freezer is not None and c._cgroup.v2 is None
            c.spawn([PY, "-c", BOMB], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
            current = os.path.join(c._cgroup.node("pids").path, "pids.current")
            assert _wait_until(lambda: int(cgroups.fs.read_text(current)) >= 30)
            c._cgroup.kill()  # what close() and stop() do first
            procs = os.path.join(freezer.path, "cgroup.procs")
            assert _wait_until(lambda: cgroups.fs.read_text(procs) == "")
            assert _wait_until(lambda: not c.running)  # the init too: it is in the cgroup
            with open(os.path.join(freezer.path, "freezer.state")) as f:
                assert f.read().strip() == "THAWED"
        finally:
            c.close()
        with sb.Container() as c:
            r = c.run(["sh", "-c", "sleep 1000 & echo main; sleep 1000"], timeout=0.5, **NO_STDIN)
            assert r.timed_out and r.stdout == b"main\n", r
        paths = c._cgroup.paths
    assert _paths_exist(paths) == []


# -- verdicts and settings: the decisions alone ------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, verdict",
    [
        ({"exit_code": 0}, sb.Verdict.EXITED),
        ({"exit_code": 3}, sb.Verdict.EXITED),
        ({"exit_code": 137, "sig": signal.SIGKILL}, sb.Verdict.SIGNALED),
        ({"exit_code": 137, "sig": signal.SIGKILL, "timed_out": True, "oom_killed": True}, sb.Verdict.TIMEOUT),
        ({"exit_code": 137, "sig": signal.SIGKILL, "oom_killed": True}, sb.Verdict.OOM),
        ({"exit_code": 0, "oom_killed": True}, sb.Verdict.EXITED),
        ({"exit_code": 2, "pids_limit_hit": True}, sb.Verdict.PIDS_LIMIT),
        ({"exit_code": 0, "pids_limit_hit": True}, sb.Verdict.EXITED),
        ({"exit_code": 159, "sig": signal.SIGSYS}, sb.Verdict.SECCOMP),
        ({"exit_code": 153, "sig": signal.SIGXFSZ, "pids_limit_hit": True}, sb.Verdict.FSIZE),
        ({"exit_code": 152, "sig": signal.SIGXCPU}, sb.Verdict.CPU_TIME),
    ],
)
def test_verdict_of(kwargs, verdict):
    from sandboxlib.results import verdict_of

    args = {"sig": None, "timed_out": False, "oom_killed": False, "pids_limit_hit": False, **kwargs}
    assert verdict_of(**args) is verdict


def test_v2_settings():
    from sandboxlib.cgroups.settings import shares_to_weight, v2_settings

    limits = sb.Limits(memory="64M", memory_swap="96M", cpus=1.5, cpu_shares=1024, pids=7, cpuset_cpus="0").cgroup()
    assert v2_settings(limits) == {
        "memory": [("memory.max", str(64 << 20)), ("memory.swap.max", str(32 << 20))],
        "cpu": [("cpu.max", "150000 100000"), ("cpu.weight", "39")],
        "pids": [("pids.max", "7")],
        "cpuset": [("cpuset.cpus", "0")],
    }
    assert v2_settings(sb.Limits(memory="64M", memory_swap=-1).cgroup())["memory"][1] == ("memory.swap.max", "max")
    assert (shares_to_weight(2), shares_to_weight(262144)) == (1, 10000)


def test_one_shot_verdicts():
    r = sb.run(["sh", "-c", "echo out; echo err >&2; sleep 1000"], timeout=0.3, **NO_STDIN)
    assert r.verdict is sb.Verdict.TIMEOUT and (r.stdout, r.stderr) == (b"out\n", b"err\n"), r
    r = sb.run(["sh", "-c", "for i in $(seq 20); do sleep 5 & done; wait"], limits=sb.Limits(pids=8), **NO_STDIN)
    assert r.verdict is sb.Verdict.PIDS_LIMIT, r


def test_cli_rootless_limit_is_refused():
    import pwd

    from . import rootless

    user = pwd.getpwnam("sbxtest")
    argv = rootless.launcher(user, [PY, "-m", "sandboxlib", "run", "--memory", "64M", "--", "true"])
    proc = subprocess.run(argv, capture_output=True, timeout=120, cwd="/", stdin=subprocess.DEVNULL)
    assert proc.returncode == 125, proc
    assert b"limits.memory" in proc.stderr and b"Delegate=" in proc.stderr, proc.stderr


def test_v2_placement_beside_a_cgroup_with_processes(tmp_path):
    """Where a v2 cgroup that needs controllers goes (a decision on the
    directory layout alone; this host's v2 tree has no controllers to try it
    with): below our own cgroup when that is the root, else beside it (ours
    holds us, and cgroup v2 lets only a cgroup without processes give
    controllers to children)."""
    from sandboxlib.config import CgroupLimits

    root = tmp_path / "v2"
    own = root / "delegated" / "leaf"
    own.mkdir(parents=True)
    for directory in (root, root / "delegated", own):
        (directory / "cgroup.procs").write_text("")
    for directory in (root / "delegated", own):
        (directory / "cgroup.type").write_text("domain\n")
    limits = CgroupLimits(memory=64 << 20, pids=10)

    def placed(own_dir):
        layout = cgroups.Layout(v1={}, v2=str(own_dir), v2_controllers=frozenset({"memory", "pids"}))
        group = cgroups.plan_cgroup(layout, limits, "sandboxlib-test")
        return group.v2.path, sorted(group.v2.controllers)

    assert placed(own) == (str(root / "delegated" / "sandboxlib-test"), ["memory", "pids"])
    assert placed(root) == (str(root / "sandboxlib-test"), ["memory", "pids"])
    layout = cgroups.Layout(v1={}, v2=str(own), v2_controllers=frozenset({"memory", "pids"}))
    assert cgroups.plan_cgroup(layout, CgroupLimits(), "x").v2.path == str(own / "x")  # no controllers


# -- a running container's limits changed (docker update) -------------------------------
def _limit_file(c, controller: str, name: str) -> str:
    with open(os.path.join(c._cgroup.node(controller).path, name)) as f:
        return f.read().strip()


def test_update_limits_of_a_running_container():
    """update_limits writes the changed limits into the running container's
    cgroup; what it cannot change is refused:
    an rlimit, a removed limit, a kind of limit the container started without."""
    with sb.Container(limits=sb.Limits(memory="64M", pids=50, cpu_shares=512, nofile=256)) as c:
        memory = "memory.limit_in_bytes" if c._cgroup.node("memory").version == "v1" else "memory.max"
        c.update_limits(sb.Limits(memory="48M", pids=40, cpu_shares=1024, nofile=256))
        assert _limit_file(c, "memory", memory) == str(48 << 20)
        assert _limit_file(c, "pids", "pids.max") == "40"
        r = c.run(["sh", "-c", "ulimit -n"], **NO_STDIN)  # the commands run on, under the new limits
        assert r.stdout.strip() == b"256"
        with pytest.raises(sb.ConfigError, match="rlimits"):
            c.update_limits(sb.Limits(memory="48M", pids=40, cpu_shares=1024, nofile=128))
        with pytest.raises(sb.UnsupportedError, match="pids"):
            c.update_limits(sb.Limits(memory="48M", cpu_shares=1024, nofile=256))
        assert _limit_file(c, "pids", "pids.max") == "40"  # (a refused update changes nothing)
    with sb.Container() as c:
        if c._cgroup.node("pids") is None:  # (no statistics hierarchies without limits)
            with pytest.raises(sb.UnsupportedError, match="pids"):
                c.update_limits(sb.Limits(pids=10))
    with pytest.raises(sb.ContainerStateError):
        c.update_limits(sb.Limits(pids=10))


# -- device cgroup rules and real-time CPU time ---------------------------------------------
def test_v1_settings_of_device_rules_and_realtime():
    from sandboxlib.cgroups.settings import v1_settings, v2_settings
    from sandboxlib.config import DEFAULT_DEVICE_RULES

    limits = sb.Limits(device_rules=["c 7:128 rwm", "b 8:* r"], cpu_rt_period_us=1000, cpu_rt_runtime_us=500)
    settings = v1_settings(limits.cgroup())
    assert settings["cpu"] == [("cpu.rt_period_us", "1000"), ("cpu.rt_runtime_us", "500")]  # the period first
    defaults = [("devices.allow", line.split(" ", 1)[1]) for line in DEFAULT_DEVICE_RULES]
    assert settings["devices"] == [
        ("devices.deny", "a"),
        *defaults,
        ("devices.allow", "c 7:128 rwm"),
        ("devices.allow", "b 8:* r"),
    ]
    assert v2_settings(limits.cgroup()) == {}  # (v2 has neither: plan_cgroup refuses them there)
    assert sb.Limits().cgroup().devices is None  # no rules: no device cgroup at all


DEVICE_PROBE = ["sh", "-c", "exec 3<>/dev/x/tun && echo opened"]


def test_device_rules_are_the_containers_device_cgroup(tmp_path):
    """A node of 10:200 (a private one, not the host's /dev/net/tun) opens
    without rules; with rules only when they allow it (the kernel's device
    cgroup says EPERM otherwise); the cgroup lists the defaults and the rules."""
    directory = tmp_path / "nodes"
    directory.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # (the container's root is an unprivileged host user)
    os.mknod(directory / "tun", 0o666 | 0o020000, os.makedev(10, 200))
    os.chmod(directory / "tun", 0o666)
    mounts = [sb.Mount.bind(str(directory), "/dev/x")]
    assert sb.run(DEVICE_PROBE, mounts=mounts, **NO_STDIN).stdout == b"opened\n"
    allowed = sb.run(DEVICE_PROBE, mounts=mounts, limits=sb.Limits(device_rules=["c 10:* rw"]), **NO_STDIN)
    assert allowed.stdout == b"opened\n", allowed
    denied = sb.run(DEVICE_PROBE, mounts=mounts, limits=sb.Limits(device_rules=["c 7:128 rwm"]), **NO_STDIN)
    assert denied.exit_code != 0 and b"Operation not permitted" in denied.stderr, denied
    with sb.Container(limits=sb.Limits(device_rules=["c 7:128 rwm"])) as c:
        node = c._cgroup.node("devices")
        assert node is not None and node.version == "v1"
        with open(os.path.join(node.path, "devices.list")) as f:
            listed = f.read().split("\n")
        assert listed[:3] == ["c *:* m", "b *:* m", "c 1:3 rwm"] and "c 7:128 rwm" in listed, listed
        assert c.run(["sh", "-c", "echo x > /dev/null && head -c1 /dev/zero | wc -c"], **NO_STDIN).stdout == b"1\n"
        paths = c._cgroup.paths
    assert _paths_exist(paths) == []


def test_cli_device_rules_and_realtime(tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    os.mknod(nodes / "tun", 0o666 | 0o020000, os.makedev(10, 200))
    os.chmod(nodes / "tun", 0o666)
    probe = ["-v", f"{nodes}:/dev/x", "--", *DEVICE_PROBE]
    allowed = run_cli(
        "--device-cgroup-rule", "c 10:200 rw", "--cpu-rt-period", "10000", "--cpu-rt-runtime", "100", *probe
    )
    assert allowed.returncode == 0 and allowed.stdout == b"opened\n", allowed
    denied = run_cli("--device-cgroup-rule", "c 7:128 rwm", *probe)
    assert denied.returncode != 0 and b"Operation not permitted" in denied.stderr, denied


def check_device_rules_and_realtime():
    out = {}
    for name, limits in (
        ("devices", sb.Limits(device_rules=["c 7:128 rwm"])),
        ("realtime", sb.Limits(cpu_rt_period_us=10000, cpu_rt_runtime_us=500)),
    ):
        try:
            with sb.Container(limits=limits) as c:
                node = c._cgroup.node("cpu")
                if name == "realtime":
                    with open(os.path.join(node.path, "cpu.rt_runtime_us")) as f:
                        runtime = f.read().strip()
                    with open(os.path.join(node.path, "cpu.rt_period_us")) as f:
                        out[name] = (runtime, f.read().strip())
                else:
                    out[name] = c.run(["true"], **NO_STDIN).exit_code
        except sb.UnsupportedError as err:
            out[name] = str(err)
    return out


def test_device_rules_and_realtime_root_and_rootless(runner):
    """As root both are applied (this host's v1 cpu hierarchy has real-time
    group scheduling); rootless they are refused, saying why, never ignored."""
    out = runner(check_device_rules_and_realtime)
    if not runner.rootless:
        assert out == {"devices": 0, "realtime": ("500", "10000")}, out
        return
    assert "device cgroup rules need root" in out["devices"], out
    assert "limits.cpu_rt_period_us" in out["realtime"] and "Delegate=" in out["realtime"], out


def test_device_rules_and_realtime_on_a_v2_tree():
    """cgroup v2 has no devices files and no cpu.rt_* (the real v2 tree of this
    host, as a v2-only layout would offer it): refused, saying what they need."""
    from sandboxlib.cgroups.layout import Layout
    from sandboxlib.config import CgroupLimits

    own = cgroups.detect().v2
    assert own is not None
    v2_only = Layout(v1={}, v2=own, v2_controllers=frozenset({"cpu"}))
    name = cgroups.cgroup_name(statedir.state_root(), "e" * 16)
    with pytest.raises(sb.UnsupportedError, match="eBPF"):
        cgroups.plan_cgroup(v2_only, sb.Limits(device_rules=["c 7:128 rwm"]).cgroup(), name)
    with pytest.raises(sb.UnsupportedError, match="CONFIG_RT_GROUP_SCHED"):
        cgroups.plan_cgroup(v2_only, CgroupLimits(cpu_rt_runtime_us=500), name)


def test_a_realtime_runtime_beyond_the_parents_is_a_setup_error():
    """The kernel gives a cgroup at most what its parent has left: asking for
    more is its refusal naming the file, and nothing is left behind."""
    with open(os.path.join(cgroups.detect().v1["cpu"], "cpu.rt_runtime_us")) as f:
        parent = int(f.read())
    limits = sb.Limits(cpu_rt_period_us=1_000_000, cpu_rt_runtime_us=min(parent + 1, 1_000_000))
    with pytest.raises(sb.SetupError) as info:
        sb.Container(limits=limits).start()
    assert "cpu.rt_runtime_us" in str(info.value), info.value
    assert session_cgroups() == []


def test_update_limits_raises_memory_above_the_old_memory_and_swap():
    """On cgroup v1 the memory limit may never exceed memsw: a raise wrote
    memory.limit_in_bytes first, above the old memsw (twice the old memory), and the
    kernel refused it (EINVAL; the daemon's 500 on ``docker update -m`` of a
    ``-m 64m`` container, with or without --memory-swap)."""
    with sb.Container(limits=sb.Limits(memory="64M")) as c:
        c.update_limits(sb.Limits(memory="200M"))
        c.update_limits(sb.Limits(memory="300M", memory_swap="900M"))
        if c._cgroup.node("memory").version == "v1":
            assert _limit_file(c, "memory", "memory.limit_in_bytes") == str(300 << 20)
            if os.path.exists(os.path.join(c._cgroup.node("memory").path, "memory.memsw.limit_in_bytes")):
                assert _limit_file(c, "memory", "memory.memsw.limit_in_bytes") == str(900 << 20)
            c.update_limits(sb.Limits(memory="32M", memory_swap="40M"))  # and down again below both
            assert _limit_file(c, "memory", "memory.limit_in_bytes") == str(32 << 20)
        else:
            assert _limit_file(c, "memory", "memory.max") == str(300 << 20)


def test_update_limits_racing_close_is_a_state_error():
    """Updates from threads while another closes the container: each is done or
    ContainerStateError (the cgroup, removed under a write, gave SetupError
    "No such file or directory": the daemon's 500 on an update racing a stop)."""
    failures = []
    for _ in range(15):
        c = sb.Container(limits=sb.Limits(memory="64M", pids=50))
        c.start()
        done = threading.Event()

        def update(c=c, done=done):
            n = 0
            while not done.is_set():
                n += 1
                try:
                    c.update_limits(sb.Limits(memory=f"{48 + n % 8}M", pids=40 + n % 5))
                except sb.ContainerStateError:
                    return
                except Exception as err:  # (anything else is the failure)
                    failures.append(err)
                    return

        threads = [threading.Thread(target=update) for _ in range(3)]
        for thread in threads:
            thread.start()
        c.close()
        done.set()
        for thread in threads:
            thread.join()
    assert failures == []
