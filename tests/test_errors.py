"""Errors: a bad configuration is a ConfigError naming the field, raised
before any kernel resource exists; every exception pickles with its
attributes; a command that cannot start, a missing working directory and
a mount the kernel refuses each come back as a precise exception.

Root and rootless (``runner``): the checks are module-level functions that
return plain values."""

from __future__ import annotations

import errno
import os
import pickle
import resource
import stat

import psutil
import pytest

import sandboxlib as sb
from sandboxlib import Limits, Mount
from sandboxlib.config import MountKind

from .conftest import Runner, commands_of, state_records

NOWHERE = "/nonexistent-sbx-test"
# Spawned commands never inherit our stdio: the rootless worker's are its channel to pytest.
QUIET = {"stdin": sb.DEVNULL, "stdout": sb.DEVNULL, "stderr": sb.DEVNULL}


# -- "no kernel resource was created" -------------------------------------------
def _resources() -> dict:
    """What a container start would change in this process.

    ``reaped`` sums the usage of reaped children: a child that was cloned and
    reaped again within the call (so that it shows in neither snapshot of
    children) still moves it (a process that ran an exec faults pages)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    state = state_records()
    return {
        "fds": sorted(os.listdir("/proc/self/fd")),
        "children": sorted(c.pid for c in psutil.Process().children()),
        "reaped": (usage.ru_minflt, usage.ru_majflt, usage.ru_nvcsw, usage.ru_nivcsw),
        "state": state,
    }


def _config_error(make) -> dict:
    """Call ``make``; it must raise ConfigError and create nothing in the kernel."""
    before = _resources()
    try:
        made = make()
    except sb.ConfigError as err:
        after = _resources()
        return {
            "field": err.field,
            "text": str(err),
            "message": err.message,
            "value_error": isinstance(err, ValueError),
            "sandbox_error": isinstance(err, sb.SandboxError),
            "unchanged": {k: before[k] == after[k] for k in before},
        }
    if isinstance(made, sb.Process):  # started after all: end it, then fail
        made.kill()
        made.wait()
        made.close()
    raise AssertionError(f"no ConfigError, got {made!r}")


def check_detector():
    """The resource snapshot sees a container that came and went."""
    before = _resources()
    result = sb.run(["true"])
    after = _resources()
    return result.exit_code, {k: before[k] == after[k] for k in before}


def test_resource_detector_sees_a_container(runner):
    code, unchanged = runner(check_detector)
    assert code == 0
    # the container is gone again (no child, fd or state entry) ...
    assert unchanged["fds"] and unchanged["children"] and unchanged["state"]
    # ... but it was reaped: the detector would see one made before a ConfigError
    assert not unchanged["reaped"]


# -- configuration errors ---------------------------------------------------------
def _run_true(**kw):
    return sb.run(["true"], **kw)


def _run_in_root_with_link(name: str):
    """A root directory whose /NAME is a symlink (to the root's /etc)."""
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="sbx-linkroot-")
    try:
        os.mkdir(os.path.join(root, "etc"))
        os.symlink("/etc", os.path.join(root, name))
        return _run_true(rootfs=root)
    finally:
        shutil.rmtree(root)


def _hard_limit_above_ours(name: str) -> Limits:
    hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    assert hard != resource.RLIM_INFINITY, f"the test needs a finite hard {name} limit"
    return Limits.from_dict({name: hard + 1})


