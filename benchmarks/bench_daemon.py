"""The daemon against a private dockerd, side by side in one run, driven by
the same docker CLI (and docker-py): ``docker run --rm busybox true``,
``docker exec ID true`` in a running container, docker-py's
``containers.run("busybox", "true", remove=True)``, and the memory of 100
idle detached containers (``sleep``): the daemon and each container's init
against dockerd, containerd and the shims, PSS summed (the containers' own
``sleep`` processes, the same on both sides, left out).

    python benchmarks/bench_daemon.py [--rounds N] [--idle N] [--no-record]

Targets (issue 14): run at most 0.25x of dockerd's time, exec at most 0.5x,
the memory of 100 idle containers below dockerd + containerd + shims.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the checkout last, for tests' helpers only: sandboxlib is the installed one (make bench)
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common
import docker
import psutil

import sandboxlib as sb
from tests.daemonkit import DOCKER, Daemon, busybox_store
from tests.dockerd import Dockerd


def _cli(env: dict):
    def run_cli(*args: str) -> str:
        out = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, check=True)
        return out.stdout

    return run_cli


def _engine_memory(procs) -> tuple:
    """(processes, PSS, USS) of an engine's own processes (the containers' ``sleep`` left out:
    both engines run the same ones), in bytes.  PSS shares a page among its users (other
    processes of the machine included, so it moves with what else runs); USS counts only the
    pages no other process maps: both are given."""
    count = pss = uss = 0
    for proc in procs:
        try:
            if proc.name() != "sleep":
                info = proc.memory_full_info()
                count, pss, uss = count + 1, pss + info.pss, uss + info.uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return count, pss, uss


def _settled(measure) -> tuple:
    """``measure()`` once two readings 2 s apart count the same processes (shims still starting)."""
    before = measure()
    while True:
        time.sleep(2)
        now = measure()
        if now[0] == before[0]:
            return now
        before = now


def _ours(pid: int) -> list:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]  # the daemon and the containers' inits


def _theirs(top: str) -> list:
    """dockerd, its containerd and the shims (re-parented away from dockerd): every process whose
    command line names the private dockerd's directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if top in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="bench-daemon-")
    os.chmod(top, 0o755)
    engines: dict = {}
    ours = theirs = None
    try:
        store = busybox_store(os.path.join(top, "store"))
        ours = Daemon(top, store)
        theirs = Dockerd(os.path.join(top, "dockerd"))
        archive = os.path.join(top, "busybox.tar")
        sb.ImageStore(store).save("busybox:latest", archive)
        subprocess.run([DOCKER, "load", "-q", "-i", archive], env=theirs.env, check=True, capture_output=True)
        engines = {"sandboxlib": (ours.env, ours.host), "dockerd": (theirs.env, theirs.env["DOCKER_HOST"])}
        workloads = {}
        sleepers = {}
        for name, (env, host) in engines.items():
            docker_cli = _cli(env)
            sleepers[name] = docker_cli("run", "-d", "busybox", "sleep", "3600").strip()
            client = docker.DockerClient(base_url=host)
            workloads[f"docker run --rm busybox true ({name})"] = lambda d=docker_cli: d(
                "run", "--rm", "busybox", "true"
            )
            workloads[f"docker exec ID true ({name})"] = lambda d=docker_cli, c=sleepers[name]: d("exec", c, "true")
            workloads[f"docker-py containers.run(remove=True) ({name})"] = lambda c=client: c.containers.run(
                "busybox", "true", remove=True
            )
        samples = _common.interleaved(workloads, rounds=args.rounds, warmup=3)
        rows, ratios = [], {}
        for label in ("docker run --rm busybox true", "docker exec ID true", "docker-py containers.run(remove=True)"):
            ours_p = _common.percentiles(samples[f"{label} (sandboxlib)"])
            theirs_p = _common.percentiles(samples[f"{label} (dockerd)"])
            ratios[label] = ours_p[0] / theirs_p[0]
            rows.append((f"{label} (sandboxlib daemon)", ours_p, f"{ratios[label]:.2f}x dockerd"))
            rows.append((f"{label} (dockerd)", theirs_p, "1"))
        memory = {}
        for env, _ in engines.values():
            docker_cli = _cli(env)
            for _ in range(args.idle):
                docker_cli("run", "-d", "busybox", "sleep", "3600")
        memory["sandboxlib"] = _settled(lambda: _engine_memory(_ours(ours.proc.pid)))
        memory["dockerd"] = _settled(lambda: _engine_memory(_theirs(theirs.top)))
        (n_ours, pss_ours, uss_ours), (n_theirs, pss_theirs, uss_theirs) = memory["sandboxlib"], memory["dockerd"]
        body = _common.table(rows)
        body += (
            f"\n\n{args.idle} idle detached containers (+1 for exec), the engines' memory (the "
            f"containers' own sleep processes left out): "
            f"sandboxlib daemon + inits ({n_ours} processes) PSS {pss_ours / 2**20:.0f} MiB, USS "
            f"{uss_ours / 2**20:.0f} MiB; dockerd + containerd + shims ({n_theirs} processes) PSS "
            f"{pss_theirs / 2**20:.0f} MiB, USS {uss_theirs / 2**20:.0f} MiB "
            f"(ratio PSS {pss_ours / pss_theirs:.2f}, USS {uss_ours / uss_theirs:.2f}).\n"
            f"Targets: run <= 0.25x (measured {ratios['docker run --rm busybox true']:.2f}x), exec <= 0.5x "
            f"(measured {ratios['docker exec ID true']:.2f}x), memory below dockerd's. "
            f"{args.rounds} interleaved rounds after 3 warm-up rounds; "
            f"client {_common.tool_version([DOCKER, '--version'])}, "
            f"dockerd {_common.tool_version(['/usr/sbin/dockerd', '--version'])}."
        )
        print(body)
        if not args.no_record:
            _common.record("bench_daemon: the Engine API, sandboxlib daemon vs dockerd", body)
    finally:
        for env, _ in engines.values():
            listed = subprocess.run([DOCKER, "ps", "-aq"], env=env, capture_output=True, text=True)
            if listed.stdout.split():
                subprocess.run([DOCKER, "rm", "-f", *listed.stdout.split()], env=env, capture_output=True)
        if ours is not None:
            ours.close()
        if theirs is not None:
            theirs.close()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
