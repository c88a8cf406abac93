"""sandboxlib.ray on a real local Ray instance (``ray.init()``, one per module),
its node on loopback."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

# Before Ray is imported: a single-machine Ray then takes loopback as its
# node's address (its processes talk over 127.0.0.1, not the host's address).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray

import sandboxlib as sb
from sandboxlib.ray import sandboxed_remote

from . import rootless
from .conftest import expire_sweep_stamp, session_cgroups, state_records, wait_until


@pytest.fixture(scope="module", autouse=True)
def local_ray(workers):
    """A local Ray instance for the module (``workers``: the session's state root is set first)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _sandbox_inits() -> set:
    """The sandboxes' init processes under this process (Ray's workers among them)."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() == "sbx-init":
                found.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leaks(workers):
    """Replaces conftest's check here: Ray starts and keeps worker processes
    and connections of its own at any time; what must not outlive a test is
    ours: a sandbox's init, a cgroup, a state record, a mount."""
    before = (_sandbox_inits(), session_cgroups(), state_records(), _mounts())
    yield
    assert wait_until(lambda: not _sandbox_inits() - before[0], 10), "a sandbox outlived its test"
    assert (session_cgroups(), state_records(), _mounts()) == before[1:]


def _mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def double(x: int) -> int:
    return 2 * x


def fail(text: str) -> None:
    raise ValueError(f"rejected: {text}")


class GradingError(Exception):
    pass


def fail_custom() -> None:
    raise GradingError("not a builtin")


def hog_or_look(what: str):
    """ "hog": past the memory limit (the OOM killer ends the call); "look": whether
    this sandbox served a call before (its /tmp is shared between its calls)."""
    if what == "hog":
        return len(bytearray(1 << 30))
    seen = os.path.exists("/tmp/marker")
    open("/tmp/marker", "w").close()
    return seen


def environment() -> dict:
    import socket
    import sys

    with open("/data/file") as f:
        data = f.read()
    try:
        with open("/tmp/big", "wb") as f:
            f.write(b"x" * 10000)
        fsize = "unlimited"
    except OSError as err:
        fsize = err.errno
    return {
        "env": os.environ.get("GREETING"),
        "data": data,
        "preloaded": "json" in sys.modules,
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "fsize": fsize,
        "pid_namespace": os.readlink("/proc/self/ns/pid"),
    }


def _actor_pid(fn) -> int:
    return ray.get(fn.actor.__ray_call__.remote(lambda actor: os.getpid()))


def test_results_and_exceptions_as_call_gives_them():
    with sandboxed_remote(double) as remote_double, sandboxed_remote(fail) as remote_fail:
        assert ray.get([remote_double.remote(x) for x in range(40)]) == [2 * x for x in range(40)]
        with pytest.raises(ValueError, match="rejected: 7") as info:
            ray.get(remote_fail.remote("7"))
        assert "in fail" in info.value.remote_traceback
    with sandboxed_remote(fail_custom) as custom, pytest.raises(sb.RemoteError) as remote:
        ray.get(custom.remote())
    assert remote.value.type_name.endswith("GradingError") and "fail_custom" in remote.value.remote_traceback
    with pytest.raises(TypeError, match=r"double.remote\(...\)"):
        sandboxed_remote(double)(1)


def test_a_function_dropped_without_close_ends_its_sandboxes():
    """The actor's handle goes out of scope: Ray ends it gracefully, and it closes its pool
    (the module's no_leaks checks that no init, record or cgroup is left)."""
    remote_double = sandboxed_remote(double)
    assert ray.get(remote_double.remote(2)) == 4
    inits = [psutil.Process(p) for p in _sandbox_inits()]
    assert inits and state_records()
    del remote_double
    gc.collect()
    assert wait_until(lambda: not state_records() and not any(p.is_running() for p in inits), 30)


def test_passed_to_another_task_it_calls_the_same_actor():
    with sandboxed_remote(double) as remote_double:
        pid = _actor_pid(remote_double)
        assert ray.get(_through_a_task.remote(remote_double, 5)) == (10, pid)


@ray.remote
def _through_a_task(fn, x: int) -> tuple:
    return ray.get(fn.remote(x)), _actor_pid(fn)


def test_verdicts_are_exceptions_and_the_actor_goes_on():
    """OOM: CallCrashed(verdict=OOM), then a new sandbox in the same actor process; a timeout: CallTimeout."""
    with sandboxed_remote(memory="64M", size=1)(hog_or_look) as remote:
        assert ray.get(remote.remote("look")) is False and ray.get(remote.remote("look")) is True
        pid = _actor_pid(remote)
        with pytest.raises(sb.CallCrashed) as crash:
            ray.get(remote.remote("hog"))
        assert crash.value.verdict is sb.Verdict.OOM and crash.value.signal == signal.SIGKILL
        assert ray.get(remote.remote("look")) is False  # a new sandbox
        assert _actor_pid(remote) == pid
    with sandboxed_remote(timeout=0.5)(time.sleep) as nap, pytest.raises(sb.CallTimeout):
        ray.get(nap.remote(30))


def test_pool_options_pass_through(shared_dir):
    data = shared_dir / "ray-data"
    data.mkdir(exist_ok=True)
    (data / "file").write_text("mounted")
    decorate = sandboxed_remote(
        env={"GREETING": "hello"},
        mounts=[sb.Mount.bind(str(data), "/data", read_only=True)],
        preload=["json"],
        network="none",
        limits=sb.Limits(fsize=(4096, 4096)),
    )
    with decorate(environment) as remote_environment:
        out = ray.get(remote_environment.remote())
    assert out.pop("pid_namespace") != os.readlink("/proc/self/ns/pid")
    assert out == {"env": "hello", "data": "mounted", "preloaded": True, "interfaces": ["lo"], "fsize": 27}


def test_bad_options_are_clear_errors(busybox_root):
    with pytest.raises(sb.ConfigError, match="memroy: not an option of sandboxlib.Pool"):
        sandboxed_remote(memroy="1G")
    with pytest.raises(sb.ConfigError, match="memory") as info:
        sandboxed_remote(memory="lots")(double).remote(1)
    assert info.value.field == "memory"
    with pytest.raises(sb.NoPythonError):  # rootfs passes through: no python3 in busybox
        sandboxed_remote(rootfs=busybox_root)(double).remote(1)


def test_an_actor_killed_with_sigkill_leaves_no_sandbox_behind():
    """SIGKILL of the actor's process: its sandboxes die with it; Ray
    restarts the actor, whose first sandbox start sweeps the dead one's
    state records and cgroups."""
    with sandboxed_remote(size=1)(double) as remote_double:
        assert ray.get(remote_double.remote(1)) == 2
        pid = _actor_pid(remote_double)
        inits = [psutil.Process(p) for p in _sandbox_inits() if psutil.Process(p).ppid() == pid]
        records, cgroups = state_records(), session_cgroups()
        assert inits and records and cgroups
        expire_sweep_stamp(os.path.join(os.environ["SANDBOXLIB_RUN"], ".swept"))
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(p.is_running() for p in inits), 30), "a sandbox outlived its actor"
        assert wait_until(lambda: _answers(remote_double), 60), "the actor did not come back"
        assert _actor_pid(remote_double) != pid
        assert not set(records) & set(state_records()) and not set(cgroups) & set(session_cgroups())


