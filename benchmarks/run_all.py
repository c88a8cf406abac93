"""sandboxlib against its peers (bubblewrap, crun, runc, podman, docker), all
workloads of issue 6, one table; appended to benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick] [--no-record] [--note TEXT]

Runs as root, in a private mount namespace of its own (it re-executes itself
under `unshare -m`): there it hides a controller-less cgroup v2 mount at
/sys/fs/cgroup/unified, which crun refuses in a hybrid layout.  Every peer
keeps its state in one temporary directory; every engine started is stopped
by its pid at the end, and the cgroups the peers made are removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import _common  # noqa: E402
import devnodes  # noqa: E402
import engines  # noqa: E402
import memory  # noqa: E402
import peers  # noqa: E402
import table  # noqa: E402
import workloads  # noqa: E402

NS_MARK = "SBXBENCH_PRIVATE_MOUNT_NS"
UNIFIED = "/sys/fs/cgroup/unified"


class Env:
    """The peers that run here, why the others cannot, notes for the record."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.peers: dict = {}
        self.why: dict = {}
        self.notes: list = []

    def add(self, tool: str, factory, *args) -> None:
        peer, why = peers.optional(factory, *args)
        if peer is not None:
            self.peers[tool] = peer
        else:
            self.why[tool] = f"{tool}: {why}"

    def close(self) -> None:
        for tool in ("docker", "podman", "runc", "crun"):
            if tool in self.peers:
                try:
                    self.peers[tool].close()
                except Exception as err:  # keep closing the others
                    print(f"closing {tool}: {err}", file=sys.stderr)


def enter_private_mount_ns() -> str:
    """Re-execute in a private mount namespace; there, device nodes of our own
    and the v2 mount hidden."""
    if os.environ.get(NS_MARK) != "1":
        env = dict(os.environ, **{NS_MARK: "1"})
        argv = ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv]
        os.execvpe("unshare", argv, env)
    devnodes.bind_private_devices()
    if os.path.ismount(UNIFIED):
        subprocess.run(["umount", UNIFIED], check=True)
        return (
            f"The controller-less cgroup v2 mount {UNIFIED} was unmounted in the "
            "benchmark's private mount namespace (crun refuses that hybrid layout)."
        )
    return ""


def start_peers(env: Env) -> None:
    rootfs = peers.busybox_rootfs(os.path.join(env.workdir, "rootfs"))
    tar = peers.import_tar(rootfs, os.path.join(env.workdir, "rootfs.tar"))
    pid = os.getpid()
    for name in ("crun", "runc"):
        env.add(name, peers.OciRuntime, name, env.workdir, rootfs, f"/sbxbench{pid}-{name}")
    env.add("podman", engines.Podman, env.workdir, tar, f"/sbxbench{pid}-podman")
    env.add("docker", engines.Docker, env.workdir, tar, f"/sbxbench{pid}-docker")
    if "docker" in env.peers:
        env.notes.append(
            "docker runs without a user namespace (per-container user namespaces "
            "are not available in Docker; userns-remap would need host /etc/subuid "
            "entries); the other tools map container root to host uid 1000000000."
        )


def run(env: Env, quick: bool) -> list:
    rounds, warmup = (15, 3) if quick else (300, 10)
    t0 = time.monotonic()
    rows = workloads.start_to_exit(env, rounds, warmup)
    rows += workloads.exec_into_running(env, rounds, warmup)
    rows += workloads.throughput(env, *((2, 0.5) if quick else (5, 1.0)))
    rows += memory.idle_memory(env, 5 if quick else 100)
    rows.append(workloads.scaling_sequence(1000 if quick else 10_000, 100))
    rows += workloads.start_with_running(env, (1, 10) if quick else (1, 10, 100), 15 if quick else 100, warmup)
    env.notes.append(
        f"{rounds} interleaved rounds after {warmup} warm-up rounds per latency "
        f"row; whole run {time.monotonic() - t0:.0f} s."
    )
    return rows


def versions() -> str:
    tools = [
        ["bwrap", "--version"],
        ["crun", "--version"],
        ["runc", "--version"],
        ["podman", "--version"],
        ["conmon", "--version"],
        ["dockerd", "--version"],
        ["containerd", "--version"],
        ["busybox"],
    ]
    return "; ".join(_common.tool_version(argv) for argv in tools)


def cleanup(env: Env) -> None:
    env.close()
    pid = os.getpid()
    for pattern in (f"sbxbench{pid}-*", f"crun{pid}x*", f"runc{pid}x*"):
        peers.remove_cgroups(pattern)
    peers.unmount_under(env.workdir)
    shutil.rmtree(env.workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--note", default="", help="a remark for the record (e.g. machine load)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_all.py needs root (the peers' engines and cgroups)")
    hidden = enter_private_mount_ns()
    # A script, not the library: SIGTERM (e.g. from `timeout`) unwinds through
    # the clean-up below instead of leaving engines and containers behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("run_all.py: terminated"))
    workdir = tempfile.mkdtemp(prefix="sbxbench-")
    os.chmod(workdir, 0o755)  # container root (host uid 1000000000) reads the rootfs in it
    env = Env(workdir)
    env.notes.append(hidden)
    try:
        start_peers(env)
        rows = run(env, args.quick)
    finally:
        cleanup(env)
    body = "\n\n".join(filter(None, [f"Versions: {versions()}.", args.note, table.render(rows), *env.notes]))
    print(body)
    if not args.no_record:
        _common.record("run_all: sandboxlib vs its peers" + (" (--quick)" if args.quick else ""), body)


if __name__ == "__main__":
    main()
