"""Lifecycle and cleanup: everything of a container ends with it, also after
errors, SIGKILL of its owner and from other threads; the host process is
left alone."""
from __future__ import annotations

import errno
import gc
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
from sandboxlib import statedir
from sandboxlib._lowlevel import Step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def check_exit_kills_everything():
    pids = []
    with pytest.raises(RuntimeError):
        with sb.Container() as c:
            p = c.spawn(["sh", "-c", "sleep 100 & sleep 100"])
            pids = [c.pid, p.pid]
            raise RuntimeError("the body failed")
    assert c.pid is None and not c.running
    assert _wait_gone(pids), pids
    with pytest.raises(sb.ContainerStateError):
        c.run(["true"])
    with pytest.raises(sb.ContainerStateError):
        c.spawn(["true"])
    c.close()  # idempotent
    c.close()
    c.stop()


def test_exit_kills_everything(runner):
    runner(check_exit_kills_everything)


def check_stop():
    with sb.Container() as c:
        stubborn = c.spawn(["sh", "-c", "trap '' TERM; sleep 100"])
        time.sleep(0.2)  # let the trap be installed
        start = time.monotonic()
        c.stop(timeout=0.5)
        stubborn_time = time.monotonic() - start
        stubborn_code = stubborn.wait(10)
    with sb.Container() as c:
        coop = c.spawn(["sleep", "100"])
        start = time.monotonic()
        c.stop(timeout=30)
        coop_time = time.monotonic() - start
        coop_code = coop.wait(10)
        c.stop()
    with sb.Container() as c:
        start = time.monotonic()
        c.stop(timeout=30)
        idle = time.monotonic() - start
    return stubborn_code, stubborn_time, coop_code, coop_time, idle


def test_stop(runner):
    stubborn_code, stubborn_time, coop_code, coop_time, idle = runner(check_stop)
    assert stubborn_code == -signal.SIGKILL and stubborn_time < 10, (stubborn_code, stubborn_time)
    assert coop_code == -signal.SIGTERM and coop_time < 10, (coop_code, coop_time)  # not the 30 s grace
    assert idle < 10, idle


def check_exit_status_survives_close():
    with sb.Container() as c:
        p = c.spawn(["sh", "-c", "exit 7"])
        deadline = time.monotonic() + 10
        while psutil.pid_exists(p.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the init has reaped it ...
        time.sleep(0.1)  # ... and queued its exit reply (sent right after the reap)
    return p.wait(10)


def test_exit_status_survives_close(runner):
    # a command that ended before the container closed keeps its own exit status
    assert runner(check_exit_status_survives_close) == 7


def check_failed_start_leaks_nothing():
    c = sb.Container()
    c._fault = (int(Step.MOUNT), errno.EIO)
    with pytest.raises(sb.SetupError):
        with c:
            pass
    assert c.pid is None
    c = sb.Container()
    c._fault = (int(Step.PIVOT), errno.EIO)
    with pytest.raises(sb.SetupError):
        sb.run(["true"], container=c)
    c = sb.Container()
    c._fault = (int(Step.MOUNT), errno.EIO)
    try:
        with pytest.raises(sb.SetupError):
            c._run(["true"], input=None, timeout=None, stdin=None, stdout=sb.PIPE, stderr=sb.PIPE,
                   env=None, cwd=None, user=None, main=True)
    finally:
        c.close()
    assert c.pid is None


def test_failed_start_leaks_nothing(runner):
    runner(check_failed_start_leaks_nothing)


OWNER = textwrap.dedent("""
    import sandboxlib as sb, time
    c = sb.Container(); c.start()
    p = c.spawn(["sleep", "1000"])
    print(c.id, c.pid, p.pid, flush=True)
    time.sleep(1000)
""")


def test_sigkill_of_the_owner():
    env = dict(os.environ, PYTHONPATH=REPO)
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env)
    container_id, init_pid, sleep_pid = owner.stdout.readline().split()
    owner.stdout.close()
    record = os.path.join(statedir.state_root(), container_id)
    assert os.path.exists(record)
    owner.kill()
    owner.wait()
    assert _wait_gone([int(init_pid), int(sleep_pid)]), "the container outlived its owner"
    assert os.path.exists(record)  # left behind ...
    subprocess.run([sys.executable, "-c", "import sandboxlib as sb; sb.run(['true'])"], env=env, check=True)
    assert not os.path.exists(record)  # ... and swept by the next start


def check_started_from_a_short_lived_thread():
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("c", sb.Container().start()))
    thread.start()
    thread.join()
    time.sleep(0.2)  # PR_SET_PDEATHSIG would have fired by now
    c = box["c"]
    try:
        assert c.running
        assert c.run(["echo", "alive"]).stdout == b"alive\n"
    finally:
        c.close()


def test_started_from_a_short_lived_thread(runner):
    runner(check_started_from_a_short_lived_thread)


def check_concurrency():
    errors = []

    def one_shot(i):
        for j in range(5):
            try:
                r = sb.run(["hostname"], hostname=f"t{i}n{j}")
                assert r.stdout == f"t{i}n{j}\n".encode(), r
            except BaseException as err:  # noqa: BLE001 - collected for the assert
                errors.append(repr(err))

    threads = [threading.Thread(target=one_shot, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sb.Container() as c:
        def shared(i):
            try:
                assert c.run(["echo", str(i)]).stdout == f"{i}\n".encode()
            except BaseException as err:  # noqa: BLE001
                errors.append(repr(err))
        threads = [threading.Thread(target=shared, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]


def test_concurrency(runner):
    runner(check_concurrency)


def test_garbage_collected_container_warns_and_dies():
    c = sb.Container().start()
    pid = c.pid
    with pytest.warns(ResourceWarning):
        del c
        gc.collect()
    assert _wait_gone([pid])


def test_host_process_left_alone():
    valid = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
    before = (os.getcwd(), os.umask(0o022), dict(os.environ), [signal.getsignal(s) for s in valid],
              signal.pthread_sigmask(signal.SIG_BLOCK, []))
    os.umask(before[1])
    sb.run(["true"])
    with sb.Container() as c:
        c.run(["true"])
        c.spawn(["true"]).wait(10)
    after = (os.getcwd(), os.umask(0o022), dict(os.environ), [signal.getsignal(s) for s in valid],
             signal.pthread_sigmask(signal.SIG_BLOCK, []))
    os.umask(after[1])
    assert after == before
