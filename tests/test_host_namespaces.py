"""The host's pid and UTS namespaces (``pid_namespace="host"``,
``uts_namespace="host"``: docker's ``--pid host``, ``--uts host``): what the
container sees of the host, and that its root, an unprivileged host id as
root, can do nothing to host processes of other users."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import sandboxlib as sb
from sandboxlib import ConfigError, ContainerConfig, Namespace, UnsupportedError

from .conftest import run_cli, wait_until

# Run in the container (the host view has the host's python3): for each pid,
# what kill, ptrace and reading its environment do.
PROBE = r"""
import ctypes, errno, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
for pid in map(int, sys.argv[1:]):
    found = [os.path.isdir(f"/proc/{pid}")]
    try:
        os.kill(pid, signal.SIGKILL)
        found.append("killed")
    except OSError as err:
        found.append(errno.errorcode[err.errno])
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        found.append("traced")
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    else:
        found.append(errno.errorcode[ctypes.get_errno()])
    try:
        open(f"/proc/{pid}/environ", "rb").read()
        found.append("read")
    except OSError as err:
        found.append(errno.errorcode[err.errno])
    print(*found)
"""


def _host_sleeper(uid: int) -> subprocess.Popen:
    """A host process of ``uid`` (a distinct sleep, found by its argv)."""
    argv = ["sleep", "3601"]
    if uid:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
    return subprocess.Popen(argv)


def test_host_pid_namespace_sees_host_processes_and_cannot_touch_other_users():
    sleepers = [_host_sleeper(0), _host_sleeper(65534)]
    try:
        result = sb.run(
            ["python3", "-c", PROBE, *(str(p.pid) for p in sleepers)],
            pid_namespace="host",
            seccomp=None,  # (the kernel's checks alone: no filter refusing ptrace first)
            stderr=sb.STDOUT,
        )
        assert result.exit_code == 0, result.stdout
        lines = result.stdout.decode().splitlines()
        # Seen (its /proc is the host's), but neither killed, traced nor read: another uid.
        assert lines == ["True EPERM EPERM EACCES"] * 2, lines
        assert all(p.poll() is None for p in sleepers)
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_host_pid_namespace_cannot_touch_another_containers_processes():
    """Another container's processes run as the same host uid (as root, the
    default maps: its root's), which is all kill() and ptrace() check: the
    container is a Landlock domain of its own, whose signals and traces stay
    in it.  (Found by the review: the probe SIGKILLed the other's init.)"""
    with sb.Container() as victim:
        command = victim.spawn(["sleep", "1797.5"])
        try:
            assert wait_until(lambda: _processes_with("1797.5"), seconds=5)
            targets = [*_processes_with("1797.5"), victim.pid]
            result = sb.run(
                ["python3", "-c", PROBE, *map(str, targets)],
                pid_namespace="host",
                seccomp=None,  # (the kernel's checks alone)
                stderr=sb.STDOUT,
            )
            lines = result.stdout.decode().splitlines()
            assert lines == ["True EPERM EPERM EACCES"] * 2, lines
            assert command.poll() is None and victim.run(["true"]).exit_code == 0
        finally:
            command.kill()
            command.wait()


def test_a_private_pid_namespace_does_not_see_them():
    """The probe can tell: the same run in the container's own pid namespace sees no such pid."""
    sleeper = _host_sleeper(0)
    try:
        result = sb.run(["python3", "-c", PROBE, str(sleeper.pid)], seccomp=None, stderr=sb.STDOUT)
        assert result.stdout.decode().split()[0] == "False", result.stdout
    finally:
        sleeper.kill()
        sleeper.wait()


def test_host_pid_namespace_container_processes_are_host_pids_and_may_signal_their_own():
    with sb.Container(pid_namespace="host") as c:
        shown = c.run(["sh", "-c", "echo $$; sleep 60 & kill $!; wait $!; echo $?"]).stdout.decode().split()
        assert int(shown[0]) > 1 and shown[1] == str(128 + signal.SIGTERM)
        # The init is not PID 1 of anything: it is a host pid, and /proc/1 is the host's init.
        assert c.run(["cat", "/proc/1/comm"]).stdout.decode().strip() != "sbx-init"
        assert c.run(["readlink", "/proc/self"]).stdout.decode().strip().isdigit()


def _processes_with(marker: str) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("lasting", [False, True])
def test_host_pid_namespace_leaves_no_process_behind(lasting):
    """Its pid namespace does not end with its init: the container's cgroup ends
    what escaped into a session of its own (one-shot runs get a cgroup too)."""
    marker = "1799.25" if lasting else "1799.5"
    escape = ["sh", "-c", f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & echo started"]
    if lasting:
        with sb.Container(pid_namespace="host") as c:
            assert c.run(escape).stdout == b"started\n"
            assert wait_until(lambda: _processes_with(marker), seconds=5)
    else:
        assert sb.run(escape, pid_namespace="host").stdout == b"started\n"
    assert wait_until(lambda: not _processes_with(marker), seconds=5), _processes_with(marker)


def check_host_uts() -> tuple:
    """(the container's hostname, what changing it said, the host's hostname after).  Even
    with CAP_SYS_ADMIN: its capabilities are its user namespace's, not the host UTS namespace's."""
    command = ["sh", "-c", "hostname; hostname changed-by-container; echo $?"]
    result = sb.run(command, uts_namespace="host", cap_add=["SYS_ADMIN"])
    return result.stdout.decode().split(), socket.gethostname()


def test_host_uts_namespace_has_the_hosts_name_and_cannot_change_it(runner):
    (shown, status), after = runner(check_host_uts)
    assert shown == after == socket.gethostname()
    assert status != "0"


def test_private_uts_namespace_may_change_its_own_name():
    result = sb.run(["sh", "-c", "hostname other && hostname"], cap_add=["SYS_ADMIN"])
    assert result.stdout == b"other\n" and socket.gethostname() != "other"


def check_host_pid_rootless() -> str:
    try:
        sb.run(["true"], pid_namespace="host")
    except UnsupportedError as err:
        return str(err)
    return "ran"


def test_host_pid_namespace_rootless_needs_a_cgroup(runner):
    """Rootless without a delegated cgroup nothing could end the container's
    escaped processes: refused before anything is made."""
    said = runner(check_host_pid_rootless)
    if runner.rootless:
        assert "pid_namespace='host'" in said and "cgroup" in said
    else:
        assert said == "ran"


def test_options_are_checked_and_named():
    assert ContainerConfig(pid_namespace="host").pid_namespace is Namespace.HOST
    assert ContainerConfig().uts_namespace is Namespace.PRIVATE
    with pytest.raises(ConfigError, match="pid_namespace"):
        ContainerConfig(pid_namespace="container:abc")
    with pytest.raises(ConfigError, match="uts_namespace"):
        ContainerConfig(uts_namespace=True)
    with pytest.raises(ConfigError, match="hostname"):
        ContainerConfig(uts_namespace="host", hostname="box")


def test_a_started_container_in_host_namespaces_reports_them():
    with sb.Container(uts_namespace=Namespace.HOST, pid_namespace=Namespace.HOST) as c:
        assert c.hostname == socket.gethostname()
        deadline = time.monotonic() + 5
        while c.pid is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{c.pid}")


OWNER = """
import sys, sandboxlib as sb
c = sb.Container(pid_namespace="host").start()
c.run(["sh", "-c", "setsid sleep 1798.75 </dev/null >/dev/null 2>&1 &"])
print(c.pid, flush=True)
sys.stdin.read()
"""


def test_host_pid_namespace_after_a_sigkill_of_the_owner_the_sweep_ends_what_escaped():
    """The init ends its commands when its owner dies; a process that escaped
    into a session of its own is in the container's cgroup, which the next
    start's sweep kills and removes (as for every container of a dead owner)."""
    from sandboxlib.runtime import statedir

    # (the tested sandboxlib: PYTHONPATH, as conftest sets it)
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/")
    try:
        init = int(owner.stdout.readline())
        assert wait_until(lambda: _processes_with("1798.75"), seconds=5)
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    assert wait_until(lambda: not os.path.exists(f"/proc/{init}"), seconds=10)
    statedir.sweep(statedir.state_root())
    assert wait_until(lambda: not _processes_with("1798.75"), seconds=5), _processes_with("1798.75")


def test_cli_pid_and_uts_options():
    proc = run_cli("--pid", "host", "--uts", "host", "--", "sh", "-c", "hostname; readlink /proc/self/ns/pid")
    assert proc.returncode == 0, proc
    assert proc.stdout.decode().split() == [socket.gethostname(), os.readlink("/proc/self/ns/pid")]
    proc = run_cli("--", "readlink", "/proc/self/ns/pid")
    assert proc.returncode == 0 and proc.stdout.decode().strip() != os.readlink("/proc/self/ns/pid"), proc
    proc = run_cli("--pid", "shared", "--", "true")
    assert proc.returncode == 125 and b"--pid: 'shared' is not one of" in proc.stderr, proc