CONFIG_CASES = {
    # mounts
    "bind target relative": (lambda: Mount.bind("/tmp", "relative/dir"), "target"),
    "tmpfs target relative": (lambda: Mount.tmpfs("tmp"), "target"),
    "tmpfs over /": (lambda: _run_true(mounts=[Mount.tmpfs("/")]), "mounts[0].target"),
    "bind over / (second mount)": (
        lambda: _run_true(mounts=[Mount.tmpfs("/a"), Mount.bind("/tmp", "/")]),
        "mounts[1].target",
    ),
    "tmpfs over / after normalization": (lambda: _run_true(mounts=[Mount.tmpfs("/x/..")]), "mounts[0].target"),
    # the kernel file systems the container gets fresh (with their masks)
    "bind over /proc": (lambda: _run_true(mounts=[Mount.bind("/tmp", "/proc")]), "mounts[0].target"),
    "bind over /proc/": (lambda: _run_true(mounts=[Mount.bind("/tmp", "/proc/")]), "mounts[0].target"),
    "bind over //proc": (lambda: _run_true(mounts=[Mount.bind("/tmp", "//proc")]), "mounts[0].target"),
    "bind over /x/../proc": (
        lambda: _run_true(mounts=[Mount.tmpfs("/a"), Mount.bind("/tmp", "/x/../proc")]),
        "mounts[1].target",
    ),
    "bind over /proc/sysrq-trigger": (
        lambda: _run_true(mounts=[Mount.bind("/dev/null", "/proc/sysrq-trigger")]),
        "mounts[0].target",
    ),
    "tmpfs over /sys": (lambda: _run_true(mounts=[Mount.tmpfs("/sys")]), "mounts[0].target"),
    "tmpfs over /sys/fs/cgroup": (lambda: _run_true(mounts=[Mount.tmpfs("/sys/fs/cgroup")]), "mounts[0].target"),
    "tmpfs over /dev/pts": (lambda: _run_true(mounts=[Mount.tmpfs("/dev/pts")]), "mounts[0].target"),
    "bind over /dev itself": (lambda: _run_true(mounts=[Mount.bind("/tmp", "/dev/")]), "mounts[0].target"),
    "volume over /proc/sys": (lambda: _run_true(mounts=[Mount.volume("v", "/proc/sys")]), "mounts[0].target"),
    "rootfs whose /proc is a symlink": (lambda: _run_in_root_with_link("proc"), "rootfs"),
    "rootfs whose /sys is a symlink": (lambda: _run_in_root_with_link("sys"), "rootfs"),
    "missing bind source": (
        lambda: _run_true(mounts=[Mount.tmpfs("/a"), Mount.bind(NOWHERE, "/b")]),
        "mounts[1].source",
    ),
    "missing rootfs": (lambda: _run_true(rootfs=NOWHERE), "rootfs"),
    "rootfs is a file": (lambda: _run_true(rootfs="/etc/passwd"), "rootfs"),
    # host names
    "empty hostname": (lambda: _run_true(hostname=""), "hostname"),
    "hostname of 65 characters": (lambda: _run_true(hostname="a" * 32 + "." + "b" * 32), "hostname"),
    "hostname label of 64 characters": (lambda: _run_true(hostname="a" * 64), "hostname"),
    "hostname with underscore": (lambda: _run_true(hostname="bad_name"), "hostname"),
    "hostname with space": (lambda: _run_true(hostname="bad name"), "hostname"),
    "hostname with slash": (lambda: _run_true(hostname="a/b"), "hostname"),
    "hostname with leading dash": (lambda: _run_true(hostname="-leading"), "hostname"),
    "hostname with trailing dash": (lambda: _run_true(hostname="trailing-"), "hostname"),
    "hostname with empty label": (lambda: _run_true(hostname="a..b"), "hostname"),
    # sizes and modes
    "negative tmpfs size": (lambda: Mount.tmpfs("/t", size=-1), "size"),
    "negative tmpfs size string": (lambda: Mount.tmpfs("/t", size="-1M"), "size"),
    "size with unknown unit": (lambda: Mount.tmpfs("/t", size="12Q"), "size"),
    "size that is a word": (lambda: Mount.tmpfs("/t", size="lots"), "size"),
    "size with a fraction": (lambda: Mount.tmpfs("/t", size="1.5G"), "size"),
    "empty size string": (lambda: Mount.tmpfs("/t", size=""), "size"),
    "size of only a unit": (lambda: Mount.tmpfs("/t", size="M"), "size"),
    "size that is a float": (lambda: Mount.tmpfs("/t", size=1.5), "size"),
    "size that is a bool": (lambda: Mount.tmpfs("/t", size=True), "size"),
    "tmpfs size of 2**64 (would wrap to unlimited)": (lambda: Mount.tmpfs("/t", size=2**64), "size"),
    "tmpfs size of 2**64+4096 (would wrap to 4k)": (lambda: Mount.tmpfs("/t", size=2**64 + 4096), "size"),
    "tmpfs size past the last page": (lambda: Mount.tmpfs("/t", size=2**64 - 4095), "size"),
    "tmpfs size 0 (the kernel's unlimited)": (lambda: Mount.tmpfs("/t", size=0), "size"),
    "tmpfs size of 2**54 k": (lambda: Mount.tmpfs("/t", size=f"{2**54}k"), "size"),
    "tmpfs size built directly": (lambda: Mount(kind=MountKind.TMPFS, target="/t", size=2**64), "size"),
    "writable layer size of 2**64": (
        lambda: _run_true(image="x:1", writable_layer="tmpfs", writable_layer_size=2**64),
        "writable_layer_size",
    ),
    "memory of 2**70": (lambda: _run_true(limits=Limits(memory=2**70)), "limits.memory"),
    "memory past the page counter": (lambda: _run_true(limits=Limits(memory=2**63)), "limits.memory"),
    "memory_swap of 2**64": (lambda: _run_true(limits=Limits(memory="64M", memory_swap=2**64)), "limits.memory_swap"),
    "pids of 2**63": (lambda: _run_true(limits=Limits(pids=2**63)), "limits.pids"),
    "pids past PID_MAX_LIMIT": (lambda: _run_true(limits=Limits(pids=4 * 1024 * 1024 + 1)), "limits.pids"),
    "rlimit of 2**64 (past RLIM_INFINITY)": (lambda: _run_true(limits=Limits(fsize=2**64)), "limits.fsize"),
    "nofile above our hard limit": (lambda: _run_true(limits=_hard_limit_above_ours("nofile")), "limits.nofile"),
    "nproc above our hard limit": (lambda: _run_true(limits=_hard_limit_above_ours("nproc")), "limits.nproc"),
    "id map host past 32 bits": (lambda: sb.IdMapping(container=0, host=2**32, size=1), "host"),
    "id map container of (uid_t)-1": (lambda: sb.IdMapping(container=2**32 - 1, host=0, size=1), "container"),
    "id map range that wraps": (lambda: sb.IdMapping(container=0, host=2**32 - 2, size=65536), "size"),
    "id map of size 0": (lambda: sb.IdMapping(container=0, host=0, size=0), "size"),
    "negative id map host": (lambda: sb.IdMapping(container=0, host=-1, size=1), "host"),
    "rlimit size that is a word": (lambda: _run_true(limits=Limits(fsize="lots")), "limits.fsize"),
    "negative rlimit": (lambda: _run_true(limits=Limits(nofile=-1)), "limits.nofile"),
    "tmpfs mode too large": (lambda: Mount.tmpfs("/t", mode=0o10000), "mode"),
    "negative tmpfs mode": (lambda: Mount.tmpfs("/t", mode=-1), "mode"),
    "tmpfs mode as a string": (lambda: Mount.tmpfs("/t", mode="1777"), "mode"),
    "tmpfs mode as a float": (lambda: Mount.tmpfs("/t", mode=1.5), "mode"),
    "unknown writable layer": (lambda: _run_true(writable_layer="ram"), "writable_layer"),
    "writable layer size on disk": (lambda: _run_true(image="x:1", writable_layer_size="1M"), "writable_layer_size"),
    # users
    "unknown user name": (lambda: _run_true(user="nosuchuser-sbx"), "user"),
    "unknown group": (lambda: _run_true(user="root:nosuchgroup-sbx"), "user"),
    "unknown user in a Container": (lambda: sb.Container(user="nosuchuser-sbx").start(), "user"),
    # argv
    "empty argv": (lambda: sb.run([]), "argv"),
    "argv as a string": (lambda: sb.run("echo hi"), "argv"),
    "argv as bytes": (lambda: sb.run(b"echo"), "argv"),
    "argv with a non-string": (lambda: sb.run(["echo", 3]), "argv[1]"),
    # NUL bytes
    "NUL in argv": (lambda: sb.run(["echo", "a\0b"]), "argv[1]"),
    "NUL in argv[0]": (lambda: sb.run(["ec\0ho"]), "argv[0]"),
    "NUL in an env value": (lambda: _run_true(env={"A": "a\0b"}), "env['A']"),
    "NUL in an env name": (lambda: _run_true(env={"A\0B": "x"}), "env['A\\x00B']"),
    "NUL in hostname": (lambda: _run_true(hostname="a\0b"), "hostname"),
    "NUL in cwd": (lambda: _run_true(cwd="/tmp\0x"), "cwd"),
    "NUL in rootfs": (lambda: _run_true(rootfs="/tmp\0x"), "rootfs"),
    "NUL in bind source": (lambda: Mount.bind("/tmp\0x", "/x"), "source"),
    "NUL in bind target": (lambda: Mount.bind("/tmp", "/x\0y"), "target"),
    "NUL in tmpfs target": (lambda: Mount.tmpfs("/x\0y"), "target"),
    "NUL in user": (lambda: _run_true(user="ro\0ot"), "user"),
    # environment
    "env name with =": (lambda: _run_true(env={"A=B": "1"}), "env['A=B']"),
    "empty env name": (lambda: _run_true(env={"": "1"}), "env['']"),
    "env that is not a mapping": (lambda: _run_true(env=["A=1"]), "env"),
    # cwd
    "relative cwd": (lambda: _run_true(cwd="tmp"), "cwd"),
    "relative cwd in a Container": (lambda: sb.Container(cwd="./tmp"), "cwd"),
    # limits
    "soft rlimit above hard": (lambda: _run_true(limits=Limits(nofile=(100, 50))), "limits.nofile"),
    "soft size rlimit above hard": (lambda: _run_true(limits=Limits(fsize=("2M", "1M"))), "limits.fsize"),
    "unknown rlimit in from_dict": (lambda: Limits.from_dict({"nofile": 10, "bogus": 1}), "limits"),
    # capabilities
    "unknown capability in cap_add": (lambda: _run_true(cap_add=["CAP_BOGUS"]), "cap_add"),
    "unknown capability in cap_drop": (lambda: _run_true(cap_drop=["bogus"]), "cap_drop"),
    "capability that is not a string": (lambda: _run_true(cap_add=[21]), "cap_add"),
    # streams
    "stdin and input together": (lambda: sb.run(["cat"], input=b"x", stdin=sb.DEVNULL), "stdin"),
    "input that is a number": (lambda: sb.run(["cat"], input=3), "input"),
    "input that cannot be encoded": (lambda: sb.run(["cat"], input="\ud800"), "input"),
    "unknown encoding": (lambda: sb.run(["true"], encoding="no-such-codec"), "encoding"),
    "unknown error handler": (lambda: sb.run(["true"], errors="no-such-handler"), "errors"),
    "text that is not a bool": (lambda: sb.run(["true"], text="yes"), "text"),
    # timeouts
    "negative timeout": (lambda: sb.run(["true"], timeout=-1), "timeout"),
    "timeout of 0": (lambda: sb.run(["true"], timeout=0), "timeout"),
    "timeout as a string": (lambda: sb.run(["true"], timeout="5"), "timeout"),
    "infinite timeout": (lambda: sb.run(["true"], timeout=float("inf")), "timeout"),
    "timeout of nan": (lambda: sb.run(["true"], timeout=float("nan")), "timeout"),
    "negative timeout in sandboxed": (lambda: sb.sandboxed(pow, timeout=-1), "timeout"),
    "timeout of 0 in a Pool": (lambda: sb.Pool(timeout=0), "timeout"),
    # network: one type everywhere
    "unknown network": (lambda: _run_true(network="macvlan"), "network"),
    "network True in a Container": (lambda: sb.Container(network=True), "network"),
    "network True in a Pool": (lambda: sb.Pool(network=True), "network"),
    "unknown network in sandboxed": (lambda: sb.sandboxed(pow, network="macvlan"), "network"),
    # cpus
    "cpus that is a word": (lambda: Limits(cpus="lots"), "limits.cpus"),
    # run(container=...) has the container's options
    "run with a container and an option": (
        lambda: sb.run(["true"], container=sb.Container(), hostname="x"),
        "hostname",
    ),
}


