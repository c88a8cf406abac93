"""Shared fixtures: root/rootless modes, test root file systems, and the
autouse leak check (fds, child processes, mounts, cgroups, state dirs)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from . import rootless

MODES = ["root", "rootless"]


# -- which sandboxlib is tested ---------------------------------------------------
def pytest_configure(config):
    """The suite tests the package users install: `make test` installs the wheel
    into a venv and names it in SANDBOXLIB_EXPECT_INSTALLED (test_installed.py
    checks that this is the sandboxlib imported).  Developers testing the
    checkout (built in place) say so with SANDBOXLIB_DEV=1; with neither, the
    run is refused rather than testing whichever sandboxlib happens to import.
    Subprocesses import this ``tests`` package from PYTHONPATH (and, only in
    development mode, sandboxlib from the checkout)."""
    if os.geteuid() != 0:  # (rootless cases run as users the suite makes: it skips nothing)
        raise pytest.UsageError(
            "the suite runs as root: it makes its unprivileged users, namespaces, bridges and "
            "cgroups, and runs every rootless case as one of those users (`sudo make test`)"
        )
    installed, dev = os.environ.get(rootless.INSTALLED_VAR), os.environ.get(rootless.DEV_VAR) == "1"
    if bool(installed) == dev:
        raise pytest.UsageError(
            f"say which sandboxlib to test: `make test` (sets {rootless.INSTALLED_VAR}=<venv> and runs this "
            f"venv's pytest from outside the checkout), or {rootless.DEV_VAR}=1 for the checkout built in place "
            "(python3 setup.py build_ext --inplace)"
        )
    if dev:
        path = rootless.REPO
    else:
        path = tempfile.mkdtemp(prefix="sandboxlib-tests-path-")
        os.chmod(path, 0o755)  # the rootless workers import from it
        os.symlink(os.path.join(rootless.REPO, "tests"), os.path.join(path, "tests"))
        config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
    os.environ[rootless.IMPORT_PATH_VAR] = os.environ["PYTHONPATH"] = path
    # Nothing the suite does may leave the machine: HTTP(S) to any host but
    # loopback goes to a proxy address where nothing listens (no DNS look-up
    # either), so a stray pull of a short name fails at once (registry tests
    # use 127.0.0.1 and localhost, which NO_PROXY exempts).
    os.environ.update(rootless.NO_EGRESS)


def wait_until(predicate, seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds; the time is an upper bound for a hang."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


LAUNCHER = "sbx-launcher"  # the init's filtered forker (csrc/launcher.c): runtime, like the init
FORKER = "sbx-forker"  # a launcher resident in a kept command cgroup (csrc/launcher.c)
RUNTIME_PROCESSES = ("sbx-init", LAUNCHER, FORKER)


def commands_of(init_pid: int, *, recursive: bool = False) -> list:
    """The processes under a container's init, the launchers and forkers left out."""
    found = []
    for proc in psutil.Process(init_pid).children(recursive=recursive):
        try:
            if proc.name() not in (LAUNCHER, FORKER):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def sandboxlib_cli(*args: str, input=None, timeout: float = 120, text: bool = False) -> subprocess.CompletedProcess:
    """``python -m sandboxlib ARGS`` from ``/``, the tested package (PYTHONPATH: see pytest_configure)."""
    return subprocess.run(
        [sys.executable, "-m", "sandboxlib", *args],
        input=input,
        text=text,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        timeout=timeout,
        cwd="/",
    )


