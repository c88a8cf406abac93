"""A private dockerd from Debian's docker.io for the interoperability tests.

Like benchmarks/engines.py's: its own data root, exec root, pidfile and
socket, no bridge, no iptables rules, overlay2, the cgroupfs driver (this
machine's v1 hierarchies plus a v2 one) under a cgroup parent of its own.
Unlike it, dockerd runs in a mount namespace of its own: the bind mount of
its data root and its overlay and shm mounts then never appear in this
machine's mount table, which other test sessions' leak checks compare, and
they all go when its last process exits.  ``close()`` stops it by its pid,
removes its cgroups and its directory."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional

DOCKERD = "/usr/sbin/dockerd"
CLIENT = "/usr/bin/docker"  # Debian's client, not another one earlier in PATH
PR_SET_PDEATHSIG = 1


class DockerdError(Exception):
    """dockerd did not start, or a docker command failed."""


class Dockerd:
    """dockerd with everything under ``top``; call it like the docker CLI."""

    def __init__(self, top: str) -> None:
        if not (os.path.exists(DOCKERD) and os.path.exists(CLIENT)):
            raise DockerdError("docker.io is not installed (apt-get install docker.io, or make test)")
        self.top = top
        self.cgroup_parent = f"/sbxtest{os.getpid()}-docker"
        os.makedirs(f"{top}/client")
        with open(f"{top}/daemon.json", "w") as f:
            f.write("{}\n")
        self.env = dict(
            os.environ, DOCKER_HOST=f"unix://{top}/docker.sock", DOCKER_CONFIG=f"{top}/client", DOCKER_BUILDKIT="0"
        )
        self._log = open(f"{top}/dockerd.log", "wb")
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", DOCKERD, *self._options()],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_up(60)
        except BaseException:
            self.close()
            raise

    def _options(self) -> List[str]:
        top = self.top
        return [
            "--data-root",
            f"{top}/data",
            "--exec-root",
            f"{top}/exec",
            "--pidfile",
            f"{top}/dockerd.pid",
            "-H",
            f"unix://{top}/docker.sock",
            "--config-file",
            f"{top}/daemon.json",
            "--bridge",
            "none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--userland-proxy=false",
            "--storage-driver",
            "overlay2",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            self.cgroup_parent,
        ]

    def _wait_up(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DockerdError(f"dockerd exited with status {self._proc.returncode}: {self.log_tail()}")
            if self("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise DockerdError(f"dockerd did not answer within {seconds:.0f} s: {self.log_tail()}")

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [CLIENT, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and out.returncode:
            raise DockerdError(f"docker {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out

    def log_tail(self) -> str:
        with open(f"{self.top}/dockerd.log", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if "level=error" in line or "level=fatal" in line]
        return lines[-1] if lines else "(no error in its log)"

    def close(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL), remove its cgroups and files.
        Idempotent; every step runs even if one before failed."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            _stop(proc)
        finally:
            self._log.close()
            _remove_cgroups(self.cgroup_parent)
            _unmount_under(self.top)
            shutil.rmtree(self.top, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)  # it stops its containers and its containerd first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _remove_cgroups(parent: str) -> None:
    """The container cgroups dockerd made under ``parent``, in every hierarchy, deepest first."""
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy) + parent
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _unmount_under(top: str) -> None:
    """Mounts under ``top`` in our namespace: none is expected (dockerd mounts
    in its own), but one left would keep the directory from being removed."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    libc = ctypes.CDLL(None, use_errno=True)
    for point in reversed(points):
        if point == top or point.startswith(top + "/"):
            libc.umount2(point.encode(), 2)  # MNT_DETACH


def _die_with_parent() -> None:
    """In the forked child: SIGTERM dockerd if the test run dies without
    stopping it, so that no daemon outlives the run."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