def check_config_error(case: str) -> dict:
    make, _field = CONFIG_CASES[case]
    return _config_error(make)


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_error(runner, case):
    result = runner(check_config_error, case)
    field = CONFIG_CASES[case][1]
    assert result["field"] == field, result
    assert result["value_error"] and result["sandbox_error"]
    assert result["text"].startswith(field + ": "), result["text"]
    assert result["message"] and result["message"] in result["text"]
    assert all(result["unchanged"].values()), f"a kernel resource was made before the ConfigError: {result}"


@pytest.mark.parametrize("target", ["/proc", "/proc/", "//proc", "/x/../proc", "/proc/sys/kernel"])
def test_kernel_mount_refusal_names_the_destination(target):
    with pytest.raises(sb.ConfigError) as info:
        sb.ContainerConfig(mounts=[Mount.tmpfs("/a"), Mount.bind("/tmp", target)])
    normalized = os.path.normpath(target).replace("//", "/")
    assert info.value.field == "mounts[1].target"
    assert f"{normalized!r} is on or under /proc" in info.value.message, info.value


def test_hostname_of_64_characters_is_accepted(runner):
    """The boundary of the hostname length check (the kernel takes 64)."""
    name = "a" * 31 + "." + "b" * 32
    assert runner(check_hostname, name) == name + "\n"