def _answers(fn) -> bool:
    try:
        return ray.get(fn.remote(2), timeout=10) == 4
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False


ROOTLESS = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from sandboxlib.ray import sandboxed_remote
from tests.test_ray import hog_or_look
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=sys.argv[1])
with sandboxed_remote(size=1)(hog_or_look) as remote:
    print(ray.get(remote.remote("look")), ray.get(remote.remote("look")), os.geteuid())
ray.shutdown()
"""


def test_rootless(workers):
    """As the rootless user (a process of its own): its own Ray instance, sandboxed calls, nothing left."""
    user = workers["sbxtest"].user
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths live under it
    os.chown(temp_dir, user.pw_uid, user.pw_gid)
    before = os.listdir(rootless.state_dir(user)) if os.path.isdir(rootless.state_dir(user)) else []
    try:
        argv = rootless.launcher(user, [sys.executable, "-c", ROOTLESS, temp_dir])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/", stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", str(user.pw_uid)]
    after = os.listdir(rootless.state_dir(user)) if os.path.isdir(rootless.state_dir(user)) else []
    assert [n for n in after if not n.startswith(".")] == [n for n in before if not n.startswith(".")]
    session_worker = psutil.Process(workers["sbxtest"].proc.pid)
    ours = {session_worker.pid} | {p.pid for p in session_worker.children(recursive=True)}
    left = lambda: _processes_of(user.pw_uid, rootless.state_dir(user)) - ours  # noqa: E731
    assert wait_until(lambda: not left(), 30), f"Ray or a sandbox outlived the run: {left()}"


def _processes_of(uid: int, state_dir: str) -> set:
    """The user's processes of this test session (other runs on the machine use the same users):
    those with this session's state directory in their environment."""
    found = set()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is None or uids.real != uid:
            continue
        try:
            if proc.environ().get("SANDBOXLIB_RUN") == state_dir:
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
