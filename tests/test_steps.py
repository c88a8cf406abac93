"""Every set-up step, forced to fail once through the test hook
``Container._fault = (step, errno)``: the failure comes back as a
SetupError naming the step, nothing is left behind, and a command step's
failure leaves its container usable.  Also: a malformed request on the
control socket, a clone the kernel refuses for real, id maps it refuses.

Root and rootless (``runner``); the checks return plain values."""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import textwrap

import psutil
import pytest

import sandboxlib as sb
from sandboxlib import IdMapping
from sandboxlib.native import protocol
from sandboxlib.native.binding import Step
from sandboxlib.native.failures import exec_error

from .conftest import Runner, commands_of, state_records

# Set up by the C child / sbx-init before the container runs: fail in start().
CONTAINER_STEPS = [
    "SYNC",
    "IDENTITY",
    "HOSTNAME",
    "NETWORK",
    "PROPAGATION",
    "BASE",
    "ROOT",
    "MOUNT",
    "PIVOT",
    "INIT_EXEC",
    "CGROUP",
    "KEYRING",
    "SCOPE",
    "LOCKDOWN",
]
# Set up by the init's child for one command: fail in run()/spawn().
COMMAND_STEPS = ["FORK", "STDIO", "RLIMIT", "CHDIR", "USER", "NO_NEW_PRIVS", "CAPS", "SECCOMP", "EXEC"]
# NONE is no step; CLONE and REQUEST are forced for real below; TTY (a tty=True
# command's terminal) in test_tty.py; JOIN (the OCI runtime's namespace joined
# by path) refused for real in test_oci_process_devices.py.
OTHER_STEPS = ["NONE", "CLONE", "REQUEST", "TTY", "JOIN"]


def test_every_step_is_covered():
    assert sorted(CONTAINER_STEPS + COMMAND_STEPS + OTHER_STEPS) == sorted(Step.__members__)


def _snapshot() -> dict:
    state = state_records()
    return {
        "fds": sorted(os.listdir("/proc/self/fd")),
        "children": sorted(c.pid for c in psutil.Process().children()),
        "state": state,
    }


def _describe(err: BaseException) -> dict:
    return {
        "type": type(err).__name__,
        "step": getattr(err, "step", None),
        "errno": getattr(err, "errno", None),
        "field": getattr(err, "field", None),
        "hint": getattr(err, "hint", None),
        "text": str(err),
        "oserror": isinstance(err, OSError),
    }


def _expect_setup_error(call) -> dict:
    try:
        value = call()
    except sb.SandboxError as err:
        return _describe(err)
    if isinstance(value, sb.Process):
        value.kill()
        value.wait()
        value.close()
    raise AssertionError(f"no exception, got {value!r}")


# -- container set-up steps -------------------------------------------------------
def check_container_step(name: str) -> dict:
    before = _snapshot()
    c = sb.Container()
    c._fault = (int(Step[name]), errno.EIO)

    def start():
        with c:
            raise AssertionError("the container started")

    out = {"error": _expect_setup_error(start)}
    out["leaks"] = {k: v for k, v in _snapshot().items() if v != before[k]}
    out["running"] = c.running
    out["run after"] = _expect_setup_error(lambda: c.run(["true"]))["type"]
    out["start again"] = _expect_setup_error(c.start)["type"]
    with sb.Container() as fresh:  # nothing on the host is in the way of the next container
        out["next container"] = fresh.run(["echo", "ok"]).stdout
    return out


@pytest.mark.parametrize("step", CONTAINER_STEPS)
def test_container_step_fails(runner, step):
    out = runner(check_container_step, step)
    err = out["error"]
    assert err["type"] == "SetupError", err
    assert err["oserror"]
    assert (err["step"], err["errno"]) == (step, errno.EIO), err
    assert f"step {step}" in err["text"] and os.strerror(errno.EIO) in err["text"]
    assert out["leaks"] == {}, out
    assert out["running"] is False
    assert out["run after"] == "ContainerStateError"
    assert out["start again"] == "ContainerStateError"
    assert out["next container"] == b"ok\n"