def test_cwd_is_normalized(runner):
    """The configured cwd is stored normalized, and commands start there."""
    assert sb.ContainerConfig(cwd="/tmp/../usr//bin/").cwd == "/usr/bin"
    assert runner(check_pwd, "//usr/./lib/../bin/") == "/usr/bin\n"


def check_pwd(cwd: str) -> str:
    with sb.Container(cwd=cwd) as c:
        r = c.run(["sh", "-c", "pwd"])
    assert r.exit_code == 0, r
    return r.stdout.decode()


def check_hostname(name: str) -> str:
    r = sb.run(["hostname"], hostname=name)
    assert r.exit_code == 0, r
    return r.stdout.decode()


# The same checks on a command of a running container: nothing is sent to its init.
COMMAND_CASES = {
    "empty argv": (lambda c: c.run([]), "argv"),
    "argv as a string": (lambda c: c.run("ls -l"), "argv"),
    "NUL in argv": (lambda c: c.run(["echo", "a\0b"]), "argv[1]"),
    "NUL in an env value": (lambda c: c.run(["true"], env={"A": "a\0b"}), "env['A']"),
    "env name with =": (lambda c: c.run(["true"], env={"A=B": "1"}), "env['A=B']"),
    "NUL in cwd": (lambda c: c.run(["true"], cwd="/tmp\0x"), "cwd"),
    "relative cwd": (lambda c: c.run(["pwd"], cwd="tmp"), "cwd"),
    "unknown user": (lambda c: c.run(["true"], user="nosuchuser-sbx"), "user"),
    "unknown group": (lambda c: c.run(["true"], user="root:nosuchgroup-sbx"), "user"),
    "stdin and input together": (lambda c: c.run(["cat"], input=b"x", stdin=sb.DEVNULL), "stdin"),
    "spawn with empty argv": (lambda c: c.spawn([], **QUIET), "argv"),
    "spawn with a relative cwd": (lambda c: c.spawn(["pwd"], cwd="tmp", **QUIET), "cwd"),
    # as sb.run(env=[...]) does: a ConfigError, not an AttributeError
    "env as a list": (lambda c: c.run(["true"], env=["A=1"]), "env"),
    "spawn with env as a list": (lambda c: c.spawn(["true"], env=["A=1"], **QUIET), "env"),
    "negative timeout": (lambda c: c.run(["true"], timeout=-1), "timeout"),
    "timeout of 0": (lambda c: c.run(["true"], timeout=0), "timeout"),
    "timeout as a string": (lambda c: c.run(["true"], timeout="5"), "timeout"),
    "input that is a number": (lambda c: c.run(["cat"], input=3), "input"),
    "wait with a negative timeout": (lambda c: _wait_then_end(c, -1), "timeout"),
    "wait with a timeout as a string": (lambda c: _wait_then_end(c, "1"), "timeout"),
    "invoke with a negative timeout": (lambda c: c.invoke(pow, (2, 2), timeout=-1), "timeout"),
    "invoke with a timeout as a string": (lambda c: c.invoke(pow, (2, 2), timeout="5"), "timeout"),
    "call with timeout=": (lambda c: c.call(pow, 2, 2, timeout=1), "timeout"),
    "call with trust_result=": (lambda c: c.call(pow, 2, 2, trust_result=True), "trust_result"),
    "session call with timeout=": (lambda c: _session_call(c, timeout=1), "timeout"),
    "write_file of a number": (lambda c: c.write_file("/tmp/x", 3), "data"),
    "put_archive of a file name": (lambda c: c.put_archive("/tmp", "x.tar"), "data"),
}


