"""sandboxlib-runtime: what runtime-tools' validation tests check of a
container's process and file system, through the real runtime CLI, root and
rootless: the five capability sets, ``noNewPrivileges: false`` (with a
seccomp filter, installed while still privileged), ``linux.devices`` (made
with mknod as root, the host's node bound in a user namespace), the mount
propagation options, and mountinfo in config order."""

from __future__ import annotations

import os

from sandboxlib.oci.default_spec import default_spec
from tests.ocikit import containers_in, make_bundle, ok, runtime, unique_id
from tests.test_oci import oci_root, run  # noqa: F401  (the fixture)

STATUS = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status"
# NET_BIND_SERVICE (10) and NET_RAW (13); CHOWN (0) only in the bounding set.
SOME = ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
ALL_FIVE = {
    "bounding": SOME + ["CAP_CHOWN"],
    "effective": SOME,
    "permitted": SOME,
    "inheritable": SOME,
    "ambient": SOME,
}
MKDIR_REFUSED = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def status(text: bytes) -> dict:
    return dict(line.split(":\t") for line in text.decode().splitlines() if ":\t" in line)


def test_capability_sets_for_a_user_without_no_new_privs(oci_root, tmp_path, busybox_root):
    """uid 1000 keeps exactly the configured sets (ambient raised: its
    permitted and effective sets after execve), no_new_privs is off, and
    the config's seccomp filter is in force all the same."""
    proc = run(
        oci_root,
        tmp_path,
        busybox_root,
        ["sh", "-c", f"{STATUS}; mkdir /tmp/d || echo mkdir-refused"],
        **{
            "process.user": {"uid": 1000, "gid": 1000},
            "process.capabilities": ALL_FIVE,
            "process.noNewPrivileges": False,
            "linux.seccomp": MKDIR_REFUSED,
            "mounts": default_spec()["mounts"] + [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
        },
    )
    assert proc.returncode == 0, proc.stderr
    found = status(proc.stdout)
    assert found == {
        "CapInh": "0000000000002400",
        "CapPrm": "0000000000002400",
        "CapEff": "0000000000002400",
        "CapBnd": "0000000000002401",
        "CapAmb": "0000000000002400",
        "NoNewPrivs": "0",
    }, proc.stdout
    assert proc.stdout.decode().splitlines()[-1] == "mkdir-refused"


def test_no_new_privs_follows_the_config(oci_root, tmp_path, busybox_root):
    """The runtime-spec's default is off; true sets it (also for exec --no-new-privs)."""
    for value, expected in ((None, "0"), (True, "1"), (False, "0")):
        proc = run(oci_root, tmp_path, busybox_root, ["sh", "-c", STATUS], **{"process.noNewPrivileges": value})
        assert proc.returncode == 0, proc.stderr
        assert status(proc.stdout)["NoNewPrivs"] == expected, value
    cid = unique_id()
    bundle = make_bundle(str(tmp_path / cid), busybox_root, ["sleep", "60"], **{"process.noNewPrivileges": False})
    ok(oci_root, "run", "--detach", "--bundle", bundle, cid)
    try:
        assert status(ok(oci_root, "exec", cid, "sh", "-c", STATUS).stdout)["NoNewPrivs"] == "0"
        assert status(ok(oci_root, "exec", "--no-new-privs", cid, "sh", "-c", STATUS).stdout)["NoNewPrivs"] == "1"
    finally:
        ok(oci_root, "delete", "--force", cid)


def test_capability_sets_are_checked(oci_root, tmp_path, busybox_root):
    """Sets the kernel would refuse are named before anything is made."""
    cases = {
        "effective": {"bounding": SOME, "permitted": ["CAP_NET_RAW"], "effective": SOME},
        "ambient": {"bounding": SOME, "permitted": SOME, "inheritable": ["CAP_NET_RAW"], "ambient": SOME},
        "inheritable": {"bounding": ["CAP_NET_RAW"], "inheritable": SOME},
    }
    for field, caps in cases.items():
        cid = unique_id()
        bundle = make_bundle(str(tmp_path / cid), busybox_root, ["true"], **{"process.capabilities": caps})
        proc = runtime(oci_root, "create", "--bundle", bundle, cid)
        assert proc.returncode == 1 and f"process.capabilities.{field}".encode() in proc.stderr, proc.stderr
        assert containers_in(oci_root) == []


def test_rootless_capability_sets_without_no_new_privs(workers, busybox_root):
    """Rootless (root of a user namespace mapping the caller): the inheritable
    and ambient sets and no_new_privs off, with a seccomp filter."""
    from tests.ocikit import rootless_run

    caps = dict(ALL_FIVE, bounding=SOME, effective=SOME)
    changes = {"process.capabilities": caps, "process.noNewPrivileges": False, "linux.seccomp": MKDIR_REFUSED}
    (code, out, err, left), _leaks = workers["sbxtest"].call(
        rootless_run, busybox_root, ["sh", "-c", f"{STATUS}; mkdir /d || echo mkdir-refused"], changes
    )
    assert (code, left) == (0, []), err
    assert status(out) == {
        "CapInh": "0000000000002400",
        "CapPrm": "0000000000002400",
        "CapEff": "0000000000002400",
        "CapBnd": "0000000000002400",
        "CapAmb": "0000000000002400",
        "NoNewPrivs": "0",
    }, out
    assert out.decode().splitlines()[-1] == "mkdir-refused"


DEVICES = [
    {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620, "uid": 0, "gid": 6},
    {"path": "/dev/sub/myblk", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600},
    {"path": "/dev/myfifo", "type": "p", "fileMode": 0o620, "uid": 1, "gid": 2},
]


def test_devices_are_made(oci_root, tmp_path, busybox_root):
    """As root without a user namespace: each node made with its type,
    numbers, mode and owner (not through the umask); the char device works."""
    script = (
        "for d in /dev/mynull /dev/sub/myblk /dev/myfifo; do stat -c '%n %F %t:%T %a %u:%g' $d; done; "
        "echo x > /dev/mynull && echo wrote"
    )
    proc = run(oci_root, tmp_path, busybox_root, ["sh", "-c", script], **{"linux.devices": DEVICES})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [
        "/dev/mynull character special file 1:3 620 0:6",
        "/dev/sub/myblk block special file 7:c8 600 0:0",
        "/dev/myfifo fifo 0:0 620 1:2",
        "wrote",
    ]


def test_rootless_devices_are_the_hosts(workers, busybox_root):
    """In a user namespace mknod of a device is refused by the kernel: the
    host's node at that path is bound when it is the device asked for; a
    device the host does not have there is named in the error."""
    from tests.ocikit import rootless_run

    zero = {"linux.devices": [{"path": "/dev/zero", "type": "c", "major": 1, "minor": 5}]}
    (code, out, err, left), _ = workers["sbxtest"].call(
        rootless_run, busybox_root, ["sh", "-c", "head -c 3 /dev/zero | od -An -tx1"], zero
    )
    assert (code, out.split(), left) == (0, [b"00", b"00", b"00"], []), err
    wrong = {"linux.devices": [{"path": "/dev/zero", "type": "c", "major": 1, "minor": 3}]}
    (code, out, err, left), _ = workers["sbxtest"].call(rootless_run, busybox_root, ["true"], wrong)
    assert code == 1 and b"linux.devices[0]" in err and b"not c 1:3" in err and left == [], err


def test_mount_propagation_and_order(oci_root, tmp_path, busybox_root):
    """shared/rshared make a peer group of the container's own (never one
    with the host), for a mount or the root (rootfsPropagation); private is
    the default; mountinfo lists the config's mounts in order, binds (cloned
    early) included."""
    data = tmp_path / "data"
    data.mkdir()
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["shared", "size=1m"]},
        {"destination": "/mnt/a", "source": str(data), "options": ["rbind", "rshared", "mode=755"]},
        {"destination": "/mnt/b", "type": "tmpfs", "source": "tmpfs", "options": ["rprivate"]},
        {"destination": "/mnt/c", "source": str(data), "options": ["bind", "unbindable"]},
    ]
    script = "awk '$5 ~ /^\\/(tmp|mnt|$)/ {print $5, $7}' /proc/self/mountinfo"
    proc = run(
        oci_root, tmp_path, busybox_root, ["sh", "-c", script], mounts=mounts, **{"linux.rootfsPropagation": "shared"}
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.decode().splitlines()]
    assert [line[0] for line in lines] == ["/", "/tmp", "/mnt/a", "/mnt/b", "/mnt/c"]
    groups = [line[1] for line in lines]
    assert all(group.startswith("shared:") for group in groups[:3])
    assert len(set(groups[:3])) == 3  # three peer groups, of this container alone
    assert groups[3:] == ["-", "unbindable"]
    with open("/proc/self/mountinfo") as f:
        assert str(data) not in f.read()  # nothing propagated back to the host


