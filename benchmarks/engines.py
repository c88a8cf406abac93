"""Podman and Docker, each with private storage in the benchmark's temporary
directory: podman with its own --root/--runroot and containers.conf, dockerd
started here with its own --data-root, --exec-root, pidfile, socket and
mount namespace, no bridge and no iptables rules.  The image is imported
from the busybox root (there is no registry here).  ``close()`` removes every container and stops
dockerd by its pid."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from typing import List, Optional

from peers import DEVNULL, ID_BASE, IMAGE, ULIMITS, PeerUnavailable, env_with, quiet, stop_pid, wait_for

PR_SET_PDEATHSIG = 1
MAPS = ["--uidmap", f"0:{ID_BASE}:65536", "--gidmap", f"0:{ID_BASE}:65536"]


class _Engine:
    name = ""

    def __init__(self) -> None:
        self.cli: List[str] = []
        self.env: dict = {}
        self.live: List[str] = []
        self._count = 0

    def _cmd(self, *args: str) -> List[str]:
        return self.cli + list(args)

    def _name(self) -> str:
        self._count += 1
        return f"sbxbench{os.getpid()}x{self._count}"

    def run_argv(self) -> List[str]:
        return self._cmd("run", "--rm", "--network", "none", *self.run_options(), IMAGE, "/bin/true")

    def run_options(self) -> List[str]:
        return []

    def run_true(self) -> None:
        subprocess.run(self.run_argv(), stdin=DEVNULL, stdout=DEVNULL, env=self.env, check=True)

    def start_idle(self) -> str:
        name = self._name()
        quiet(
            self._cmd(
                "run", "-d", "--name", name, "--network", "none", *self.run_options(), IMAGE, "/bin/sleep", "100000"
            ),
            env=self.env,
        )
        self.live.append(name)
        return name

    def exec_argv(self, name: str) -> List[str]:
        return self._cmd("exec", name, "/bin/true")

    def container_pid(self, name: str) -> int:
        out = quiet(self._cmd("inspect", "--format", "{{.State.Pid}}", name), env=self.env)
        return int(out.stdout.strip())

    def remove_all(self) -> None:
        if self.live:
            subprocess.run(self._cmd("rm", "-f", *self.live), stdin=DEVNULL, capture_output=True, env=self.env)
        self.live.clear()

    def _import(self, tar_path: str) -> None:
        with open(tar_path, "rb") as tar:
            out = subprocess.run(
                self._cmd("import", "-", IMAGE), stdin=tar, capture_output=True, text=True, env=self.env
            )
        if out.returncode:
            raise PeerUnavailable(f"{self.name} import failed: {out.stderr.strip()}")


class Podman(_Engine):
    """podman (cgroupfs manager, crun runtime, file events) with private storage."""

    name = "podman"

    def __init__(self, workdir: str, tar_path: str, cgroup_parent: str) -> None:
        super().__init__()
        binary = shutil.which("podman")
        if not binary:
            raise PeerUnavailable("podman is not installed (apt-get install podman)")
        top = os.path.join(workdir, "podman")
        os.makedirs(os.path.join(top, "tmp"))
        conf = os.path.join(top, "containers.conf")
        with open(conf, "w") as f:
            f.write(
                f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                f'events_logfile_path = "{top}/events.log"\nruntime = "crun"\n'
                f'tmp_dir = "{top}/tmp"\n[containers]\nlog_driver = "k8s-file"\n'
            )
        self.env = env_with(CONTAINERS_CONF=conf)
        self.cli = [
            binary,
            "--root",
            f"{top}/root",
            "--runroot",
            f"{top}/runroot",
            "--storage-driver",
            "overlay",
            "--network-config-dir",
            f"{top}/net",
        ]
        self._cgroup_parent = cgroup_parent
        self._import(tar_path)

    def run_options(self) -> List[str]:
        # User namespace as sandboxlib's; a private IPC namespace needs no shm mount.
        return [*ULIMITS, *MAPS, "--ipc", "private", "--cgroup-parent", self._cgroup_parent]

    def conmon_pid(self, name: str) -> int:
        out = quiet(self._cmd("inspect", "--format", "{{.State.ConmonPid}}", name), env=self.env)
        return int(out.stdout.strip())

    def close(self) -> None:
        self.remove_all()
        subprocess.run(self._cmd("system", "reset", "--force"), stdin=DEVNULL, capture_output=True, env=self.env)


class Docker(_Engine):
    """A dockerd of our own (it starts its own containerd under --exec-root)."""

    name = "docker"

    def __init__(self, workdir: str, tar_path: str, cgroup_parent: str, bridge_ip: Optional[str] = None) -> None:
        """``bridge_ip`` (``"10.199.0.1/24"``): with its bridge ``docker0``,
        NAT and forwarding on that subnet, for a caller in a network
        namespace of its own (bench_network.py: they are made there)."""
        super().__init__()
        dockerd, client = shutil.which("dockerd"), "/usr/bin/docker"
        if not dockerd or not os.path.exists(client):
            raise PeerUnavailable("docker.io is not installed (apt-get install docker.io)")
        self.top = top = os.path.join(workdir, "docker")
        os.makedirs(top)
        with open(f"{top}/daemon.json", "w") as f:
            f.write("{}\n")
        sock = f"{top}/docker.sock"
        argv = [
            dockerd,
            "--data-root",
            f"{top}/data",
            "--exec-root",
            f"{top}/exec",
            "--pidfile",
            f"{top}/dockerd.pid",
            "-H",
            f"unix://{sock}",
            "--config-file",
            f"{top}/daemon.json",
            *(["--bip", bridge_ip] if bridge_ip else ["--bridge", "none", "--iptables=false"]),
            "--ip6tables=false",
            f"--ip-masq={bool(bridge_ip)}".lower(),
            f"--ip-forward={bool(bridge_ip)}".lower(),
            "--userland-proxy=false",
            "--storage-driver",
            "overlay2",
            "--cgroup-parent",
            cgroup_parent,
            "--default-ulimit",
            "nofile=1024:1024",
            "--default-ulimit",
            "nproc=1024:1024",
        ]
        self.log = open(f"{top}/dockerd.log", "wb")
        # In a mount namespace of its own: its data root's bind mount and its
        # containers' overlay mounts stay out of the host's mount table (which
        # test sessions running meanwhile compare) and go with its last process.
        self.daemon: Optional[subprocess.Popen] = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", *argv],
            stdin=DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=_die_with_parent,
        )
        self.env = env_with(DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=f"{top}/client")
        self.cli = [client]
        try:
            wait_for(self._up, 60, "dockerd")
            self._import(tar_path)
        except BaseException:
            self.close()
            raise

    def _up(self) -> bool:
        if self.daemon.poll() is not None:
            raise PeerUnavailable(f"dockerd exited with status {self.daemon.returncode}: {self._log_tail()}")
        return subprocess.run(self._cmd("version"), stdin=DEVNULL, capture_output=True, env=self.env).returncode == 0

    def _log_tail(self) -> str:
        with open(f"{self.top}/dockerd.log", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if "level=error" in line or "failed" in line]
        return lines[-1] if lines else "(no error in its log)"

    def close(self) -> None:
        if self.daemon is None:
            return
        self.remove_all()
        stop_pid(self.daemon.pid, timeout=30)
        self.daemon.wait()
        self.daemon = None
        self.log.close()


def _die_with_parent() -> None:
    """In the forked child: SIGTERM dockerd if the benchmark dies without
    stopping it (e.g. SIGKILL), so that no daemon outlives the run."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
