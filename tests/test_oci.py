"""sandboxlib-runtime, the OCI runtime: its verbs on real bundles (as root).

Each test checks its own cleanup: a container's init outlives the runtime
process that created it (it is nobody's child here), so the generic leak
check cannot see it; ``oci_root`` asserts that every container was deleted,
its init is gone and its cgroup removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from tests.conftest import make_busybox_rootfs, wait_until
from tests.ocikit import cgroup_path_of, containers_in, make_bundle, ok, runtime, state, unique_id


@pytest.fixture
def oci_root(tmp_path):
    root = str(tmp_path / "state")
    yield root
    leftover = containers_in(root)
    pids = []
    for name in leftover:
        with open(os.path.join(root, name, "state.json")) as f:
            pids.append(json.load(f)["pid"])
        runtime(root, "delete", "--force", name)
    assert leftover == [], f"containers left: {leftover} (pids {pids})"


def cgroup_dirs(container_id: str) -> list:
    name = cgroup_path_of(container_id)
    found = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(dirpath, d) for d in dirnames if d == name]
        if dirpath.count("/") > 7:
            dirnames[:] = []
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def test_lifecycle(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    out = tmp_path / "out"
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sh", "-c", "read x; echo got $x; hostname; exit 7"])
    rfd, wfd = os.pipe()
    with open(out, "wb") as f:
        proc = subprocess.run(
            [*RUNTIME_ARGS(oci_root), "create", "--bundle", bundle, "--pid-file", str(tmp_path / "pid"), cid],
            stdout=f,
            stderr=f,
            stdin=rfd,
        )
    os.close(rfd)
    assert proc.returncode == 0, out.read_text()
    created = state(oci_root, cid)
    assert created["status"] == "created" and created["id"] == cid and created["bundle"] == bundle
    pid = created["pid"]
    assert int((tmp_path / "pid").read_text()) == pid and alive(pid)
    assert out.read_bytes() == b""  # waiting before the user process
    assert cgroup_dirs(cid), "the container has its cgroup"
    ok(oci_root, "start", cid)
    assert state(oci_root, cid)["status"] == "running"
    assert runtime(oci_root, "start", cid).returncode == 1  # not twice
    refused = runtime(oci_root, "delete", cid)
    assert refused.returncode == 1 and b"not stopped: running" in refused.stderr
    os.write(wfd, b"input\n")
    os.close(wfd)
    assert wait_until(lambda: state(oci_root, cid)["status"] == "stopped")
    assert out.read_bytes() == b"got input\nsandboxlib\n"
    assert state(oci_root, cid)["pid"] == 0
    ok(oci_root, "delete", cid)
    assert not alive(pid) and cgroup_dirs(cid) == []
    gone = runtime(oci_root, "state", cid)
    assert gone.returncode == 1 and b"does not exist" in gone.stderr


def RUNTIME_ARGS(root: str) -> list:
    from tests.ocikit import runtime_command

    return [*runtime_command(), "--root", root]


def run(oci_root, tmp_path, busybox_root, args, **changes) -> subprocess.CompletedProcess:
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, args, **changes)
    return runtime(oci_root, "run", "--bundle", bundle, cid)


def test_run_exit_status_and_process(oci_root, tmp_path, busybox_root):
    proc = run(
        oci_root,
        tmp_path,
        busybox_root,
        ["sh", "-c", "id; pwd; echo $FOO; ulimit -n; cat /proc/self/status | grep -E 'CapBnd|NoNewPrivs'; exit 3"],
        **{
            "process.env": ["PATH=/bin", "FOO=bar"],
            "process.cwd": "/tmp",
            "process.user": {"uid": 1000, "gid": 1000, "additionalGids": [1001]},
            "process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
        },
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "uid=1000(app) gid=1000(app) groups=1001(extra)"
    assert lines[1:4] == ["/tmp", "bar", "123"]
    assert lines[4] == "CapBnd:\t0000000020000420"  # the default spec's AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert lines[5] == "NoNewPrivs:\t1"


def test_signal_exit_status(oci_root, tmp_path, busybox_root):
    proc = run(oci_root, tmp_path, busybox_root, ["sh", "-c", "kill -9 $$"])
    assert proc.returncode == 137


def test_capabilities(oci_root, tmp_path, busybox_root):
    caps = ["CAP_CHOWN", "CAP_NET_RAW"]
    proc = run(
        oci_root,
        tmp_path,
        busybox_root,
        ["sh", "-c", "grep -E 'Cap(Bnd|Eff)' /proc/self/status"],
        **{"process.capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["CapEff:", "0000000000002001", "CapBnd:", "0000000000002001"]


def test_readonly_root_masked_and_readonly_paths(oci_root, tmp_path, busybox_root):
    script = (
        "touch /x 2>/dev/null && echo root-writable; cat /proc/kcore | wc -c; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; "
        "touch /tmp/x && echo tmp-writable; grep -c ' /tmp ' /proc/mounts"
    )
    mounts = [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}]
    from sandboxlib.oci.default_spec import default_spec

    proc = run(oci_root, tmp_path, busybox_root, ["sh", "-c", script], mounts=default_spec()["mounts"] + mounts)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["0", "tmp-writable", "1"]


def test_bind_mounts_and_hostname(oci_root, tmp_path, busybox_root):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("host file\n")
    from sandboxlib.oci.default_spec import default_spec

    mounts = default_spec()["mounts"] + [
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(data), "options": ["bind"]},
    ]
    rootfs = make_busybox_rootfs(str(tmp_path / "rootfs"))  # its own: the runtime makes /data and /rw in it
    proc = run(
        oci_root,
        tmp_path,
        rootfs,
        ["sh", "-c", "cat /data/f; touch /data/g 2>/dev/null || echo ro; echo new > /rw/h; hostname"],
        mounts=mounts,
        hostname="box1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split("\n") == ["host file", "ro", "box1", ""]
    assert (data / "h").read_text() == "new\n"


def test_resources(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    bundle = make_bundle(
        str(tmp_path / cid),
        busybox_root,
        ["sh", "-c", "sleep 30 & sleep 30 & wait"],
        **{"linux.resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 4}, "cpu": {"shares": 512}}},
    )
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    try:
        dirs = {d.split("/")[4]: d for d in cgroup_dirs(cid)}
        with open(os.path.join(dirs["memory"], "memory.limit_in_bytes")) as f:
            assert int(f.read()) == 64 << 20
        with open(os.path.join(dirs["pids"], "pids.max")) as f:
            assert f.read().strip() == "4"
        # the init, sh and its two sleeps: the limit
        assert wait_until(lambda: len(json.loads(ok(oci_root, "ps", "--format", "json", cid).stdout)) == 4)
        stats = json.loads(ok(oci_root, "events", "--stats", cid).stdout)
        assert stats["type"] == "stats" and stats["data"]["pids"] == {"current": 4, "limit": 4}
        refused = runtime(oci_root, "exec", cid, "true")  # one process more than the limit
        assert refused.returncode == 1 and b"Resource temporarily unavailable" in refused.stderr, refused.stderr
        ok(oci_root, "update", "--resources", "-", cid, input=b'{"pids": {"limit": 10}}')
        ok(oci_root, "exec", cid, "true")
        with open(os.path.join(dirs["pids"], "pids.max")) as f:
            assert f.read().strip() == "10"
        # update's own input: named errors, not tracebacks; --memory in runc's units too
        for args, stdin, field in (
            (["--resources", "-"], b'{"pids": ', b"--resources"),
            (["--resources", "-"], b"[1]", b"linux.resources"),
            (["--memory", "lots"], b"", b"--memory"),
        ):
            refused = runtime(oci_root, "update", *args, cid, input=stdin)
            assert refused.returncode == 1 and field in refused.stderr, refused.stderr
            assert b"Traceback" not in refused.stderr, refused.stderr
        ok(oci_root, "update", "--memory", "128m", cid)
        with open(os.path.join(dirs["memory"], "memory.limit_in_bytes")) as f:
            assert int(f.read()) == 128 << 20
    finally:
        ok(oci_root, "delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_resources_devices_and_realtime(oci_root, tmp_path, busybox_root):
    """linux.resources.devices and the cpu's realtime values, written by the
    library's cgroup code as a container's limits are (one writer of both)."""
    cid = unique_id()
    devices = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rw"},
    ]
    resources = {"devices": devices, "cpu": {"realtimePeriod": 10000, "realtimeRuntime": 400}}
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sleep", "30"], **{"linux.resources": resources})
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    try:
        dirs = {d.split("/")[4]: d for d in cgroup_dirs(cid)}
        with open(os.path.join(dirs["devices"], "devices.list")) as f:
            listed = f.read().split("\n")
        assert listed[0] == "c 10:200 rw" and "c 1:3 rwm" in listed and "a *:* rwm" not in listed, listed
        with (
            open(os.path.join(dirs["cpu"], "cpu.rt_period_us")) as f,
            open(os.path.join(dirs["cpu"], "cpu.rt_runtime_us")) as g,
        ):
            assert (f.read().strip(), g.read().strip()) == ("10000", "400")
    finally:
        ok(oci_root, "delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_kill(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    bundle = make_bundle(
        str(tmp_path / cid), busybox_root, ["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done"]
    )
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    pid = state(oci_root, cid)["pid"]
    time.sleep(0.2)  # the trap is set
    ok(oci_root, "kill", cid, "TERM")
    assert wait_until(lambda: state(oci_root, cid)["status"] == "stopped")
    assert runtime(oci_root, "kill", cid, "KILL").returncode == 1  # not running
    ok(oci_root, "delete", cid)
    assert not alive(pid)


def test_seccomp(oci_root, tmp_path, busybox_root):
    policy = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    proc = run(oci_root, tmp_path, busybox_root, ["sh", "-c", "mkdir /tmp/d; echo $?"], **{"linux.seccomp": policy})
    assert proc.returncode == 0, proc.stderr
    assert b"Operation not permitted" in proc.stderr and proc.stdout == b"1\n"


def test_exec(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sleep", "30"], **{"process.env": ["PATH=/bin", "A=1"]})
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    try:
        proc = runtime(oci_root, "exec", cid, "sh", "-c", "echo $A; exit 5")
        assert (proc.returncode, proc.stdout) == (5, b"1\n"), proc.stderr
        process = {"args": ["sh", "-c", "id -u; pwd"], "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000}, "env": []}
        (tmp_path / "p.json").write_text(json.dumps(process))
        proc = runtime(oci_root, "exec", "--process", str(tmp_path / "p.json"), cid)
        assert (proc.returncode, proc.stdout) == (0, b"1000\n/tmp\n"), proc.stderr
        # --detach: the pid file names a waiter that exits with the command's status
        ok(oci_root, "exec", "--detach", "--pid-file", str(tmp_path / "epid"), cid, "sh", "-c", "exit 9")
        waiter = int((tmp_path / "epid").read_text())
        assert wait_until(lambda: not alive(waiter))
        missing = runtime(oci_root, "exec", cid, "no-such-program")
        assert missing.returncode == 1 and b"no-such-program" in missing.stderr
    finally:
        ok(oci_root, "delete", "--force", cid)


def test_console_socket(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    bundle = make_bundle(
        str(tmp_path / cid),
        busybox_root,
        ["sh", "-c", "tty; stty size"],
        **{"process.terminal": True, "process.consoleSize": {"height": 30, "width": 100}},
    )
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        ok(oci_root, "create", "--bundle", bundle, "--console-socket", path, cid)
        conn, _ = listener.accept()
        with conn:
            msg, fds, _flags, _addr = socket.recv_fds(conn, 64, 1)
    master = fds[0]
    try:
        ok(oci_root, "start", cid)
        output = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break  # EIO: nothing holds the terminal any more
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    assert output.replace(b"\r", b"").split(b"\n")[:2] == [b"/dev/pts/0", b"30 100"]
    assert wait_until(lambda: state(oci_root, cid)["status"] == "stopped")
    ok(oci_root, "delete", cid)


def test_hooks(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    log = tmp_path / "hooks.log"
    hooks = {
        name: [
            {
                "path": "/bin/sh",
                "args": ["sh", "-c", f'read s; echo {name} >> {log}; echo "$s" > {tmp_path}/{name}.json'],
            }
        ]
        for name in ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")
    }
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], hooks=hooks)
    ok(oci_root, "create", "--bundle", bundle, cid)
    ok(oci_root, "start", cid)
    assert wait_until(lambda: state(oci_root, cid)["status"] == "stopped")
    ok(oci_root, "delete", cid)
    assert log.read_text().split() == ["createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    seen = json.loads((tmp_path / "createRuntime.json").read_text())
    assert seen["id"] == cid and seen["status"] == "created" and seen["pid"] > 0
    failing = make_bundle(
        str(tmp_path / "f"), busybox_root, ["true"], hooks={"createRuntime": [{"path": "/bin/false"}]}
    )
    proc = runtime(oci_root, "create", "--bundle", failing, unique_id())
    assert proc.returncode == 1 and b"hooks.createRuntime[0]" in proc.stderr


def test_unsupported_fields_are_named(oci_root, tmp_path, busybox_root):
    bundle = make_bundle(
        str(tmp_path / "b"),
        busybox_root,
        ["true"],
        **{"process.foo": 1, "linux.intelRdt": {"closID": "x"}, "linux.personality": {"domain": "LINUX"}},
    )
    caps = make_bundle(
        str(tmp_path / "c"), busybox_root, ["true"], **{"process.capabilities": {"bounding": ["CAP_NOPE"]}}
    )
    proc = runtime(oci_root, "create", "--bundle", caps, "c")
    assert proc.returncode == 1 and b"process.capabilities.bounding: unknown capability 'CAP_NOPE'" in proc.stderr
    log = tmp_path / "log.json"
    proc = subprocess.run(
        [*RUNTIME_ARGS(oci_root), "--log", str(log), "--log-format", "json", "create", "--bundle", bundle, "x"],
        capture_output=True,
    )
    assert proc.returncode == 1
    for field in ("process.foo", "linux.intelRdt", "linux.personality"):
        assert field.encode() in proc.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "linux.intelRdt" in entry["msg"]
    joined = make_bundle(
        str(tmp_path / "j"),
        busybox_root,
        ["true"],
        **{"linux.namespaces": [{"type": "user", "path": "/proc/1/ns/user"}]},
    )
    proc = runtime(oci_root, "create", "--bundle", joined, "y")
    assert proc.returncode == 1 and b"linux.namespaces[0].path: joining a user namespace" in proc.stderr


def test_cli_basics(oci_root, tmp_path):
    assert b"sandboxlib-runtime version" in ok(oci_root, "--version").stdout
    features = json.loads(ok(oci_root, "features").stdout)
    assert features["ociVersionMax"] == "1.1.0" and "createRuntime" in features["hooks"]
    ok(oci_root, "spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"] and spec["root"]["path"] == "rootfs"
    again = runtime(oci_root, "spec", "--bundle", str(tmp_path))
    assert again.returncode == 1 and b"exists" in again.stderr
    refused = runtime(oci_root, "--systemd-cgroup", "state", "x")
    assert refused.returncode == 1 and b"--systemd-cgroup" in refused.stderr
    assert runtime(oci_root, "delete", "--force", "nothing").returncode == 0


def test_kill_all_and_force_delete(oci_root, tmp_path, busybox_root):
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sh", "-c", "sleep 60 & sleep 60"])
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    pid = state(oci_root, cid)["pid"]
    # the init and two sleeps (sh execs the last command)
    assert wait_until(lambda: len(json.loads(ok(oci_root, "ps", "--format", "json", cid).stdout)) == 3)
    ok(oci_root, "kill", "--all", cid, "KILL")
    assert wait_until(lambda: not alive(pid))
    ok(oci_root, "delete", cid)


def test_created_container_deleted(oci_root, tmp_path, busybox_root):
    """A created container (never started) is deleted without --force, as runc's."""
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"])
    ok(oci_root, "create", "--bundle", bundle, cid)
    pid = state(oci_root, cid)["pid"]
    ok(oci_root, "delete", cid)
    assert not alive(pid) and cgroup_dirs(cid) == []


