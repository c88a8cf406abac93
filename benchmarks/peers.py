"""Set-up of the peers the benchmarks compare against: a busybox root, OCI
bundles for crun/runc, podman with private storage, and a private dockerd.

Everything lives in one temporary directory and in the benchmark's own
private mount namespace (see run_all.py); nothing on the host is changed.
Every engine started here is stopped by its pid in ``close()``.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from typing import Dict, List, Optional, Sequence

from sandboxlib.security.capabilities import DEFAULT_CAPABILITIES

DEVNULL = subprocess.DEVNULL
BUSYBOX = "/bin/busybox"
APPLETS = ("true", "sh", "sleep", "cat")
ID_BASE = 1_000_000_000  # sandboxlib's default host ids for container root, as root
RLIMITS = (("RLIMIT_NOFILE", 1024), ("RLIMIT_NPROC", 1024))  # root lacks CAP_SYS_RESOURCE here
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
IMAGE = "sbxbench-busybox"


class PeerUnavailable(Exception):
    """A peer cannot run here; the message says why (it goes into the table)."""


def quiet(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    """Run a set-up command; its output is kept for the error message."""
    out = subprocess.run(list(argv), stdin=DEVNULL, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        last = msg[-1] if msg else f"status {out.returncode}"
        raise PeerUnavailable(f"`{' '.join(argv[:3])} ...` failed: {last}")
    return out


def true_run(argv: Sequence[str]) -> None:
    """One timed start-to-exit; a failure ends the benchmark loudly."""
    subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, check=True)


def busybox_rootfs(path: str) -> str:
    """A minimal root: static busybox, a few applets, /etc/passwd, mount points."""
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "run"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(path, "bin", applet))
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    return path


def _mounts() -> List[dict]:
    def m(dst, typ, src, opts):
        return {"destination": dst, "type": typ, "source": src, "options": opts}

    return [
        m("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        m("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        m("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        m("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        m("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        m("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        m("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
    ]


def oci_config(args: Sequence[str], rootfs: str, cgroups_path: Optional[str]) -> dict:
    """An OCI runtime config with the isolation sandboxlib gives by default:
    user (root mapped to ID_BASE), pid, mount, net, uts, ipc, cgroup namespaces,
    Podman's 11 capabilities, no_new_privs, a read-only busybox root."""
    caps = sorted("CAP_" + c for c in DEFAULT_CAPABILITIES)
    namespaces = ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"]
    mapping = [{"containerID": 0, "hostID": ID_BASE, "size": 65536}]
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps),
            "rlimits": [{"type": t, "hard": v, "soft": v} for t, v in RLIMITS],
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": "box",
        "mounts": _mounts(),
        "linux": {
            "uidMappings": mapping,
            "gidMappings": mapping,
            "namespaces": [{"type": t} for t in namespaces],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"],
        },
    }
    if cgroups_path:  # else the runtime's default (/<id>), removed when the container ends
        config["linux"]["cgroupsPath"] = cgroups_path
    return config