def check_container_step_one_shot(name: str, repeat: int) -> list:
    """A one-shot run() queues its command before the set-up ends: the
    set-up's failure must still be what it raises (every time)."""
    before = _snapshot()
    seen = []
    for _ in range(repeat):
        c = sb.Container()
        c._fault = (int(Step[name]), errno.EIO)
        err = _expect_setup_error(lambda c=c: sb.run(["echo", "hi"], container=c))
        seen.append((err["type"], err["step"], err["errno"]))
    after = _snapshot()
    assert after == before, (before, after)
    return sorted(set(seen))


@pytest.mark.parametrize("step", CONTAINER_STEPS)
def test_container_step_fails_one_shot(runner, step):
    assert runner(check_container_step_one_shot, step, 15) == [("SetupError", step, errno.EIO)]


def check_pid_once_closed(step) -> dict:
    c = sb.Container()
    if step is not None:
        c._fault = (int(Step[step]), errno.EIO)
    try:
        c.start()
    except sb.SetupError:
        pass
    out = {"running": c.running}
    c.close()
    out["pid"] = c.pid
    return out


@pytest.mark.parametrize("step", [None, "MOUNT"], ids=["closed", "failed start"])
def test_pid_is_none_once_closed(runner, step):
    """``Container.pid`` is the init's pid "while running": afterwards it
    would name whatever process reuses the number."""
    out = runner(check_pid_once_closed, step)
    assert out == {"running": step is None, "pid": None}


# -- command set-up steps ---------------------------------------------------------
def check_command_step(name: str) -> dict:
    out = {}
    with sb.Container() as c:
        assert c.run(["true"]).exit_code == 0
        init = psutil.Process(c.pid)
        before = _snapshot()
        c._fault = (int(Step[name]), errno.EIO)
        out["run"] = _expect_setup_error(lambda: c.run(["echo", "hi"]))
        out["spawn"] = _expect_setup_error(lambda: c.spawn(["echo", "hi"], stdin=sb.DEVNULL, stdout=sb.PIPE))
        out["run with input"] = _expect_setup_error(lambda: c.run(["cat"], input=b"data"))
        out["leaks"] = {k: v for k, v in _snapshot().items() if v != before[k]}
        out["left in the container"] = [p.pid for p in commands_of(init.pid, recursive=True)]
        c._fault = None
        again = c.run(["sh", "-c", "cat; echo more"], input=b"data\n")
        out["after"] = (again.exit_code, again.stdout, again.stderr)
        with c.spawn(["echo", "spawned"], stdin=sb.DEVNULL, stdout=sb.PIPE) as proc:
            out["spawn after"] = (proc.communicate()[0], proc.returncode)
        out["running"] = c.running
    return out


@pytest.mark.parametrize("step", COMMAND_STEPS)
def test_command_step_fails(runner, step):
    out = runner(check_command_step, step)
    for how in ("run", "spawn", "run with input"):
        err = out[how]
        assert err["type"] == "SetupError", (how, err)  # EIO: never CommandNotFoundError
        assert (err["step"], err["errno"]) == (step, errno.EIO), (how, err)
        assert f"step {step}" in err["text"], (how, err)
    assert out["leaks"] == {}, out
    assert out["left in the container"] == []
    assert out["after"] == (0, b"data\nmore\n", b"")
    assert out["spawn after"] == (b"spawned\n", 0)
    assert out["running"] is True


def check_command_step_one_shot(name: str) -> dict:
    c = sb.Container()
    c._fault = (int(Step[name]), errno.EIO)
    return _expect_setup_error(lambda: sb.run(["echo", "hi"], container=c))


@pytest.mark.parametrize("step", COMMAND_STEPS)
def test_command_step_fails_one_shot(runner, step):
    err = runner(check_command_step_one_shot, step)
    assert (err["type"], err["step"], err["errno"]) == ("SetupError", step, errno.EIO), err