def test_rootless_run(workers, busybox_root):
    """Rootless: a user namespace that maps the caller's own id (the default spec's --rootless form)."""
    from tests.ocikit import rootless_run

    (code, out, err, left), _leaks = workers["sbxtest"].call(rootless_run, busybox_root, ["sh", "-c", "id -u; exit 6"])
    assert (code, out, left) == (6, b"0\n", []), err


def test_failed_create_leaves_nothing(oci_root, tmp_path, busybox_root):
    """A set-up failure after the init was spawned: the error names the mount, and the
    init, its cgroup and the state are gone."""
    from sandboxlib.oci.default_spec import default_spec

    cid = unique_id()
    bad = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=not-a-size"]}
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], mounts=default_spec()["mounts"] + [bad])
    proc = runtime(oci_root, "create", "--bundle", bundle, cid)
    assert proc.returncode == 1 and b"mounts[7]" in proc.stderr, proc.stderr
    assert containers_in(oci_root) == [] and cgroup_dirs(cid) == []


def test_sysctl_oom_score_adj_umask(oci_root, tmp_path, busybox_root):
    proc = run(
        oci_root,
        tmp_path,
        busybox_root,
        ["sh", "-c", "cat /proc/sys/net/ipv4/ping_group_range /proc/self/oom_score_adj; umask"],
        **{
            "linux.sysctl": {"net.ipv4.ping_group_range": "0 0"},
            "process.oomScoreAdj": 123,
            "process.user": {"uid": 0, "gid": 0, "umask": 0o027},
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["0", "0", "123", "0027"]


def test_existing_cgroups_path_is_refused_and_left_alone(oci_root, tmp_path, busybox_root):
    """A second container with the first one's cgroupsPath: refused, naming the field, and
    its clean-up leaves the first one's cgroup directories (it made none of them)."""
    first, second = unique_id(), unique_id()
    ok(oci_root, "create", "--bundle", make_bundle(str(tmp_path / first), busybox_root, ["sleep", "30"]), first)
    try:
        dirs = cgroup_dirs(first)
        assert dirs
        bundle = make_bundle(
            str(tmp_path / second), busybox_root, ["true"], **{"linux.cgroupsPath": cgroup_path_of(first)}
        )
        proc = runtime(oci_root, "create", "--bundle", bundle, second)
        assert proc.returncode == 1 and b"linux.cgroupsPath" in proc.stderr and b"already exists" in proc.stderr
        assert cgroup_dirs(first) == dirs and containers_in(oci_root) == [first]
        assert state(oci_root, first)["status"] == "created"
    finally:
        ok(oci_root, "delete", "--force", first)
    assert cgroup_dirs(first) == []


def test_compiled_filters_are_kept_and_checked(oci_root, tmp_path, busybox_root):
    """The second create of a policy takes its filters from ROOT/.filters (the same
    filter: mkdir still refused); a kept file whose key is another's is never used."""
    from sandboxlib.oci import filters

    policy = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    command = ["sh", "-c", "mkdir /tmp/d; echo $?"]

    def refused(proc: subprocess.CompletedProcess) -> bool:  # by the filter (not EROFS: the root is read-only)
        return (proc.returncode, proc.stdout) == (0, b"1\n") and b"Operation not permitted" in proc.stderr

    kept = os.path.join(oci_root, filters.DIRECTORY)
    for _ in range(2):
        proc = run(oci_root, tmp_path, busybox_root, command, **{"linux.seccomp": policy})
        assert refused(proc), proc.stderr
        (name,) = os.listdir(kept)
        assert os.stat(os.path.join(kept, name)).st_mode & 0o777 == 0o600
    path = os.path.join(kept, name)
    with open(path, "rb") as f:
        data = f.read()
    n_key, n_program, n_init = filters._SIZES.unpack_from(data)
    key = data[filters._SIZES.size :][:n_key]
    # Under this name, another key (mkdirat allowed) with no filter for the process:
    # were it used, mkdir would succeed.
    other = key.replace(b'"mkdirat"', b'"mkdiRat"')
    assert other != key
    with open(path, "wb") as f:
        f.write(filters._SIZES.pack(len(other), 0, n_init) + other + data[len(data) - n_init :])
    proc = run(oci_root, tmp_path, busybox_root, command, **{"linux.seccomp": policy})
    assert refused(proc), proc.stderr
    with open(path, "rb") as f:
        assert f.read() == data  # compiled again, and kept again
    # This key and no filter for the process, in a file another user owns (or may write): unused.
    for change in (lambda: os.chown(path, 1000, 1000), lambda: os.chmod(path, 0o620)):
        with open(path, "wb") as f:
            f.write(filters._SIZES.pack(len(key), 0, n_init) + key + data[len(data) - n_init :])
        change()
        proc = run(oci_root, tmp_path, busybox_root, command, **{"linux.seccomp": policy})
        assert refused(proc), proc.stderr
        with open(path, "rb") as f:
            assert f.read() == data


def test_filters_directory_of_another_user_is_not_used(tmp_path):
    """A --root others may write (a shared directory): another local user makes
    ROOT/.filters first, a symlink to a directory of root's files (which the
    eviction of old entries removed) or a directory of their own holding a
    symlink where the next kept file is written (which root truncated and
    wrote).  Root's create compiles and keeps nothing there; the files are untouched."""
    import pwd

    from sandboxlib.oci import filters

    other = pwd.getpwnam("sbxtest")
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o1777)
    caps = frozenset({"KILL"})
    policy = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    expected = filters._compile(policy, caps)
    name = f"{filters.zlib.crc32(filters._key(policy, caps)):08x}"

    victims = tmp_path / "victims"
    victims.mkdir()
    for i in range(filters.MAX_ENTRIES + 4):
        (victims / f"file{i}").write_text("root's")
    os.symlink(victims, root / filters.DIRECTORY)
    os.lchown(root / filters.DIRECTORY, other.pw_uid, other.pw_gid)
    assert filters.compiled_filters(str(root), policy, caps) == expected
    assert sorted(os.listdir(victims)) == sorted(f"file{i}" for i in range(filters.MAX_ENTRIES + 4))

    os.unlink(root / filters.DIRECTORY)
    planted = root / filters.DIRECTORY
    planted.mkdir()
    victim = victims / "file0"
    os.symlink(victim, planted / f"{name}.{os.getpid()}.tmp")
    os.lchown(planted / f"{name}.{os.getpid()}.tmp", other.pw_uid, other.pw_gid)
    os.chown(planted, other.pw_uid, other.pw_gid)
    os.chmod(planted, 0o777)
    assert filters.compiled_filters(str(root), policy, caps) == expected
    assert victim.read_text() == "root's"
    assert os.listdir(planted) == [f"{name}.{os.getpid()}.tmp"]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"linux.resources.memory": {"limit": "64m"}}, b"linux.resources.memory.limit"),
        ({"linux.resources.memory": {"limit": 1 << 64}}, b"linux.resources.memory.limit"),
        ({"linux.resources.memory": {"swap": -5}}, b"linux.resources.memory.swap"),
        ({"linux.resources.memory": [1]}, b"linux.resources.memory"),
        ({"linux.resources.cpu": {"shares": -2}}, b"linux.resources.cpu.shares"),
        ({"linux.resources.cpu": {"quota": 1.5}}, b"linux.resources.cpu.quota"),
        ({"linux.resources.cpu": {"cpus": 3}}, b"linux.resources.cpu.cpus"),
        ({"linux.resources.cpu": {"realtimePeriod": "1000"}}, b"linux.resources.cpu.realtimePeriod"),
        ({"linux.resources.cpu": {"realtimeRuntime": -7}}, b"linux.resources.cpu.realtimeRuntime"),
        ({"linux.resources.pids": {"limit": True}}, b"linux.resources.pids.limit"),
        ({"linux.resources.devices": ["a"]}, b"linux.resources.devices[0]"),
        ({"linux.resources.devices": [{"allow": True, "type": "c", "major": "1:3 rwm"}]}, b"devices[0].major"),
        ({"linux.resources.devices": [{"allow": True, "type": "x"}]}, b"linux.resources.devices[0].type"),
        ({"linux.resources.devices": [{"allow": True, "access": "rwx"}]}, b"linux.resources.devices[0].access"),
    ],
)
def test_hostile_resources_are_named(oci_root, tmp_path, busybox_root, changes, field):
    """linux.resources is read into a record without validators: each field is
    checked where it is read (a wrong type, a negative or too large number) and
    the error names it, without a traceback; nothing is left."""
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], **changes)
    proc = runtime(oci_root, "create", "--bundle", bundle, cid)
    assert proc.returncode == 1 and field in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr
    assert containers_in(oci_root) == [] and cgroup_dirs(cid) == []


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"process.user": {"uid": "root", "gid": 0}}, b"process.user.uid"),
        ({"process.user": {"uid": -1, "gid": 0}}, b"process.user.uid"),
        ({"process.user": {"uid": 0, "gid": 1 << 40}}, b"process.user.gid"),
        ({"process.user": {"uid": 0, "gid": 0, "additionalGids": [1, "x"]}}, b"process.user.additionalGids[1]"),
        ({"process.user": {"uid": 0, "gid": 0, "umask": "022"}}, b"process.user.umask"),
        ({"process.user": {"uid": 0, "gid": 0, "umask": 0o10000}}, b"process.user.umask"),
        ({"process.rlimits": ["RLIMIT_NOFILE"]}, b"process.rlimits[0]"),
        ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": "x", "hard": 1}]}, b"process.rlimits[0].soft"),
        ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 1}]}, b"process.rlimits[0].soft"),
        ({"process.consoleSize": {"height": "tall", "width": 80}}, b"process.consoleSize.height"),
        ({"process.oomScoreAdj": "5"}, b"process.oomScoreAdj"),
        ({"process.oomScoreAdj": 5000}, b"process.oomScoreAdj"),
        ({"process.terminal": "no"}, b"process.terminal"),
    ],
)
def test_hostile_process_fields_are_named(oci_root, tmp_path, busybox_root, changes, field):
    """process is read into a ProcessSpec without validators: each field is checked
    where it is read, the error naming it, without a traceback; nothing is left."""
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], **changes)
    proc = runtime(oci_root, "create", "--bundle", bundle, cid)
    assert proc.returncode == 1 and field in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr
    assert containers_in(oci_root) == [] and cgroup_dirs(cid) == []


