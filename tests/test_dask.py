"""sandboxlib.dask on real ``distributed`` clusters on loopback: a LocalCluster
of worker processes, and a scheduler with two ``dask worker`` processes
started here, as root and as a rootless user (tests/rootless.py).  One
cluster per mode for the module; each test registers the plugins it needs
and unregisters them, which closes their sandboxes (checked)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import psutil
import pytest

import sandboxlib as sb
from sandboxlib.dask import SandboxPlugin, sandboxed

from . import rootless
from .conftest import expire_sweep_stamp, wait_until

KINDS = ["local", "root", "rootless"]
LOOPBACK_ANY_PORT = "127.0.0.1:0"  # the schedulers' HTTP servers (no dashboard: health routes)
LOCAL_CLUSTER = f"""
import sys
from distributed import LocalCluster
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                  dashboard_address="{LOOPBACK_ANY_PORT}") as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
"""


class Cluster:
    """A client on a cluster of two workers, and where their sandboxes keep their state records."""

    def __init__(self, kind: str, client, state_root: str, start_worker) -> None:
        self.kind, self.client, self.state_root, self.start_worker = kind, client, state_root, start_worker

    def records(self) -> dict:
        """Container id -> (owner pid, init pid, cgroup paths) of the records in the workers' state root."""
        found = {}
        for name in os.listdir(self.state_root) if os.path.isdir(self.state_root) else ():
            if name.startswith(".") or not os.path.isfile(os.path.join(self.state_root, name)):
                continue  # (net/: networks' leases and files)
            try:
                lines = pathlib.Path(self.state_root, name).read_text().splitlines()
            except FileNotFoundError:
                continue
            fields = dict(line.partition(" ")[::2] for line in lines[1:])
            cgroups = [line.partition(" ")[2] for line in lines[1:] if line.startswith("cgroup ")]
            found[name] = (int(lines[0].split()[0]), int(fields.get("init", "0 0").split()[0]), cgroups)
        return found

    def worker_pids(self) -> dict:
        return self.client.run(os.getpid)


def _cli(*argv: str) -> list:
    return [sys.executable, "-m", *argv]


@pytest.fixture(scope="module", params=KINDS)
def cluster(request, workers, shared_dir):
    """The module's cluster of one kind (``workers``: the session's state
    root is set first, which root workers inherit)."""
    from distributed import Client

    kind = request.param
    if kind == "local":
        # A LocalCluster keeps its scheduler in the process that makes it:
        # made in a process of its own, its connections are not this one's.
        with subprocess.Popen(
            [sys.executable, "-c", LOCAL_CLUSTER], cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as holder:
            try:
                with Client(holder.stdout.readline().decode().strip(), timeout=60) as client:
                    yield _warmed(Cluster(kind, client, os.environ["SANDBOXLIB_RUN"], None))
            finally:
                holder.stdin.close()  # the cluster closes, and the process ends
                holder.wait(timeout=60)
        return
    user = workers["sbxtest"].user if kind == "rootless" else None
    directory = tempfile.mkdtemp(prefix=f"dask-{kind}-", dir=str(shared_dir))
    os.chmod(directory, 0o755)
    if user is not None:
        os.chown(directory, user.pw_uid, user.pw_gid)
    scheduler_file = os.path.join(directory, "scheduler.json")
    log = open(os.path.join(directory, "log"), "wb")
    procs = [
        subprocess.Popen(
            _cli("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard")
            + ["--dashboard-address", LOOPBACK_ANY_PORT]
            + ["--scheduler-file", scheduler_file],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    ]

    def start_worker(name: str) -> subprocess.Popen:
        argv = _cli("distributed.cli.dask_worker", "--scheduler-file", scheduler_file, "--nthreads", "1")
        argv += ["--host", "127.0.0.1", "--no-dashboard", "--name", name, "--local-directory", directory]
        if user is not None:
            argv = rootless.launcher(user, argv)
        proc = subprocess.Popen(argv, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        procs.append(proc)
        return proc

    try:
        assert wait_until(lambda: os.path.exists(scheduler_file), 60)
        for i in range(2):
            start_worker(f"w{i}")
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            state_root = rootless.state_dir(user) if user is not None else os.environ["SANDBOXLIB_RUN"]
            yield _warmed(Cluster(kind, client, state_root, start_worker))
            client.shutdown()
    finally:
        for proc in procs:
            _stop(proc)
        log.close()


def _warmed(cluster: Cluster) -> Cluster:
    """The cluster once the client has its connections (a test's own would look like its leaks):
    its pool of connections to the scheduler grows with the requests in flight at once."""
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda _: cluster.client.scheduler_info(), range(64)))
    for address in cluster.worker_pids():
        cluster.client.submit(double, 1, workers=[address], pure=False).result()
    cluster.client.gather(cluster.client.map(double, range(10)))
    return cluster


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def plugin(cluster, name: str = "sandboxlib", **options):
    """A SandboxPlugin registered on every worker for the test; unregistering closes every sandbox."""
    before = cluster.records()
    cluster.client.register_plugin(SandboxPlugin(name=name, **options))
    try:
        yield name
    finally:
        cluster.client.unregister_worker_plugin(name)
        assert cluster.records().keys() <= before.keys(), "the plugin's sandboxes outlived its teardown"


# -- what the tasks run ------------------------------------------------------------------------
def double(x: int) -> int:
    return 2 * x


def pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


def fail(text: str) -> None:
    raise ValueError(f"rejected: {text}")


class GradingError(Exception):
    pass


def fail_custom() -> None:
    raise GradingError("not a builtin")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def hog() -> int:
    block = bytearray(1 << 30)  # past the limit: the OOM killer ends the call
    return len(block)


def mark_and_look() -> bool:
    """Whether this sandbox served a call before (its /tmp is shared between its calls)."""
    seen = os.path.exists("/tmp/marker")
    open("/tmp/marker", "w").close()
    return seen


def environment() -> dict:
    import socket

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
    }