def check_exec_enoent_is_command_not_found() -> dict:
    """Only a real ENOENT is CommandNotFoundError, also through the hook."""
    with sb.Container() as c:
        c._fault = (int(Step.EXEC), errno.ENOENT)
        forced = _expect_setup_error(lambda: c.run(["true"]))
        c._fault = (int(Step.CHDIR), errno.ENOENT)
        chdir = _expect_setup_error(lambda: c.run(["true"]))
    return {"forced": forced, "chdir": chdir}


def test_enoent(runner):
    out = runner(check_exec_enoent_is_command_not_found)
    assert (out["forced"]["type"], out["forced"]["step"]) == ("CommandNotFoundError", "EXEC")
    assert (out["chdir"]["type"], out["chdir"]["step"]) == ("SetupError", "CHDIR")


# -- REQUEST: a malformed request on the control socket ---------------------------
def _exec_payload() -> bytes:
    """A well-formed EXEC request for ``true``."""
    req = protocol.ExecRequest(
        argv=("true",),
        env=("PATH=/usr/bin:/bin",),
        cwd="/",
        search_path="/usr/bin:/bin",
        uid=0,
        gid=0,
        groups=(),
        rlimits=(),
        cap_keep=0,
        id=999,
    )
    return protocol.encode_exec(req)


MALFORMED = {
    # an EXEC message whose body is garbage
    "garbage": (struct.pack("=I", protocol.MSG_EXEC) + b"\xff garbage \x00\x01" * 5, 4, errno.EINVAL),
    # a header that promises more strings than the message has
    "truncated": (_exec_payload()[:-3], 4, errno.EINVAL),
    # a header with no argv
    "no argv": (
        struct.pack("=IIIIIIQIIIIII", protocol.MSG_EXEC, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0) + b"/\0",
        4,
        errno.EINVAL,
    ),
    # a good request with the reply socket but no stdio
    "missing fds": (_exec_payload(), 1, errno.EBADMSG),
}


def check_malformed_request(case: str) -> dict:
    payload, nfds, _ = MALFORMED[case]
    out = {}
    with sb.Container() as c:
        init = psutil.Process(c.pid)
        ours, theirs = protocol.reply_socketpair()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            fds = [theirs.fileno()] + [null] * (nfds - 1)
            socket.send_fds(c._control, [payload], fds)
            theirs.close()
            os.close(null)
            null = -1
            ours.settimeout(10)
            reply = protocol.decode_reply(ours)
            out["reply"] = None if reply is None else (reply.kind, reply.step, reply.errno, reply.host_pid)
            # the init closed every fd it got: EOF after the one reply
            out["then"] = protocol.decode_reply(ours)
        finally:
            ours.close()
            theirs.close()
            if null >= 0:
                os.close(null)
        if reply is not None:
            err = exec_error(reply.step, reply.errno, reply.index, {})
            out["exception"] = _describe(err)
        out["left in the container"] = [p.pid for p in commands_of(init.pid, recursive=True)]
        again = c.run(["echo", "still works"])
        out["after"] = (again.exit_code, again.stdout)
    return out


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request(runner, case):
    out = runner(check_malformed_request, case)
    expected_errno = MALFORMED[case][2]
    assert out["reply"] == (protocol.REPLY_FAILED, int(Step.REQUEST), expected_errno, None), out
    assert out["then"] is None
    err = out["exception"]
    assert (err["type"], err["step"], err["errno"]) == ("SetupError", "REQUEST", expected_errno)
    assert out["left in the container"] == []
    assert out["after"] == (0, b"still works\n")


def check_not_a_request() -> dict:
    """A message of no known type: no reply, the fds are closed, the init goes on."""
    with sb.Container() as c:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(c._control, [b"\x7f\x00\x00\x00junk"], [theirs.fileno()] * 4)
            theirs.close()
            ours.settimeout(10)
            reply = protocol.decode_reply(ours)
        finally:
            ours.close()
            theirs.close()
        again = c.run(["echo", "still works"])
        return {"reply": reply, "after": (again.exit_code, again.stdout)}