def test_cgroups_path_stays_in_the_cgroup_file_systems(oci_root, tmp_path, busybox_root):
    """A cgroupsPath with '..' components (relative or absolute) is refused naming
    the field: it led the runtime out of /sys/fs/cgroup, making directories and
    writing limit files as root anywhere on the host (runc cleans such a path)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    depth = "../" * 12
    for path in (f"{depth}{outside}/escaped", f"/{depth}{outside}/escaped", "a/../../b"):
        cid = unique_id()
        bundle = make_bundle(
            str(tmp_path / cid),
            busybox_root,
            ["true"],
            **{"linux.cgroupsPath": path, "linux.resources.pids": {"limit": 20}},
        )
        proc = runtime(oci_root, "create", "--bundle", bundle, cid)
        assert proc.returncode == 1 and b"linux.cgroupsPath" in proc.stderr, proc.stderr
        assert os.listdir(outside) == [] and containers_in(oci_root) == []


def test_host_sysctls_are_refused(oci_root, tmp_path, busybox_root):
    """linux.sysctl is written by create, as root, from the container's network, IPC
    and UTS namespaces but the host's mount namespace: a sysctl of no namespace
    of the container's (vm.*, kernel.core_pattern...) was the host's, changed for
    every process (runc refuses it).  Given here its current value: written or not,
    the host's is unchanged."""
    with open("/proc/sys/vm/dirty_expire_centisecs") as f:
        current = f.read().strip()
    for key, value in (("vm.dirty_expire_centisecs", current), ("kernel.hostname", "x"), ("net..x", "1")):
        cid = unique_id()
        bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], **{"linux.sysctl": {key: value}})
        proc = runtime(oci_root, "create", "--bundle", bundle, cid)
        assert proc.returncode == 1 and f"linux.sysctl.{key}".encode() in proc.stderr, proc.stderr
        assert containers_in(oci_root) == []
    # Nor a namespace sysctl through a joined namespace that is the host's (ours).
    with open("/proc/sys/kernel/msgmax") as f:
        msgmax = f.read().strip()
    cid = unique_id()
    changes = {
        "linux.sysctl": {"kernel.msgmax": msgmax},
        "linux.namespaces": [
            *({"type": t} for t in ("pid", "mount", "uts", "network")),
            {"type": "ipc", "path": "/proc/self/ns/ipc"},
        ],
    }
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], **changes)
    proc = runtime(oci_root, "create", "--bundle", bundle, cid)
    assert proc.returncode == 1 and b"linux.sysctl.kernel.msgmax" in proc.stderr, proc.stderr
    assert containers_in(oci_root) == []
    with open("/proc/sys/vm/dirty_expire_centisecs") as f:
        assert f.read().strip() == current