def test_cpu_period_and_memory_nodes_in_a_nested_cgroup(oci_root, tmp_path, busybox_root):
    """cpu.period is written as given (the quota is per that period), and
    cpu.mems beside cpu.cpus; a v1 cpuset's new parent directories get their
    parent's CPUs and memory nodes (empty, no child could take any)."""
    from tests.ocikit import cgroup_path_of
    from tests.test_oci import cgroup_dirs

    cid = unique_id()
    outer = cgroup_path_of(cid)
    cpu = {"period": 50000, "quota": 20000, "shares": 256, "cpus": "0", "mems": "0"}
    bundle = make_bundle(
        str(tmp_path / cid),
        busybox_root,
        ["sleep", "30"],
        **{"linux.resources": {"cpu": cpu}, "linux.cgroupsPath": f"{outer}/inner"},
    )
    try:
        proc = runtime(oci_root, "create", "--bundle", bundle, cid)
        assert proc.returncode == 0, proc.stderr
        dirs = {d.split("/")[4]: d for d in cgroup_dirs(cid)}
        values = {}
        for controller, name in (("cpu", "cpu.cfs_period_us"), ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.shares")):
            with open(os.path.join(dirs[controller], "inner", name)) as f:
                values[name] = f.read().strip()
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(dirs["cpuset"], "inner", name)) as f:
                values[name] = f.read().strip()
        assert values == {
            "cpu.cfs_period_us": "50000",
            "cpu.cfs_quota_us": "20000",
            "cpu.shares": "256",
            "cpuset.cpus": "0",
            "cpuset.mems": "0",
        }
        proc = runtime(oci_root, "delete", "--force", cid)
        assert proc.returncode == 0, proc.stderr
    finally:
        for parent in cgroup_dirs(cid):  # the runtime removes the container's own, not its parents (as runc)
            os.rmdir(parent)