def _session_call(c, **kwargs):
    with c.session() as s:
        return s.call(pow, 2, 2, **kwargs)


def _wait_then_end(c, timeout):
    """``wait(timeout)`` of a spawned command, which is ended whatever happens."""
    proc = c.spawn(["true"], **QUIET)
    try:
        return proc.wait(timeout)
    finally:
        proc.wait()
        proc.close()


def check_command_config_error(case: str) -> dict:
    make, _field = COMMAND_CASES[case]
    with sb.Container() as c:
        assert c.run(["true"]).exit_code == 0  # the container works
        result = _config_error(lambda: make(c))
        inside = commands_of(c.pid, recursive=True)
        result["processes in the container"] = [p.pid for p in inside]
        again = c.run(["echo", "still here"])
        result["after"] = (again.exit_code, again.stdout)
    return result


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_command_config_error(runner, case):
    result = runner(check_command_config_error, case)
    field = COMMAND_CASES[case][1]
    assert result["field"] == field, result
    assert result["value_error"]
    assert result["text"].startswith(field + ": "), result["text"]
    assert all(result["unchanged"].values()), result
    assert result["processes in the container"] == []
    assert result["after"] == (0, b"still here\n")


def check_userns_false():
    return _config_error(lambda: sb.run(["true"], userns=False))


def test_userns_false_needs_root(workers):
    rootless = Runner("rootless", workers["sbxtest"])
    result = rootless(check_userns_false)
    assert result["field"] == "userns"
    assert "userns" in result["text"] and "root" in result["text"]
    assert all(result["unchanged"].values()), result


def test_userns_false_as_root_is_no_error():
    r = sb.run(["cat", "/proc/self/uid_map"], userns=False)
    assert r.exit_code == 0, r
    assert r.stdout.split() == [b"0", b"0", b"4294967295"]


# -- pickling ---------------------------------------------------------------------
def _attributes(err: BaseException) -> dict:
    names = (
        "field",
        "message",
        "feature",
        "how",
        "step",
        "errno",
        "operation",
        "hint",
        "argv",
        "timeout",
        "stdout",
        "stderr",
        "args",
    )
    return {n: getattr(err, n) for n in names if hasattr(err, n)}