def test_not_a_request(runner):
    assert runner(check_not_a_request) == {"reply": None, "after": (0, b"still works\n")}


# -- CLONE: a clone the kernel refuses ----------------------------------------------
def check_clone_fails_nproc() -> dict:
    """Rootless: RLIMIT_NPROC below our process count makes clone fail (EAGAIN)."""
    with sb.Container() as running:
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        before = _snapshot()
        c = sb.Container()
        resource.setrlimit(resource.RLIMIT_NPROC, (0, hard))
        try:
            out = {"error": _expect_setup_error(c.start)}
        finally:
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        out["leaks"] = {k: v for k, v in _snapshot().items() if v != before[k]}
        out["running"] = c.running
        out["other container"] = running.run(["echo", "ok"]).stdout
    with sb.Container() as fresh:
        out["next container"] = fresh.run(["echo", "ok"]).stdout
    return out


def test_clone_fails_rootless(workers):
    out = Runner("rootless", workers["sbxtest"])(check_clone_fails_nproc)
    err = out["error"]
    assert (err["type"], err["step"], err["errno"]) == ("SetupError", "CLONE", errno.EAGAIN), err
    assert "clone(" in err["text"] and "step CLONE" in err["text"]
    assert out["leaks"] == {} and out["running"] is False
    assert out["other container"] == b"ok\n" and out["next container"] == b"ok\n"


# As root, RLIMIT_NPROC does not apply: in a user namespace of its own (ids
# mapped 1:1, so that it is root there with every id) a process lowers the
# namespace's pid-namespace limit to 0; a container's clone then fails.
CLONE_SCRIPT = textwrap.dedent("""
    import ctypes, json, os, sys
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    print("unshared", flush=True)
    assert sys.stdin.readline() == "mapped\\n"
    import sandboxlib as sb
    from sandboxlib.native import binding
    from sandboxlib.runtime import statedir
    binding.init_memfd()
    def snapshot():
        root = statedir.state_root()
        records = [n for n in os.listdir(root) if not n.startswith(".")] if os.path.isdir(root) else []
        return sorted(os.listdir("/proc/self/fd")), sorted(records)
    out = {"uid": os.getuid()}
    with sb.Container() as c:
        out["before"] = c.run(["echo", "ok"]).stdout.decode()
    limit = "/proc/sys/user/max_pid_namespaces"
    with open(limit) as f:
        saved = f.read()
    before = snapshot()
    with open(limit, "w") as f:
        f.write("0")
    c = sb.Container()
    try:
        c.start()
    except sb.SandboxError as err:
        out["error"] = [type(err).__name__, getattr(err, "step", None), getattr(err, "errno", None), str(err)]
    finally:
        with open(limit, "w") as f:
            f.write(saved)
    out["leaked"] = snapshot() != before
    out["running"] = c.running
    with sb.Container() as c:
        out["after"] = c.run(["echo", "ok"]).stdout.decode()
    print(json.dumps(out), flush=True)
""")


