"""What a command inside a container sees of the host: processes, host
name, network, mounts, /proc and /sys, /dev, the host view's files,
capabilities and ids.  Every check runs in the host view and on the busybox
root where it makes sense, as root and rootless.

The shared busybox root is always used read-only (all tests share it).
Root file system layout, bind/tmpfs mounts and symlink safety are in
test_rootfs.py."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import sys
import tempfile

import pytest

import sandboxlib as sb
from sandboxlib import Mount
from sandboxlib.native.binding import MountKind
from sandboxlib.rootfs.layout import interpreter_prefixes, layout
from sandboxlib.security.capabilities import DEFAULT_CAPABILITIES, capability_mask

DEFAULT_MASK = capability_mask(DEFAULT_CAPABILITIES)
# Docker's masked and read-only paths, as the library promises them.
MASKED = (
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/scsi",
    "/proc/interrupts",
    "/proc/latency_stats",
    "/proc/timer_stats",
    "/proc/asound",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs", "/sys")
DEV_ENTRIES = {
    "null",
    "zero",
    "full",
    "random",
    "urandom",
    "tty",
    "pts",
    "ptmx",
    "shm",
    "mqueue",
    "fd",
    "stdin",
    "stdout",
    "stderr",
}
EROFS_TEXT = "Read-only file system"


# -- helpers (also used by test_rootfs.py) ------------------------------------
def box(rootfs, **kw) -> sb.Container:
    """A container on the host view (rootfs None) or on a root directory;
    read-only unless told otherwise when it has a root directory (the
    shared busybox root must never be written)."""
    kw.setdefault("read_only", rootfs is not None)
    return sb.Container(rootfs=rootfs, **kw)


def sh(c: sb.Container, script: str, *args: str, **kw) -> sb.Result:
    """Run a shell script (sh -c script sh args...), stdin from /dev/null."""
    return c.run(["sh", "-c", script, "sh", *args], stdin=sb.DEVNULL, **kw)


def out(c: sb.Container, script: str, *args: str, **kw) -> str:
    """Run a shell script that must succeed; its stdout as text."""
    r = sh(c, script, *args, **kw)
    assert r.exit_code == 0, f"{script!r} failed: {r}"
    return r.stdout.decode()


def py(c: sb.Container, code: str, *args: str, **kw):
    """Run Python code with the host's interpreter (host view); the JSON it prints."""
    r = c.run([sys.executable, "-c", code, *args], stdin=sb.DEVNULL, **kw)
    assert r.exit_code == 0, f"python failed: {r}"
    return json.loads(r.stdout)


def mount_points(mountinfo: str) -> set:
    return {line.split()[4] for line in mountinfo.splitlines() if line.strip()}


def mount_options(mountinfo: str) -> dict:
    """mount point -> per-mount options of the topmost mount there."""
    return {line.split()[4]: line.split()[5].split(",") for line in mountinfo.splitlines() if line.strip()}


def proc_status(text: str) -> dict:
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Cap"):
            fields[name] = int(value.strip(), 16)
        elif name in ("NoNewPrivs", "Uid", "Gid"):
            fields[name] = value.split()
    return fields


def id_map(text: str) -> list:
    return [tuple(int(v) for v in line.split()) for line in text.splitlines() if line.strip()]


def subordinate(path: str, name: str):
    """(start, count) of the first /etc/subuid-style range of ``name``, or None."""
    with open(path) as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name and int(parts[2]) > 0:
                return int(parts[1]), int(parts[2])
    return None


def make_open_dir(parent) -> str:
    """A fresh world-writable directory (writable by any container root,
    rootless or mapped to an unprivileged host range)."""
    path = tempfile.mkdtemp(dir=str(parent), prefix="open-")
    os.chmod(path, 0o777)
    return path


@pytest.fixture(params=["host", "busybox"])
def root(request, busybox_root):
    """The container root: None (host view) or the shared busybox root."""
    return None if request.param == "host" else busybox_root


@pytest.fixture
def open_dir(shared_dir):
    path = make_open_dir(shared_dir)
    yield path
    shutil.rmtree(path)