EXCEPTIONS = {
    "ConfigError": lambda: sb.ConfigError("mounts[2].target", "must be absolute"),
    "UnsupportedError": lambda: sb.UnsupportedError("user namespaces", "set user.max_user_namespaces"),
    "SetupError": lambda: sb.SetupError(
        errno.EROFS, "mount(type=bind, target='/usr/x')", step="MOUNT", field="mounts[0]", hint="read-only parent"
    ),
    "SetupError without field": lambda: sb.SetupError(errno.EIO, "pivot_root", step="PIVOT"),
    "CommandNotFoundError": lambda: sb.CommandNotFoundError(
        errno.ENOENT, "execve('nope')", step="EXEC", field="argv", hint="no such command"
    ),
    "TimeoutExpired": lambda: sb.TimeoutExpired(("sleep", "9"), 1.5, stdout=b"out", stderr=b"err"),
    "TimeoutExpired without output": lambda: sb.TimeoutExpired(["sleep"], 2),
    "ContainerStateError": lambda: sb.ContainerStateError("the container is not running"),
    "CommandFailed": lambda: sb.CommandFailed(("sh", "-c", "exit 3"), 3, b"out", b"err", sb.Verdict.EXITED),
    "RemoteError": lambda: sb.RemoteError("mod.Custom", "bad", "Traceback ...\nmod.Custom: bad\n"),
    "UnsafeResultError": lambda: sb.UnsafeResultError("a numpy.ndarray of dtype object is not ..."),
    "NoPythonError": lambda: sb.NoPythonError("call() needs a Python interpreter in the container"),
    "CallTimeout": lambda: sb.CallTimeout(2.5),
    "CallCrashed": lambda: sb.CallCrashed("the call's process ended", exit_code=None, signal=9, verdict="oom"),
    "CallCrashed by exit": lambda: sb.CallCrashed("it exited", exit_code=3),
}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_exception_pickles(name, protocol):
    err = EXCEPTIONS[name]()
    copy = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(copy) is type(err)
    assert _attributes(copy) == _attributes(err)
    assert str(copy) == str(err)
    assert isinstance(copy, sb.SandboxError)


def test_exception_attributes():
    setup = EXCEPTIONS["SetupError"]()
    assert isinstance(setup, OSError) and setup.errno == errno.EROFS
    assert (setup.step, setup.field, setup.hint) == ("MOUNT", "mounts[0]", "read-only parent")
    text = str(setup)
    assert "mount(type=bind, target='/usr/x')" in text and "MOUNT" in text and "mounts[0]" in text
    assert os.strerror(errno.EROFS) in text and "read-only parent" in text
    missing = EXCEPTIONS["CommandNotFoundError"]()
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, sb.SetupError)
    assert missing.errno == errno.ENOENT
    timeout = EXCEPTIONS["TimeoutExpired"]()
    assert (timeout.stdout, timeout.stderr, timeout.timeout) == (b"out", b"err", 1.5)
    assert "sleep" in str(timeout) and "1.5" in str(timeout)
    config = EXCEPTIONS["ConfigError"]()
    assert isinstance(config, ValueError) and config.field == "mounts[2].target"
    assert issubclass(sb.UnsupportedError, sb.SandboxError)
    assert issubclass(sb.ContainerStateError, sb.SandboxError)


def check_real_exceptions(shared: str) -> list:
    """Real exceptions of the library, pickled and compared here."""
    found = []
    with sb.Container() as c:
        try:
            c.run(["no-such-command-sbx"])
        except sb.CommandNotFoundError as err:
            found.append(err)
        proc = c.spawn(
            ["sh", "-c", "echo out; echo err >&2; exec sleep 60"], stdin=sb.DEVNULL, stdout=sb.PIPE, stderr=sb.PIPE
        )
        try:
            with proc:
                try:
                    # the output arrives before the timeout
                    proc.communicate(timeout=1.0)
                except sb.TimeoutExpired as err:
                    found.append(err)
                proc.kill()
                proc.wait()
        finally:
            proc.kill()
    try:
        sb.run(["true"], mounts=[Mount.bind(shared, "/usr/newdir-sbx")])
    except sb.SetupError as err:
        found.append(err)
    try:
        sb.run(["true"], hostname="-bad")
    except sb.ConfigError as err:
        found.append(err)
    results = []
    for err in found:
        copy = pickle.loads(pickle.dumps(err))
        results.append(
            (
                type(err).__name__,
                type(copy) is type(err),
                _attributes(copy) == _attributes(err),
                str(copy) == str(err),
                _attributes(err),
            )
        )
    return results


def test_real_exceptions_pickle(runner, shared_dir):
    results = runner(check_real_exceptions, str(shared_dir))
    assert [r[0] for r in results] == ["CommandNotFoundError", "TimeoutExpired", "SetupError", "ConfigError"]
    for name, same_type, same_attributes, same_text, attributes in results:
        assert same_type and same_attributes and same_text, (name, attributes)
    timeout = results[1][4]
    assert timeout["stdout"] == b"out\n" and timeout["stderr"] == b"err\n"


def raise_command_not_found():
    sb.run(["no-such-command-sbx"])


def raise_mount_failure(shared: str):
    sb.run(["true"], mounts=[Mount.bind(shared, "/usr/newdir-sbx")])