def run_cli(*args: str, input=b"", timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m sandboxlib run ARGS``."""
    return sandboxlib_cli("run", *args, input=input, timeout=timeout)


# -- test root file systems -------------------------------------------------
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def make_busybox_rootfs(path: str) -> str:
    """A minimal root: static busybox with its applets, /etc/passwd and group."""
    # The mount points the container needs exist, as in any image: a user
    # namespace's root cannot create them in a directory owned by host root.
    for d in ("bin", "etc", "tmp", "home/app", "root", "proc", "dev", "sys", "run"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        link = os.path.join(path, "bin", name)
        if name != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/:/bin/false\n"
        )
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\napp:x:1000:\nextra:x:1001:app\nnogroup:x:65534:\n")
    return path


def _remove(path: str) -> None:
    """Remove a test's tree, however deep (shutil.rmtree recurses)."""
    from sandboxlib.images.trees import remove_tree

    try:
        remove_tree(path)
    except OSError:
        pass


@pytest.fixture(scope="session")
def shared_dir():
    """A world-readable session directory (the rootless users read from it).
    Not under pytest's /tmp/pytest-of-root: each pytest run that starts on
    this machine resets that to 0700, cutting the rootless users off from the
    files of a session running meanwhile."""
    path = tempfile.mkdtemp(prefix="sandboxlib-test-shared-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    _remove(path)


@pytest.fixture(scope="session")
def busybox_root(shared_dir) -> str:
    return make_busybox_rootfs(str(shared_dir / "busybox"))


# -- root and rootless --------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def workers():
    """Both rootless workers, started once before any test (so that their
    pipes and the init memfd are not mistaken for a test's leaks).  Also gives
    this session its own state records: concurrent runs on one machine must
    not see each other's records as leaks (set here, not at import: the
    workers import this module too)."""
    from sandboxlib.native import binding

    os.environ["SANDBOXLIB_RUN"] = tempfile.mkdtemp(prefix="sandboxlib-test-state-")
    binding.init_memfd()
    started = {name: rootless.Worker(rootless.ensure_user(name, subids)) for name, subids in rootless.USERS.items()}
    for worker in started.values():  # ready: its launcher's helpers are gone
        assert worker.call(rootless.ping) == ("pong", {"fds": [], "children": []})
    yield started
    for worker in started.values():
        worker.close()
        shutil.rmtree(rootless.state_dir(worker.user), ignore_errors=True)
    shutil.rmtree(os.environ["SANDBOXLIB_RUN"], ignore_errors=True)


class Runner:
    """Runs a module-level check function as root (here) or rootless (in a worker)."""

    def __init__(self, mode: str, worker=None) -> None:
        self.mode = mode
        self.worker = worker

    @property
    def rootless(self) -> bool:
        return self.mode != "root"

    def __call__(self, func, *args):
        if self.worker is None:
            return func(*args)
        value, leaks = self.worker.call(func, *args)
        assert leaks == {"fds": [], "children": []}, f"the rootless call leaked: {leaks}"
        return value


@pytest.fixture(params=MODES)
def runner(request, workers) -> Runner:
    """Parametrizes a test over root and rootless (user with /etc/subuid ranges)."""
    if request.param == "root":
        return Runner("root")
    return Runner(request.param, workers["sbxtest"])


@pytest.fixture
def single_id_runner(workers) -> Runner:
    """Rootless as a user without /etc/subuid ranges (only its own id mapped)."""
    return Runner("rootless-single", workers["sbxsingle"])


# -- leak check ---------------------------------------------------------------
def session_cgroup_prefix() -> str:
    """The name prefix of the cgroups this test session makes (other sessions
    on this machine use other state directories, hence other prefixes)."""
    from sandboxlib.cgroups import cgroup_name

    return cgroup_name(os.environ["SANDBOXLIB_RUN"], "")


def session_cgroups():
    """Every cgroup directory of this session, in every hierarchy."""
    prefix = session_cgroup_prefix()
    found = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(dirpath, d) for d in dirnames if d.startswith(prefix)]
        if dirpath.count("/") > 6:
            dirnames[:] = []
    return sorted(found)


def expire_sweep_stamp(stamp: str) -> None:
    """As if the last sweep (posix/throttle.py) were long ago: the next start sweeps."""
    if os.path.exists(stamp):
        os.utime(stamp, (0, 0))


def state_records():
    """The container records of this session (its own state directory; not the sweep's stamp), their
    log directories (``.logs/ID``) and network files (``net/files/ID``; ``net`` itself, with its lock
    and the directories leases keep for their next holders, stays once made)."""
    from sandboxlib.runtime import statedir

    root = statedir.state_root()
    try:
        records = [name for name in os.listdir(root) if not name.startswith(".") and name != "net"]
    except FileNotFoundError:
        return []
    for where in (".logs", "net/files"):
        try:
            names = os.listdir(os.path.join(root, where))
        except FileNotFoundError:
            continue
        records += [f"{where}/{name}" for name in names if not name.startswith("lease-")]
    return sorted(records)


# Host device nodes every container binds (the layout's /dev, the masks):
# a host-side write through a container's path must never chown or chmod them.
# /dev/net/tun too: rootless tests bind a node of their own over it (tests/rootless.py's private_tun).
HOST_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/net/tun")


def _host_devices() -> list:
    return [(path, st.st_uid, st.st_gid, oct(st.st_mode)) for path in HOST_DEVICES for st in [os.stat(path)]]


@pytest.fixture(scope="module", autouse=True)
def host_devices_kept():
    """The host's device nodes across a whole module: its module-scoped
    fixtures' set-up and teardown (daemons, labs, image stores) fall outside
    every test's own check (no_leaks).  Autouse: set up before them, torn
    down after them."""
    before = _host_devices()
    yield
    after = _host_devices()
    assert after == before, f"host device nodes changed around the module: {before} -> {after}"


def _snapshot():
    me = psutil.Process()
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    return {
        "fds": sorted(os.listdir("/proc/self/fd")),
        "children": sorted(c.pid for c in me.children(recursive=True)),
        "mounts": mounts,
        "cgroups": session_cgroups(),
        "state": state_records(),
        "devices": _host_devices(),
    }


def _fd_target(fd: str) -> str:
    """What a leaked fd is (a path, socket:[inode], pipe:[inode], anon_inode:...), to tell whose it is."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed since"


@pytest.fixture(autouse=True)
def no_leaks(workers):
    """After every test: no new fd, child process, mount, cgroup or state entry;
    the host's device nodes unchanged."""
    before = _snapshot()
    yield
    after = _snapshot()
    helpers = {w.proc.pid for w in workers.values()}
    problems = []
    for key in ("fds", "cgroups", "state"):
        extra = sorted(set(after[key]) - set(before[key]))
        if key == "fds":
            extra = [f"{fd} ({_fd_target(fd)})" for fd in extra]
        if extra:
            problems.append(f"{key}: {extra}")
    children = sorted(set(after["children"]) - set(before["children"]) - helpers)
    if children:
        problems.append(f"children: {children}")
    if after["mounts"] != before["mounts"]:
        problems.append("the host's mount table changed")
    if after["devices"] != before["devices"]:
        problems.append(f"host device nodes changed: {before['devices']} -> {after['devices']}")
    assert not problems, "the test leaked: " + "; ".join(problems)


# -- image stores ----------------------------------------------------------------
@pytest.fixture
def store_dir(runner, shared_dir):
    """An empty directory for an image store, owned by the mode's user."""
    path = tempfile.mkdtemp(prefix="store-", dir=str(shared_dir))
    os.chmod(path, 0o755)
    if runner.worker is not None:
        os.chown(path, runner.worker.user.pw_uid, runner.worker.user.pw_gid)
    yield path
    _remove(path)