# -- processes ----------------------------------------------------------------
def _nspid(host_pid: int) -> list:
    with open(f"/proc/{host_pid}/status") as f:
        return next(line.split()[1:] for line in f if line.startswith("NSpid:"))


def check_pid_namespace(rootfs):
    with box(rootfs) as c, box(rootfs) as other:
        assert out(c, "cat /proc/1/comm") == "sbx-init\n"
        shell, *entries = out(c, "echo $$; ls /proc").split()
        pids = sorted(int(e) for e in entries if e.isdigit())
        # Only the init, its launcher, the shell and maybe ls: no host process.
        assert 1 in pids and int(shell) in pids and len(pids) <= 4, pids
        assert max(pids) < 10, pids
        assert os.getpid() not in pids
        sleeper = c.spawn(["sleep", "1000"], stdin=sb.DEVNULL, stdout=sb.DEVNULL, stderr=sb.DEVNULL)
        try:
            # The host sees the same processes under other pids, nested one level.
            assert _nspid(c.pid) == [str(c.pid), "1"]
            assert sleeper.container_pid < 10
            assert _nspid(sleeper.pid) == [str(sleeper.pid), str(sleeper.container_pid)]
            here = out(c, "cat /proc/[0-9]*/comm").split()
            there = out(other, "cat /proc/[0-9]*/comm").split()
        finally:
            sleeper.kill()
            sleeper.wait()
    assert "sleep" in here and "sbx-init" in here
    # Another container sees neither the host's processes nor this one's.
    assert set(there) <= {"sbx-init", "sbx-launcher", "sh", "cat"}, there


def test_pid_namespace(runner, root):
    runner(check_pid_namespace, root)


PID_VIEW_PY = r"""
import json, os
procs = {p: open(f"/proc/{p}/comm").read().strip() for p in os.listdir("/proc") if p.isdigit()}
print(json.dumps([os.getpid(), os.getppid(), procs]))
"""


def check_python_pid_view():
    with sb.Container() as c:
        return py(c, PID_VIEW_PY), os.getpid()


def test_pid_namespace_python(runner):
    (me, parent, procs), host_pid = runner(check_python_pid_view)
    assert parent == 1 and me < 10
    assert procs.pop("1") == "sbx-init" and procs.pop(str(me)).startswith("python")
    assert list(procs.values()) == ["sbx-launcher"]  # it forks exec'd commands (csrc/launcher.c)
    assert str(host_pid) not in procs


def check_no_inherited_fds(rootfs):
    # Inheritable fds of the host process (a pipe, a directory: an escape
    # route if it leaked) never reach a command.
    r, w = os.pipe()
    top = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    for fd in (r, w, top):
        os.set_inheritable(fd, True)
    try:
        with box(rootfs) as c:
            return sorted(out(c, "ls /proc/self/fd").split(), key=int), [r, w, top]
    finally:
        for fd in (r, w, top):
            os.close(fd)


def test_no_host_fds_inside(runner, root):
    fds, ours = runner(check_no_inherited_fds, root)
    assert fds == ["0", "1", "2", "3"], fds  # stdio, and ls's own directory fd
    assert max(ours) > 3


# -- host name ----------------------------------------------------------------
def check_hostname(rootfs, hostname):
    before = socket.gethostname()
    with box(rootfs, hostname=hostname) as c:
        seen = out(c, 'cat /proc/sys/kernel/hostname; uname -n; echo "$HOSTNAME"').split()
        ident, name = c.id, c.hostname
    assert socket.gethostname() == before
    return seen, ident, name, before


@pytest.mark.parametrize("hostname", [None, "box-1.example"])
def test_hostname(runner, root, hostname):
    seen, ident, name, host_name = runner(check_hostname, root, hostname)
    expected = hostname or ident[:12]
    assert len(ident) == 64 and all(ch in "0123456789abcdef" for ch in ident)
    assert name == expected
    assert seen == [expected] * 3
    assert host_name != expected


# -- network ------------------------------------------------------------------
def _interfaces(proc_net_dev: str) -> list:
    return sorted(line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line)