def _unshared(*flags: str):
    """``unshare FLAGS --fork sleep``, once it has unshared: (process, its pid)."""
    import subprocess

    from tests.conftest import wait_until

    proc = subprocess.Popen(["unshare", *flags, "--fork", "sleep", "600"], start_new_session=True)
    own = os.readlink("/proc/self/ns/ipc")
    assert wait_until(lambda: os.readlink(f"/proc/{proc.pid}/ns/ipc") != own)
    return proc


def test_namespaces_joined_by_path(oci_root, tmp_path, busybox_root):
    """network, uts, ipc and mount namespaces are joined by the init and the
    pid namespace by the spawn; the container's end (which kills all of its
    own) leaves the other processes of the joined pid namespace alone."""
    import signal

    holder = _unshared("--net", "--uts", "--ipc", "--mount", "--pid", "--propagation", "private")
    try:
        ns = f"/proc/{holder.pid}/ns"
        paths = {"network": "net", "uts": "uts", "ipc": "ipc", "mount": "mnt", "pid": "pid_for_children"}
        namespaces = [{"type": kind, "path": f"{ns}/{name}"} for kind, name in paths.items()]
        script = "for n in net uts ipc mnt pid; do readlink /proc/self/ns/$n; done"
        proc = run(
            oci_root,
            tmp_path,
            busybox_root,
            ["sh", "-c", f"{script}; sleep 60 & exit 0"],
            **{"linux.namespaces": namespaces},
        )
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        expected = [os.readlink(f"{ns}/{name}") for name in paths.values()]
        assert proc.stdout.decode().split() == expected, proc.stderr
        assert holder.poll() is None  # unshare and its sleep (that namespace's PID 1) live on
        with open(f"/proc/{holder.pid}/task/{holder.pid}/children") as f:
            sleeper = int(f.read().split()[0])
        assert os.path.exists(f"/proc/{sleeper}")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_rootless_join_refused_by_the_kernel_is_named(workers, busybox_root):
    """Rootless, the container's new user namespace holds no capability over
    the host's namespaces: setns() fails, and the error names the field."""
    from tests.ocikit import rootless_run

    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
    changes = {"linux.namespaces": namespaces + [{"type": "network", "path": "/proc/self/ns/net"}]}
    (code, out, err, left), _ = workers["sbxtest"].call(rootless_run, busybox_root, ["true"], changes)
    assert code == 1 and left == [], err
    assert b"setns() into the network namespace given by path" in err and b"linux.namespaces" in err, err


def test_a_node_that_cannot_be_replaced_is_an_error_not_changed(oci_root, tmp_path, busybox_root):
    """A device path that is a mount point (a node bound from elsewhere) is not
    unlinked, so nothing is made there: the create fails naming the entry, and
    the bound node keeps its owner and mode (it is never chowned through)."""
    node = tmp_path / "node"
    os.mknod(node, 0o644 | 0o020000, os.makedev(1, 3))
    bind = {"destination": "/dev/held", "type": "bind", "source": str(node), "options": ["bind"]}
    held = [{"path": "/dev/held", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620, "uid": 6, "gid": 6}]
    changes = {"mounts": default_spec()["mounts"] + [bind], "linux.devices": held}
    proc = run(oci_root, tmp_path, busybox_root, ["true"], **changes)
    st = os.stat(node)
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o644")
    assert proc.returncode != 0 and b"linux.devices[0]" in proc.stderr, proc.stderr