# -- tests -------------------------------------------------------------------------------------
def test_calls_run_in_the_sandboxes_of_the_worker_that_runs_the_task(cluster):
    """Results come back in order; each call ran in a pid namespace of one of
    the containers under the worker process that executed its task."""
    client = cluster.client
    with plugin(cluster):
        assert client.gather(client.map(sandboxed(double), range(50))) == [2 * x for x in range(50)]
        assert dask.delayed(sandboxed(double))(21).compute() == 42  # the client is the default scheduler
        for address, pid in cluster.worker_pids().items():
            inside = client.submit(sandboxed(pid_namespace), workers=[address], pure=False).result()
            outside = client.submit(pid_namespace, workers=[address], pure=False).result()
            assert inside != outside
            sandboxes = set()
            for proc in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(OSError):
                    sandboxes.add(os.readlink(f"/proc/{proc.pid}/ns/pid"))
            assert inside in sandboxes, (inside, sandboxes)


def test_exceptions_come_back_as_call_gives_them(cluster):
    client = cluster.client
    with plugin(cluster):
        with pytest.raises(ValueError, match="rejected: 42") as info:
            client.submit(sandboxed(fail), "42").result()
        assert "in fail" in info.value.remote_traceback and "rejected: 42" in info.value.remote_traceback
        with pytest.raises(sb.RemoteError) as remote:
            client.submit(sandboxed(fail_custom)).result()
        assert remote.value.type_name.endswith("GradingError") and "fail_custom" in remote.value.remote_traceback


def test_timeout_is_a_call_timeout_and_the_worker_goes_on(cluster):
    client = cluster.client
    with plugin(cluster, timeout=0.5):
        pids = cluster.worker_pids()
        with pytest.raises(sb.CallTimeout):
            client.submit(sandboxed(sleep), 30).result()
        assert client.gather(client.map(sandboxed(double), range(4))) == [0, 2, 4, 6]
        assert cluster.worker_pids() == pids