def check_network_none(rootfs):
    with box(rootfs) as c:
        dev = out(c, "cat /proc/net/dev")
        sys_net = out(c, "ls /sys/class/net").split()
        flags = int(out(c, "cat /sys/class/net/lo/flags"), 16)
        link = out(c, "ip -o link")
    with open("/proc/net/dev") as f:
        host = _interfaces(f.read())
    return _interfaces(dev), sys_net, flags, link, host


def test_network_only_loopback(runner, root):
    names, sys_net, flags, link, host = runner(check_network_none, root)
    assert names == ["lo"] and sys_net == ["lo"]
    assert flags & 0x1 and flags & 0x8, hex(flags)  # IFF_UP, IFF_LOOPBACK
    assert len(link.splitlines()) == 1 and "lo:" in link and "UP" in link.split(">")[0]
    assert host != ["lo"]  # the host has more: the check above means something


def check_cpus(rootfs):
    # the set-up pins its threads to CPUs for a while: commands must get all of ours
    with box(rootfs) as c:
        inside = out(c, "grep Cpus_allowed_list /proc/self/status")
        one_shot = sb.run(["grep", "Cpus_allowed_list", "/proc/self/status"], rootfs=rootfs).stdout.decode()
    with open("/proc/self/status") as f:
        host = [line for line in f if line.startswith("Cpus_allowed_list")][0]
    return inside.strip(), one_shot.strip(), host.strip()


def test_commands_may_use_every_cpu(runner, root):
    inside, one_shot, host = runner(check_cpus, root)
    assert inside == one_shot == host, (inside, one_shot, host)


LOOPBACK_PY = r"""
import json, socket
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
client = socket.create_connection(server.getsockname())
conn, _ = server.accept(); client.sendall(b"ping"); got = conn.recv(4)
print(json.dumps(got.decode()))
"""
# The server's stdin stays open (a FIFO held by fd 3) until the client is
# done: at EOF on stdin busybox nc shuts its side down, and a client that
# sees that before reading its own stdin exits without sending.
LOOPBACK_SH = """mkfifo /dev/shm/hold
nc -l -p 7777 < /dev/shm/hold > /dev/shm/got &
exec 3> /dev/shm/hold
i=0; until echo ping | nc 127.0.0.1 7777; do i=$((i+1)); [ $i -lt 5000 ] || exit 3; done
exec 3>&-; wait; cat /dev/shm/got"""


def check_loopback(rootfs):
    with box(rootfs) as c:
        if rootfs is None:
            return py(c, LOOPBACK_PY) + "\n"
        return out(c, LOOPBACK_SH)


def test_loopback_works(runner, root):
    assert runner(check_loopback, root) == "ping\n"


def check_network_host(rootfs):
    with open("/proc/net/dev") as f:
        host = _interfaces(f.read())
    with box(rootfs, network="host") as c:
        inside = _interfaces(out(c, "cat /proc/net/dev"))
        sys_net = sorted(out(c, "ls /sys/class/net").split())
    return host, inside, sys_net


def test_network_host_shows_host_interfaces(runner, root):
    host, inside, sys_net = runner(check_network_host, root)
    assert len(host) > 1
    assert inside == host and sys_net == host


ABSTRACT_PY = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1].encode().replace(b"@", b"\0", 1)); print(json.dumps("connected"))
except ConnectionRefusedError:
    print(json.dumps("refused"))