def test_clone_fails_root(tmp_path):
    env = dict(os.environ, SANDBOXLIB_RUN=str(tmp_path / "run"))
    proc = subprocess.Popen(
        [sys.executable, "-c", CLONE_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        if first == "unshared\n":
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{proc.pid}/{name}", "w") as f:
                    f.write("0 0 4294967295\n")
            proc.stdin.write("mapped\n")
            proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert first == "unshared\n" and proc.returncode == 0, stderr
    out = json.loads(stdout.splitlines()[-1])
    assert out["uid"] == 0 and out["before"] == "ok\n"
    name, step, err, text = out["error"]
    assert (name, step, err) == ("SetupError", "CLONE", errno.ENOSPC), out["error"]
    assert "clone(flags=" in text and "step CLONE" in text
    assert out["leaked"] is False and out["running"] is False
    assert out["after"] == "ok\n"


# -- IDMAP: id maps the kernel refuses ----------------------------------------------
def check_bad_id_maps() -> dict:
    if os.geteuid() == 0:
        # overlapping container ranges: the kernel refuses the write (EINVAL)
        uid_map = (
            IdMapping(container=0, host=1_000_000_000, size=10),
            IdMapping(container=5, host=1_000_100_000, size=10),
        )
        gid_map = (IdMapping(container=0, host=1_000_000_000, size=10),)
    else:
        # ids that are not ours: newuidmap refuses
        uid_map = (IdMapping(container=0, host=0, size=1),)
        gid_map = (IdMapping(container=0, host=0, size=1),)
    before = _snapshot()
    c = sb.Container(sb.ContainerConfig(uid_map=uid_map, gid_map=gid_map))
    out = {"error": _expect_setup_error(c.start)}
    out["leaks"] = {k: v for k, v in _snapshot().items() if v != before[k]}
    out["running"] = c.running
    return out


def test_bad_id_maps(runner):
    out = runner(check_bad_id_maps)
    err = out["error"]
    assert err["type"] == "SetupError", err
    assert (err["step"], err["field"]) == ("IDMAP", "uid_map"), err
    if not runner.rootless:
        assert err["errno"] == errno.EINVAL, err
        assert "uid_map" in err["text"] and "1000000000" in err["text"]
    else:
        assert "newuidmap" in err["text"] and err["hint"], err
    assert out["leaks"] == {} and out["running"] is False


# -- PROPAGATION: the step that runs only without a user namespace --------------------------------
def test_propagation_fails_without_userns():
    """As real root (userns=False) the mount namespace's propagation is made
    private (the step runs): its forced failure comes back from start() and
    from the one-shot path, and nothing is left behind."""
    before = _snapshot()
    c = sb.Container(userns=False)
    c._fault = (int(Step.PROPAGATION), errno.EIO)

    def start():
        with c:
            raise AssertionError("the container started")

    err = _expect_setup_error(start)
    assert (err["type"], err["step"], err["errno"]) == ("SetupError", "PROPAGATION", errno.EIO), err
    assert "MS_PRIVATE" in err["text"]
    c = sb.Container(userns=False)
    c._fault = (int(Step.PROPAGATION), errno.EIO)

    def one_shot():
        try:
            return c._run(
                ["true"],
                input=None,
                timeout=None,
                stdin=None,
                stdout=sb.PIPE,
                stderr=sb.PIPE,
                env=None,
                cwd=None,
                user=None,
                main=True,
            )
        finally:
            c.close()

    err = _expect_setup_error(one_shot)
    assert (err["type"], err["step"], err["errno"]) == ("SetupError", "PROPAGATION", errno.EIO), err
    assert _snapshot() == before
    with sb.Container(userns=False) as ok:
        assert ok.run(["echo", "ok"]).stdout == b"ok\n"


# -- REQUEST, byte by byte: type 1 (EXEC) with garbage, a reply socket and 3 stdio fds -------------
def check_raw_malformed_request() -> dict:
    with sb.Container() as c:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        nulls = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in range(3)]
        try:
            socket.send_fds(c._control, [struct.pack("=I", 1) + b"garbage" * 3], [theirs.fileno(), *nulls])
        finally:
            theirs.close()
            for fd in nulls:
                os.close(fd)
        try:
            ours.settimeout(10)
            reply = ours.recv(64)
            then = ours.recv(64)
        finally:
            ours.close()
        after = c.run(["echo", "ok"])
        return {
            "size": len(reply),
            "fields": struct.unpack("=6iI", reply) if len(reply) == 28 else reply,
            "then": then,
            "after": (after.exit_code, after.stdout),
        }


def test_raw_malformed_request(runner):
    out = runner(check_raw_malformed_request)
    assert out["size"] == 28, out
    kind, pid, status, step, err, index, _flags = out["fields"]
    assert (kind, pid, step, err) == (2, 0, int(Step.REQUEST), errno.EINVAL), out  # FAILED
    assert out["then"] == b""  # the init closed the reply socket it was given
    assert out["after"] == (0, b"ok\n")