def test_exceptions_cross_processes(runner, shared_dir):
    """Rootless, the exceptions come back pickled from the worker process."""
    with pytest.raises(sb.CommandNotFoundError) as info:
        runner(raise_command_not_found)
    assert info.value.errno == errno.ENOENT and info.value.step == "EXEC" and info.value.field == "argv"
    assert "no-such-command-sbx" in str(info.value)
    with pytest.raises(sb.SetupError) as info:
        runner(raise_mount_failure, str(shared_dir))
    assert info.value.errno == errno.EROFS and info.value.step == "MOUNT" and info.value.field == "mounts[0]"
    assert info.value.hint and "read-only" in info.value.hint


# -- commands that cannot start ---------------------------------------------------
def _describe(err: BaseException) -> dict:
    return {
        "type": type(err).__name__,
        "step": getattr(err, "step", None),
        "errno": getattr(err, "errno", None),
        "field": getattr(err, "field", None),
        "hint": getattr(err, "hint", None),
        "text": str(err),
        "oserror": isinstance(err, OSError),
        "filenotfound": isinstance(err, FileNotFoundError),
    }


def _catch(call) -> dict:
    try:
        result = call()
    except sb.SandboxError as err:
        return _describe(err)
    raise AssertionError(f"no exception, got {result}")


def check_missing_command() -> dict:
    out = {}
    out["one-shot"] = _catch(lambda: sb.run(["no-such-command-sbx", "arg"]))
    out["one-shot custom PATH"] = _catch(lambda: sb.run(["no-such-command-sbx"], env={"PATH": "/opt/sbx-a:/opt/sbx-b"}))
    with sb.Container() as c:
        out["run"] = _catch(lambda: c.run(["no-such-command-sbx"]))
        out["spawn"] = _catch(lambda: c.spawn(["no-such-command-sbx"], **QUIET))
        out["run custom PATH"] = _catch(lambda: c.run(["no-such-command-sbx"], env={"PATH": "/opt/sbx-c:/bin"}))
        out["absolute"] = _catch(lambda: c.run(["/opt/no-such-command-sbx"]))
        out["after"] = c.run(["echo", "ok"]).stdout
    return out


def test_missing_command(runner):
    from sandboxlib.runtime.container import DEFAULT_PATH

    out = runner(check_missing_command)
    assert out.pop("after") == b"ok\n"
    paths = {
        "one-shot": DEFAULT_PATH,
        "one-shot custom PATH": "/opt/sbx-a:/opt/sbx-b",
        "run": DEFAULT_PATH,
        "spawn": DEFAULT_PATH,
        "run custom PATH": "/opt/sbx-c:/bin",
    }
    for how, err in out.items():
        assert err["type"] == "CommandNotFoundError", (how, err)
        assert err["filenotfound"] and err["oserror"]
        assert (err["step"], err["errno"], err["field"]) == ("EXEC", errno.ENOENT, "argv"), (how, err)
        assert "no-such-command-sbx" in err["text"], (how, err)
        if how in paths:
            assert repr(paths[how]) in err["text"], (how, err)  # the PATH that was searched
    assert "/opt/no-such-command-sbx" in out["absolute"]["text"]
    assert "PATH" not in out["absolute"]["text"]  # no search for a path with a slash


SCRIPT = "#!/bin/sh\necho should-not-run\n"


def check_not_executable() -> dict:
    out = {}
    with sb.Container(mounts=[Mount.tmpfs("/work", size="1M")]) as c:
        made = c.run(
            ["sh", "-c", 'printf "$1" > /work/script; chmod 0644 /work/script; stat -c %a /work/script', "sh", SCRIPT]
        )
        assert made.exit_code == 0 and made.stdout == b"644\n", made
        out["path"] = _catch(lambda: c.run(["/work/script"]))
        out["PATH search"] = _catch(lambda: c.run(["script"], env={"PATH": "/work"}))
        out["spawn"] = _catch(lambda: c.spawn(["/work/script"], **QUIET))
        out["directory"] = _catch(lambda: c.run(["/work"]))
        # the same file made executable runs: the mount is not noexec
        ok = c.run(["sh", "-c", "chmod 0755 /work/script && /work/script"])
        out["executable"] = (ok.exit_code, ok.stdout)
    return out


def test_not_executable(runner):
    out = runner(check_not_executable)
    assert out.pop("executable") == (0, b"should-not-run\n")
    for how, err in out.items():
        assert err["type"] == "SetupError", (how, err)  # not CommandNotFoundError: the file exists
        assert (err["step"], err["errno"], err["field"]) == ("EXEC", errno.EACCES, "argv"), (how, err)
        assert err["hint"] and "executable" in err["hint"]
    assert "/work/script" in out["path"]["text"] and "'/work'" in out["PATH search"]["text"]