"""


def check_abstract_socket():
    name = f"@sbx-iso-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(name.encode().replace(b"@", b"\0", 1))
        listener.listen(4)
        with sb.Container() as c:
            private = py(c, ABSTRACT_PY, name)
        with sb.Container(network="host") as c:
            shared = py(c, ABSTRACT_PY, name)
    finally:
        listener.close()
    return private, shared


def test_host_abstract_sockets_unreachable(runner):
    # Abstract unix sockets (e.g. the host's D-Bus or X11) belong to the
    # network namespace: unreachable by default, reachable with network="host".
    assert runner(check_abstract_socket) == ("refused", "connected")


# -- mounts -------------------------------------------------------------------
def check_mount_table(rootfs):
    with open("/proc/self/mountinfo") as f:
        host = mount_points(f.read())
    with box(rootfs) as c:
        inside = mount_points(out(c, "cat /proc/self/mountinfo"))
        planned = {op.target for op in layout(c.config) if op.kind != MountKind.SYMLINK}
    return sorted(host), sorted(inside), sorted(planned)


def test_mount_table_isolated(runner, root):
    host, inside, planned = (set(v) for v in runner(check_mount_table, root))
    # Nothing but what the container's layout asks for.
    assert inside <= planned | {"/"}, inside - planned
    required = {
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/dev/null",
        "/proc/sys",
        "/sys/firmware",
    }
    if root is None:
        required |= {"/usr", "/etc", "/tmp", "/run"}
    assert required <= inside, required - inside
    # the interpreter is bound in by design, wherever it lives (make test's venv is in the checkout)
    for path in inside - set(interpreter_prefixes()):
        assert not path.startswith(("/mnt", "/work", "/sys/fs/cgroup", "/home", "/var")), path
    assert not (host - planned - {"/"}) & inside


def check_inner_mounts_stay_inside(rootfs, data_dir):
    with box(rootfs, mounts=[Mount.bind(data_dir, "/home/app")], cap_add=["SYS_ADMIN"]) as c:
        text = out(
            c,
            "mkdir /home/app/sub && mount -t tmpfs sbx-inner /home/app/sub && "
            "echo secret > /home/app/sub/f && cat /home/app/sub/f && "
            "grep -c sbx-inner /proc/self/mountinfo",
        )
        with open(f"/proc/{c.pid}/mountinfo") as f:
            in_container = "sbx-inner" in f.read()
        # While the container still runs: the host has the directory, not the mount.
        host_sub = os.listdir(os.path.join(data_dir, "sub"))
        with open("/proc/self/mountinfo") as f:
            on_host = "sbx-inner" in f.read()
    return text, in_container, host_sub, on_host


def test_mounts_inside_do_not_reach_host(runner, root, open_dir):
    text, in_container, host_sub, on_host = runner(check_inner_mounts_stay_inside, root, open_dir)
    assert text == "secret\n1\n"
    assert in_container and not on_host
    assert host_sub == []
    assert os.listdir(open_dir) == ["sub"] and os.listdir(os.path.join(open_dir, "sub")) == []


# -- /proc and /sys -----------------------------------------------------------
MASK_PROBE = """for p in "$@"; do
  if [ -d "$p" ]; then echo "$p dir $(ls -A "$p" | wc -l)"
  elif [ -e "$p" ]; then echo "$p file $(head -c 1 "$p" | wc -c)"
  else echo "$p absent"; fi
done"""


def check_masked_paths(rootfs, userns=True):
    with box(rootfs, userns=userns) as c:
        lines = out(c, MASK_PROBE, *MASKED).splitlines()
        points = mount_points(out(c, "cat /proc/self/mountinfo"))
    host = {p: os.path.exists(p) for p in MASKED}
    return [line.split(None, 1) for line in lines], host, sorted(points & set(MASKED))


def _check_masked(lines, host, points):
    assert [p for p, _ in lines] == list(MASKED)
    for path, state in lines:
        assert " ".join(state.split()) in ("dir 0", "file 0", "absent"), (path, state)
    # Those the host has are there, empty, and a mount of their own: masked,
    # not empty by luck (in a user namespace /proc/keys reads empty anyway).
    assert any(host.values())
    for path, state in lines:
        if host[path]:
            assert state != "absent", path
    assert points == sorted(p for p, present in host.items() if present)


def test_masked_paths(runner, root):
    _check_masked(*runner(check_masked_paths, root))


def test_masked_paths_as_real_root(root):
    """userns=False: the host's /proc/keys would show its keyrings unmasked."""
    _check_masked(*check_masked_paths(root, False))