def test_memory_limit_is_an_oom_verdict_and_the_sandbox_is_replaced(cluster):
    """A call killed for memory raises CallCrashed(verdict=OOM) through Dask;
    the worker lives and its next call runs in a new sandbox.  Rootless here
    has no delegated cgroup: the memory option is refused at registration."""
    client = cluster.client
    if cluster.kind == "rootless":
        with pytest.raises(sb.UnsupportedError, match="memory"), plugin(cluster, memory="64M"):
            pass
        return
    with plugin(cluster, memory="64M"):
        (address, pid), *_ = cluster.worker_pids().items()
        on_it = {"workers": [address], "pure": False}
        client.submit(sandboxed(mark_and_look), **on_it).result()
        assert client.submit(sandboxed(mark_and_look), **on_it).result() is True  # the same sandbox
        with pytest.raises(sb.CallCrashed) as crash:
            client.submit(sandboxed(hog), **on_it).result()
        assert crash.value.verdict is sb.Verdict.OOM and crash.value.signal == signal.SIGKILL
        assert client.submit(sandboxed(mark_and_look), **on_it).result() is False  # a new one
        assert cluster.worker_pids()[address] == pid


def test_pool_options_pass_through(cluster, shared_dir):
    """env, mounts, preload, network and limits reach the sandboxes (rootfs: below)."""
    data = shared_dir / "dask-data"
    data.mkdir(exist_ok=True)
    (data / "file").write_text("mounted")
    options = {
        "env": {"GREETING": "hello"},
        "mounts": [sb.Mount.bind(str(data), "/data", read_only=True)],
        "preload": ["json"],
        "network": "none",
        "limits": sb.Limits(fsize=(4096, 4096)),
    }
    with plugin(cluster, name="options", **options):
        out = cluster.client.submit(sandboxed(environment, plugin="options"), pure=False).result()
    assert out == {"env": "hello", "data": "mounted", "preloaded": True, "interfaces": ["lo"], "fsize": 27}


def test_bad_options_and_a_missing_plugin_are_clear_errors(cluster, busybox_root):
    client = cluster.client
    with pytest.raises(sb.ConfigError, match="memroy: not an option of sandboxlib.Pool"):
        SandboxPlugin(memroy="1G")
    with pytest.raises(sb.ConfigError, match="timeout"), plugin(cluster, name="bad", timeout=-1):
        pass
    # rootfs passes through: a root without python3 cannot serve calls, said at registration
    with pytest.raises(sb.NoPythonError), plugin(cluster, name="busybox", rootfs=busybox_root):
        pass
    with pytest.raises(sb.ConfigError, match="no SandboxPlugin named 'absent'"):
        client.submit(sandboxed(double, plugin="absent"), 1).result()
    with pytest.raises(sb.ConfigError, match="outside"):
        sandboxed(double)(1)


@pytest.mark.parametrize("cluster", ["root", "rootless"], indirect=True)  # workers of our own
def test_a_worker_killed_with_sigkill_leaves_no_sandbox_behind(cluster):
    """SIGKILL of a worker process: its sandboxes die with it (their inits
    watch their owner), and the records and cgroups it left are swept by
    the sandbox start of the worker its nanny starts again."""
    client = cluster.client
    with plugin(cluster, name="victim"):
        nanny = cluster.start_worker("victim")
        try:
            address = _worker_named(client, "victim", None)
            assert client.submit(sandboxed(double, plugin="victim"), 2, workers=[address]).result() == 4
            pid = client.run(os.getpid, workers=[address])[address]
            left = {name: rec for name, rec in cluster.records().items() if rec[0] == pid}
            assert left, "the worker's sandbox has no state record"
            inits = [psutil.Process(rec[1]) for rec in left.values()]
            expire_sweep_stamp(os.path.join(cluster.state_root, ".swept"))
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda: not any(p.is_running() for p in inits), 30), "a sandbox outlived its worker"
            again = _worker_named(client, "victim", address)
            assert client.submit(sandboxed(double, plugin="victim"), 3, workers=[again]).result() == 6
            assert not left.keys() & cluster.records().keys(), "the dead worker's records were not swept"
            assert not [p for rec in left.values() for p in rec[2] if os.path.exists(p)], "cgroups left"
        finally:
            _stop(nanny)


def _worker_named(client, name: str, not_address) -> str:
    found = []

    def registered() -> bool:
        workers = client.scheduler_info()["workers"]
        found[:] = [a for a, w in workers.items() if w["name"] == name and a != not_address]
        return bool(found)

    assert wait_until(registered, 60), f"no worker {name!r} joined"
    return found[0]