def check_missing_cwd() -> dict:
    out = {"one-shot": _catch(lambda: sb.run(["pwd"], cwd="/nonexistent-sbx/dir"))}
    with sb.Container() as c:
        out["run"] = _catch(lambda: c.run(["pwd"], cwd="/nonexistent-sbx/dir"))
        out["spawn"] = _catch(lambda: c.spawn(["pwd"], cwd="/nonexistent-sbx/dir", **QUIET))
        out["file"] = _catch(lambda: c.run(["pwd"], cwd="/etc/passwd"))
        out["after"] = c.run(["pwd"], cwd="/tmp").stdout
    with sb.Container(cwd="/nonexistent-sbx/dir") as c:
        out["container default"] = _catch(lambda: c.run(["pwd"]))
    return out


def test_missing_cwd(runner):
    out = runner(check_missing_cwd)
    assert out.pop("after") == b"/tmp\n"
    file = out.pop("file")
    for how, err in out.items():
        assert err["type"] == "SetupError", (how, err)
        assert (err["step"], err["errno"], err["field"]) == ("CHDIR", errno.ENOENT, "cwd"), (how, err)
        assert "'/nonexistent-sbx/dir'" in err["text"], (how, err)
    assert (file["type"], file["step"], file["errno"]) == ("SetupError", "CHDIR", errno.ENOTDIR)
    assert "'/etc/passwd'" in file["text"]


# -- mount failures -----------------------------------------------------------------
def check_mount_failure(shared: str, read_only: bool) -> dict:
    mounts = [Mount.tmpfs("/scratch"), Mount.bind(shared, "/usr/newdir-sbx", read_only=read_only)]
    out = {"one-shot": _catch(lambda: sb.run(["true"], mounts=mounts))}
    c = sb.Container(mounts=mounts)
    out["start"] = _catch(c.start)
    out["running"] = c.running
    out["tmpfs"] = _catch(lambda: sb.run(["true"], mounts=[Mount.tmpfs("/usr/newtmp-sbx", size="1M", mode=0o700)]))
    return out


@pytest.mark.parametrize("read_only", [False, True], ids=["rw", "ro"])
def test_mount_failure_names_the_mount(runner, shared_dir, read_only):
    out = runner(check_mount_failure, str(shared_dir), read_only)
    assert out.pop("running") is False
    tmpfs = out.pop("tmpfs")
    flags = "RDONLY|RECURSIVE" if read_only else "RECURSIVE"
    for how, err in out.items():
        assert err["type"] == "SetupError", (how, err)
        assert (err["step"], err["errno"], err["field"]) == ("MOUNT", errno.EROFS, "mounts[1]"), (how, err)
        text = err["text"]
        for part in (
            "type=bind",
            f"source={str(shared_dir)!r}",
            "target='/usr/newdir-sbx'",
            f"flags={flags})",
            "step MOUNT",
            "mounts[1]",
            os.strerror(errno.EROFS),
        ):
            assert part in text, (part, text)
        assert err["hint"] and "read-only" in err["hint"] and err["hint"] in text
    assert (tmpfs["type"], tmpfs["step"], tmpfs["errno"], tmpfs["field"]) == (
        "SetupError",
        "MOUNT",
        errno.EROFS,
        "mounts[0]",
    )
    for part in ("type=tmpfs", "target='/usr/newtmp-sbx'", "mode=0700", "size=1048576", "NOSUID|NODEV"):
        assert part in tmpfs["text"], (part, tmpfs["text"])
    assert "source=" not in tmpfs["text"]


def test_shared_dir_is_reachable(shared_dir):
    """The mount failure above is the read-only parent, not an unreadable source."""
    mode = os.stat(shared_dir).st_mode
    assert mode & stat.S_IROTH and mode & stat.S_IXOTH


# -- what is accepted where a new user expects it ---------------------------------
def check_friendly_values() -> dict:
    seen = {"run input str": sb.run(["cat"], input="h\u00e9").stdout}
    with sb.Container() as c:
        seen["c.run input str"] = c.run(["cat"], input="h\u00e9").stdout
        c.write_file("/tmp/t.txt", "h\u00e9")
        seen["write_file str"] = c.read_file("/tmp/t.txt")
        proc = c.spawn(["sleep", "5"], **QUIET)
        try:
            with pytest.raises(sb.TimeoutExpired):
                proc.wait(0)  # 0 polls, as Popen.wait(0)
        finally:
            proc.kill()
            proc.wait()
            proc.close()
    return seen


def test_friendly_values(runner):
    assert runner(check_friendly_values) == {
        "run input str": "h\u00e9".encode(),
        "c.run input str": "h\u00e9".encode(),
        "write_file str": "h\u00e9".encode(),
    }
    assert sb.Limits(cpus="1.5").cpus == 1.5
    assert sb.ContainerConfig(network="host").network is sb.Network.HOST