RO_PROBE = """for p in "$@"; do
  if [ -d "$p" ]; then f=$(find "$p" -type f 2>/dev/null | head -n 1)
  elif [ -e "$p" ]; then f=$p
  else echo "$p|absent"; continue; fi
  msg=$( (: > "$f") 2>&1) && echo "$p|WRITABLE $f" || echo "$p|$msg"
done"""


def check_read_only_paths(rootfs):
    with box(rootfs) as c:
        lines = out(c, RO_PROBE, *READ_ONLY, "/proc/sys/kernel/hostname").splitlines()
        options = mount_options(out(c, "cat /proc/self/mountinfo"))
    host = {p: os.path.exists(p) for p in READ_ONLY}
    return [line.split("|", 1) for line in lines], options, host


def test_read_only_paths(runner, root):
    lines, options, host = runner(check_read_only_paths, root)
    assert [p for p, _ in lines] == [*READ_ONLY, "/proc/sys/kernel/hostname"]
    for path, result in lines:
        if path in host and not host[path]:
            assert result == "absent", (path, result)
        else:
            assert EROFS_TEXT in result, (path, result)
    for path in READ_ONLY:
        if host[path]:
            assert options[path][0] == "ro", (path, options.get(path))


# -- /dev -----------------------------------------------------------------------
DEV_PROBE = """ls -A /dev; echo ---
ls -A /dev/pts; echo ---
for l in /dev/ptmx /dev/fd /dev/stdin /dev/stdout /dev/stderr; do readlink "$l"; done; echo ---
head -c 8 /dev/zero | od -An -tx1 | tr -d ' \\n'; echo
head -c 16 /dev/urandom | wc -c
head -c 16 /dev/random | wc -c
echo data > /dev/null && echo null-ok
head -c 1 /dev/zero 2>&1 > /dev/full | grep -c 'No space left on device'
echo shm > /dev/shm/probe && cat /dev/shm/probe
stat -c %a /dev/pts/ptmx"""


def check_dev(rootfs):
    with box(rootfs) as c:
        text = out(c, DEV_PROBE)
        pty = (
            py(
                c,
                "import json, os; m, s = os.openpty(); os.write(s, b'hi\\n'); "
                "print(json.dumps([os.read(m, 16).decode(), os.ttyname(s)]))",
            )
            if rootfs is None
            else None
        )
    return text, pty


def test_dev(runner, root):
    text, pty = runner(check_dev, root)
    entries, pts, links, rest = text.split("---\n")
    assert set(entries.split()) == DEV_ENTRIES
    assert pts.split() == ["ptmx"]
    assert links.split() == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]
    zeros, urandom, random, null, full, shm, ptmx_mode = [line.strip() for line in rest.splitlines()]
    assert zeros == "00" * 8
    assert urandom == random == "16"
    assert (null, full, shm, ptmx_mode) == ("null-ok", "1", "shm", "666")
    if root is None:
        assert pty[0] == "hi\r\n" and pty[1].startswith("/dev/pts/")


# -- the host view ----------------------------------------------------------------
HOST_VIEW_PY = r"""
import errno, json, os, stat, sys

def err(fn):
    try:
        fn()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"

def content(path):
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        return sorted(os.listdir(path))
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")

sockets = []
for top in ("/run", "/var", "/tmp"):
    for d, dirs, files in os.walk(top):
        sockets += [os.path.join(d, n) for n in dirs + files
                    if stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode)]
print(json.dumps({
    "top": sorted(os.listdir("/")),
    "writes": {p: err(lambda: open(p, "w").close()) for p in ("/usr/sbx-probe", "/bin/sbx-probe", "/etc/sbx-probe")},
    "mkdir": {p: err(lambda: os.mkdir(p)) for p in ("/usr/sbx-probe", "/etc/sbx-probe")},
    "dirs": {p: os.path.isdir(p) for p in ("/usr", "/bin", "/etc")},
    "passwd": os.path.getsize("/etc/passwd"),
    "secrets": {p: content(p) for p in ("/etc/shadow", "/etc/gshadow", "/etc/ssh", "/home", "/var")},
    "ancestors": {p: sorted(os.listdir(p)) for p in sys.argv[1:]},
    "run": sorted(os.listdir("/run")), "tmp": sorted(os.listdir("/tmp")),
    "tmp_write": err(lambda: open("/tmp/probe", "w").close()),
    "sockets": sockets,
    "mounts": [line.split()[4:6] for line in open("/proc/self/mountinfo")],
}))
"""