class OciRuntime:
    """crun or runc with its own state directory and two bundles (true, sleep)."""

    def __init__(self, name: str, workdir: str, rootfs: str, cgroup_prefix: str) -> None:
        self.name = name
        self.binary = shutil.which(name)
        if not self.binary:
            raise PeerUnavailable(f"{name} is not installed (apt-get install {name})")
        self.state = os.path.join(workdir, f"{name}-state")
        self.cgroup_prefix = cgroup_prefix
        self._rootfs = rootfs
        self._workdir = workdir
        self._ids = itertools.count(1)  # next() is atomic: workers may share a runtime
        self.live: List[str] = []
        # Written once: rewriting it per run would be timed, and races with a second worker.
        self._true_argv = [
            self.binary,
            "--root",
            self.state,
            "run",
            "--bundle",
            self._bundle(["/bin/true"], "true", None),
        ]

    def _bundle(self, args: Sequence[str], name: str, cgroups_path: Optional[str]) -> str:
        bundle = os.path.join(self._workdir, f"{self.name}-bundle-{name}")
        os.makedirs(bundle, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(oci_config(args, self._rootfs, cgroups_path), f)
        return bundle

    def _cid(self) -> str:
        return f"{self.name}{os.getpid()}x{next(self._ids)}"

    def run_true(self) -> None:
        true_run(self._true_argv + [self._cid()])

    def start_idle(self) -> str:
        """A detached container running `sleep`, with no monitor (crun/runc exit)."""
        cid = self._cid()
        bundle = self._bundle(["/bin/sleep", "100000"], cid, f"{self.cgroup_prefix}/{cid}")
        # Not a pipe: the container inherits our stdio and would hold it open.
        done = subprocess.run(
            [self.binary, "--root", self.state, "run", "--detach", "--bundle", bundle, cid],
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=DEVNULL,
        )
        if done.returncode:
            raise PeerUnavailable(f"{self.name} run --detach failed with status {done.returncode}")
        self.live.append(cid)
        return cid

    def start_monitored(self) -> tuple[str, int]:
        """A container running `sleep` under conmon, as podman starts one (conmon
        runs `create`, we `start`); returns its id and conmon's pid."""
        conmon = shutil.which("conmon")
        if not conmon:
            raise PeerUnavailable("conmon is not installed (apt-get install conmon)")
        cid = self._cid()
        bundle = self._bundle(["/bin/sleep", "100000"], cid, f"{self.cgroup_prefix}/{cid}")
        quiet(
            [
                conmon,
                "--api-version",
                "1",
                "-c",
                cid,
                "-u",
                cid,
                "-n",
                cid,
                "-r",
                self.binary,
                "-b",
                bundle,
                "-p",
                f"{bundle}/pidfile",
                "--exit-dir",
                bundle,
                "-l",
                f"k8s-file:{bundle}/ctr.log",
                "--log-level",
                "warning",
                "--runtime-arg",
                f"--root={self.state}",
                "--conmon-pidfile",
                f"{bundle}/conmon.pid",
                "--socket-dir-path",
                bundle,
                "--persist-dir",
                bundle,
            ]
        )
        self.live.append(cid)
        # conmon's parent returns at once (no sync pipe): wait for `create` to be done.
        wait_for(lambda: os.path.exists(f"{bundle}/pidfile"), 10, f"conmon for {cid}")
        quiet([self.binary, "--root", self.state, "start", cid])
        with open(f"{bundle}/conmon.pid") as f:
            return cid, int(f.read().strip())

    def exec_argv(self, cid: str) -> List[str]:
        return [self.binary, "--root", self.state, "exec", cid, "/bin/true"]

    def container_pid(self, cid: str) -> int:
        out = quiet([self.binary, "--root", self.state, "state", cid])
        return json.loads(out.stdout)["pid"]

    def remove(self, cid: str) -> None:
        subprocess.run(
            [self.binary, "--root", self.state, "delete", "--force", cid], stdin=DEVNULL, capture_output=True
        )
        if cid in self.live:
            self.live.remove(cid)

    def remove_all(self) -> None:
        for cid in list(self.live):
            self.remove(cid)

    close = remove_all


def import_tar(rootfs: str, tar_path: str) -> str:
    with tarfile.open(tar_path, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tar_path


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM a process we started, then SIGKILL if it lingers; reap it if ours."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def env_with(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise PeerUnavailable(f"{what} did not come up within {timeout:.0f} s")


def optional(factory, *args) -> tuple[Optional[object], Optional[str]]:
    """(peer, None) or (None, why it cannot run)."""
    try:
        return factory(*args), None
    except PeerUnavailable as err:
        return None, str(err)


def remove_cgroups(pattern: str) -> None:
    """rmdir the (empty) cgroups the peers made for us, deepest first, in every
    mounted hierarchy; ``pattern`` names only this run's (it holds our pid)."""
    for top in glob.glob(f"/sys/fs/cgroup/*/{pattern}") + glob.glob(f"/sys/fs/cgroup/{pattern}"):
        for root, _dirs, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(root)
            except OSError:
                pass


def unmount_under(path: str) -> None:
    """Lazily unmount what the engines left mounted below ``path`` (in our
    private mount namespace), deepest first, so that it can be removed."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in sorted((p for p in points if p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdin=DEVNULL, capture_output=True)