def _interpreter_dirs():
    """Prefixes of this interpreter outside the system dirs, and what each of
    their ancestors must contain (only the way down to them)."""
    system = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    prefixes = {p for p in prefixes if not any(p == d or p.startswith(d + "/") for d in system)}
    ancestors: dict = {}
    for prefix in prefixes:
        parts = prefix.strip("/").split("/")
        for i in range(1, len(parts)):
            ancestors.setdefault("/" + "/".join(parts[:i]), set()).add(parts[i])
    return prefixes, {k: sorted(v) for k, v in ancestors.items()}


def check_host_view(userns=True):
    prefixes, ancestors = _interpreter_dirs()
    with sb.Container(userns=userns) as c:
        seen = py(c, HOST_VIEW_PY, *sorted(ancestors))
        hello = c.run([sys.executable, "-c", "print(1)"], stdin=sb.DEVNULL)
    host = {p: os.path.lexists(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")}
    return seen, hello.exit_code, hello.stdout, sorted(prefixes), ancestors, host, os.path.getsize("/etc/passwd")


def test_host_view(runner):
    _check_host_view(*runner(check_host_view))


def test_host_view_as_real_root():
    """userns=False: real root could read a 0640 /etc/shadow; the masks hide it."""
    _check_host_view(*check_host_view(False))


def _check_host_view(seen, code, hello, prefixes, ancestors, host, passwd_size):
    assert (code, hello) == (0, b"1\n")
    tops = {p.split("/")[1] for p in prefixes}
    assert set(seen["top"]) == (
        {d[1:] for d, present in host.items() if present} | {"tmp", "run", "proc", "sys", "dev"} | tops
    )
    assert seen["dirs"] == {"/usr": True, "/bin": True, "/etc": True}
    assert set(seen["writes"].values()) == {"EROFS"}, seen["writes"]
    assert set(seen["mkdir"].values()) == {"EROFS"}, seen["mkdir"]
    assert seen["passwd"] == passwd_size > 0
    options = {point: opts.split(",") for point, opts in seen["mounts"]}
    for path in ["/usr", "/etc", *prefixes]:
        assert options[path][0] == "ro", (path, options.get(path))
    secrets_ = seen["secrets"]
    assert secrets_["/etc/shadow"] == "" and secrets_["/etc/gshadow"] == "", secrets_
    assert secrets_["/etc/ssh"] in (None, []), secrets_
    assert secrets_["/home"] is None and secrets_["/var"] is None, secrets_
    # /root (or wherever the interpreter lives) holds only the way to it.
    assert seen["ancestors"] == ancestors
    # /tmp is the container's own, but for the way to an interpreter under it (a checkout's venv)
    assert seen["run"] == [] and seen["tmp"] == ancestors.get("/tmp", []) and seen["tmp_write"] == "ok"
    assert seen["sockets"] == []


PRIVATE_PROBE = r"""
import errno, json, os, sys
def seen(path):
    try:
        if os.path.isdir(path):
            return len(os.listdir(path))
        with open(path, "rb") as f:
            return len(f.read())
    except OSError as e:
        return errno.errorcode[e.errno]
points = {line.split()[4] for line in open("/proc/self/mountinfo")}
print(json.dumps({p: [seen(p), p in points] for p in sys.argv[1:]}))
"""


def private_etc_entries() -> list:
    """What other users may not read in the host's /etc (not below such a dir)."""
    found = []
    for dirpath, dirnames, filenames in os.walk("/etc"):
        for name in list(dirnames) + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            if not st.st_mode & 0o004 or (stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o001):
                found.append(path)
                if name in dirnames:
                    dirnames.remove(name)
    return sorted(found)


def test_host_view_as_real_root_hides_what_users_cannot_read():
    """As real root (userns=False) the host view would show every secret of
    the host's /etc that only root may read (e.g. Docker's key.json): each
    such entry is masked (empty, a mount of its own), as a container in a
    user namespace cannot read them at all."""
    private = private_etc_entries()
    assert "/etc/shadow" in private and len(private) > 5, private  # this host has more than ETC_SECRETS
    with sb.Container(userns=False) as c:
        masked = py(c, PRIVATE_PROBE, *private)
    with sb.Container() as c:
        as_mapped_root = py(c, PRIVATE_PROBE, *private)
    assert masked == {p: [0, True] for p in private}, masked
    assert all(value == [0, True] or value[0] == "EACCES" for value in as_mapped_root.values()), as_mapped_root


# -- capabilities -------------------------------------------------------------------
def check_capabilities(rootfs, options, run_user):
    with box(rootfs, **options) as c:
        status = proc_status(out(c, "cat /proc/self/status", user=run_user))
        ids = out(c, "id -u; id -g", user=run_user).split()
    return status, ids


def _assert_caps(status, effective, bounding=None):
    bounding = effective if bounding is None else bounding
    assert status["CapEff"] == effective, hex(status["CapEff"])
    assert status["CapPrm"] == effective, hex(status["CapPrm"])
    assert status["CapBnd"] == bounding, hex(status["CapBnd"])
    assert status["CapInh"] == 0 and status["CapAmb"] == 0
    assert status["NoNewPrivs"] == ["1"]


def test_default_capabilities(runner, root):
    status, ids = runner(check_capabilities, root, {}, None)
    assert DEFAULT_MASK == 0x800405FB  # the 11 documented capabilities
    _assert_caps(status, DEFAULT_MASK)
    assert ids == ["0", "0"]


def test_capabilities_without_userns(root):
    status, ids = check_capabilities(root, {"userns": False}, None)
    _assert_caps(status, DEFAULT_MASK)
    assert ids == ["0", "0"]


def test_non_root_user_has_no_capabilities(runner, root):
    user = "1000:1000" if root is None else "app"
    for options, run_user in (({"user": user}, None), ({}, user)):
        status, ids = runner(check_capabilities, root, options, run_user)
        _assert_caps(status, 0, DEFAULT_MASK)
        assert status["Uid"] == ["1000"] * 4 and status["Gid"] == ["1000"] * 4
        assert ids == ["1000", "1000"]


CAP_PROBE = """touch /dev/shm/f; chown 1000 /dev/shm/f 2>&1 && echo chown-ok
ip link set lo mtu 1500 2>&1 && echo net-admin-ok
mknod /dev/shm/n c 1 3 2>&1 && echo mknod-ok
cat /proc/self/status"""


def check_cap_changes(rootfs, cap_add, cap_drop):
    with box(rootfs, cap_add=cap_add, cap_drop=cap_drop) as c:
        text = out(c, CAP_PROBE)
    results, _, status = text.partition("Name:")
    return results.splitlines(), proc_status(status)


def test_cap_add_and_drop(runner, root):
    results, status = runner(check_cap_changes, root, [], [])
    assert results[0] == "chown-ok" and "not permitted" in results[1] and "not permitted" in results[2]
    results, status = runner(check_cap_changes, root, ["net_admin", "CAP_SYS_PTRACE"], ["CHOWN", "cap_kill"])
    expected = (DEFAULT_MASK | 1 << 12 | 1 << 19) & ~(1 << 0 | 1 << 5)
    _assert_caps(status, expected)
    assert "not permitted" in results[0] and results[1] == "net-admin-ok" and "not permitted" in results[2]
    results, status = runner(check_cap_changes, root, [], ["ALL"])
    _assert_caps(status, 0)


# -- ids ----------------------------------------------------------------------------
def check_id_maps(options):
    with sb.Container(**options) as c:
        maps = out(c, "cat /proc/self/uid_map; echo ---; cat /proc/self/gid_map")
        ids = out(c, "id -u; id -g").split()
    uid_map, gid_map = (id_map(part) for part in maps.split("---\n"))
    name = pwd.getpwuid(os.getuid()).pw_name
    return (
        uid_map,
        gid_map,
        ids,
        os.getuid(),
        os.getgid(),
        subordinate("/etc/subuid", name),
        subordinate("/etc/subgid", name),
    )


def test_id_maps(runner):
    uid_map, gid_map, ids, uid, gid, subuid, subgid = runner(check_id_maps, {})
    assert ids == ["0", "0"]
    if runner.mode == "root":
        assert uid_map == gid_map == [(0, 1_000_000_000, 65536)]
    else:
        assert subuid and subgid
        assert uid_map == [(0, uid, 1), (1, subuid[0], subuid[1])]
        assert gid_map == [(0, gid, 1), (1, subgid[0], subgid[1])]


def test_id_maps_single_id(single_id_runner):
    uid_map, gid_map, ids, uid, gid, subuid, subgid = single_id_runner(check_id_maps, {})
    assert subuid is None and subgid is None
    assert uid_map == [(0, uid, 1)] and gid_map == [(0, gid, 1)]
    assert ids == ["0", "0"]


def test_id_maps_without_userns():
    uid_map, gid_map, ids, *_ = check_id_maps({"userns": False})
    assert uid_map == gid_map == [(0, 0, 4294967295)]
    assert ids == ["0", "0"]


def check_file_owners(data_dir, options, users):
    """Create a file per container user in a bind-mounted host directory;
    also report how a file of host root looks inside."""
    with sb.Container(mounts=[Mount.bind(data_dir, "/data")], **options) as c:
        inside = {}
        for user in users:
            name = f"/data/by-{user.replace(':', '-')}"
            inside[user] = out(c, 'touch "$1" && stat -c "%u %g" "$1"', name, user=user).split()
        host_root_file = out(c, "stat -c '%u %g' /data/host-root").split()
    return inside, host_root_file, os.getuid(), os.getgid()


def test_files_owned_by_mapped_ids(runner, open_dir):
    open(os.path.join(open_dir, "host-root"), "w").close()
    inside, host_root_file, uid, gid = runner(check_file_owners, open_dir, {}, ["0", "1000:1000"])
    assert inside == {"0": ["0", "0"], "1000:1000": ["1000", "1000"]}
    owners = {
        u: (st.st_uid, st.st_gid) for u in ("0", "1000-1000") for st in [os.stat(os.path.join(open_dir, f"by-{u}"))]
    }
    assert host_root_file == ["65534", "65534"]  # host root is unmapped: the overflow ids
    if runner.mode == "root":
        assert owners == {"0": (1_000_000_000, 1_000_000_000), "1000-1000": (1_000_001_000, 1_000_001_000)}
    else:
        user = runner.worker.user.pw_name
        subuid, subgid = subordinate("/etc/subuid", user), subordinate("/etc/subgid", user)
        assert owners == {"0": (uid, gid), "1000-1000": (subuid[0] + 999, subgid[0] + 999)}


def test_files_owned_without_userns(open_dir):
    open(os.path.join(open_dir, "host-root"), "w").close()
    inside, host_root_file, _, _ = check_file_owners(open_dir, {"userns": False}, ["0", "1000:1000"])
    assert inside == {"0": ["0", "0"], "1000:1000": ["1000", "1000"]}
    owners = {
        u: (st.st_uid, st.st_gid) for u in ("0", "1000-1000") for st in [os.stat(os.path.join(open_dir, f"by-{u}"))]
    }
    assert owners == {"0": (0, 0), "1000-1000": (1000, 1000)}
    assert host_root_file == ["0", "0"]


def test_files_owned_by_single_mapped_id(single_id_runner, open_dir):
    open(os.path.join(open_dir, "host-root"), "w").close()
    inside, host_root_file, uid, gid = single_id_runner(check_file_owners, open_dir, {}, ["0"])
    assert inside == {"0": ["0", "0"]}
    assert host_root_file == ["65534", "65534"]
    st = os.stat(os.path.join(open_dir, "by-0"))
    assert (st.st_uid, st.st_gid) == (uid, gid)
