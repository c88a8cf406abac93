"""The OCI runtime under its real callers, side by side in one run (issue 17):

    podman run --rm --runtime X IMAGE true      X = sandboxlib-runtime, crun, runc
    ctr run --rm --runc-binary X IMAGE ID true  (containerd's io.containerd.runc.v2 shim)

plus the runtime's own start-up (``--version``, ``state`` of a missing id)
and each verb a caller runs alone (create, start, state, kill, delete
--force of one container, in a bundle of the same busybox root).
podman's and containerd's state live in a temporary directory; the image is
a static busybox imported from a local tar.  As run_all.py, it runs in a
private mount namespace where the cgroup v2 mount of a hybrid layout is
hidden (crun refuses that layout).  A runtime that fails here is
reported with its error instead of a time.

    python benchmarks/bench_oci.py [--rounds N] [--no-record] [--compare NAME=PATH ...]

``--compare main=/venv-of-main/bin/sandboxlib-runtime`` adds another build of
the runtime (an A/B in the same run: its rows are named NAME).  The verbs'
table has create's CPU time (user + system of the command) beside its wall
time: the load of a shared machine disturbs it less.

Target: sandboxlib-runtime at most crun's time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import run_all

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # below this host's hard limits


def runtime_path(tmp: str) -> str:
    """The installed command beside the interpreter, else this checkout's C front
    (its in-place build) beside a script running the checkout's Python implementation,
    its modules compiled beforehand as an install compiles them (without, with
    PYTHONDONTWRITEBYTECODE set, each create compiled them all again: ~200 ms)."""
    installed = os.path.join(os.path.dirname(sys.executable), "sandboxlib-runtime")
    if os.path.exists(installed):
        return installed
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(tmp, "sandboxlib-runtime")
    shutil.copy(os.path.join(checkout, "sandboxlib", "native", "sbx-runtime"), path)
    pycache = os.path.join(tmp, "pycache")
    compile_env = dict(os.environ, PYTHONPYCACHEPREFIX=pycache)
    package = os.path.join(checkout, "sandboxlib")
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, env=compile_env)
    with open(os.path.join(tmp, "sandboxlib-runtime-python"), "w") as f:
        environment = f"SANDBOXLIB_DEV=1 PYTHONPATH={checkout} PYTHONPYCACHEPREFIX={pycache}"
        command = f"env {environment} {sys.executable} -P -m sandboxlib.oci"
        f.write(f'#!/bin/sh\nexec {command} "$@"\n')
    os.chmod(os.path.join(tmp, "sandboxlib-runtime-python"), 0o755)
    return path


def busybox_tar(tmp: str) -> str:
    root = os.path.join(tmp, "rootfs")
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for name in ("sh", "true", "echo", "sleep"):
        os.symlink("busybox", os.path.join(root, "bin", name))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    path = os.path.join(tmp, "bb.tar")
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name)
    return path


def check(argv) -> str:
    """'' when the command succeeds, else its error (the last line)."""
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def run_quiet(argv):
    def run() -> None:
        proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]}: {proc.stderr.decode(errors='replace')}")

    return run


WARMUP = 2
VERBS = ("create", "start", "state", "kill", "delete")


def bundle_of(tmp: str, name: str) -> str:
    """A bundle of the busybox root (runc's default spec, a process that waits) for the verbs alone."""
    bundle = os.path.join(tmp, f"verbs-bundle-{name}")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    spec["root"] = {"path": os.path.join(tmp, "rootfs"), "readonly": True}
    spec["process"].update(terminal=False, args=["sleep", "100"])
    # runc's spec lists ambient capabilities that are not inheritable: runc drops
    # them silently (CapAmb 0), this runtime refuses them by name.  The same result.
    spec["process"]["capabilities"].pop("ambient", None)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle


def verb_cycle(path: str, root: str, bundle: str, parent: str, times: dict):
    """One container's create, start, state, kill and delete --force; each verb's time into ``times``."""
    counter = iter(range(10**9))
    config = os.path.join(bundle, "config.json")

    def cycle() -> None:
        cid = f"v{next(counter)}"
        with open(config) as f:
            spec = json.load(f)
        spec["linux"]["cgroupsPath"] = f"{parent}/{cid}"  # (each its own, as a caller's)
        with open(config, "w") as f:
            json.dump(spec, f)
        steps = (["create", "--bundle", bundle, cid], ["start", cid], ["state", cid], ["kill", cid, "KILL"])
        for verb, args in zip(VERBS, (*steps, ["delete", "--force", cid])):
            start = time.perf_counter()
            # (no pipes: the created container's process holds the runtime's stdio)
            proc = subprocess.Popen([path, "--root", root, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            _pid, status, usage = os.wait4(proc.pid, 0)
            times.setdefault(verb, []).append(time.perf_counter() - start)
            times.setdefault(f"{verb} cpu", []).append(usage.ru_utime + usage.ru_stime)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                raise RuntimeError(f"{path} {' '.join(args)}: exit status {code}")

    return cycle


CONTAINERD = """version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
"""


def verbs_table(verb_times: dict) -> str:
    """Each verb's median (ms, after the warm-up rounds), and each build of ours against runc's."""
    names = list(verb_times)
    ours = [n for n in names if n != "runc"]
    rows = [
        "| verb | " + " | ".join(f"{n} p50 ms" for n in names) + " | " + " | ".join(f"{n} ratio" for n in ours) + " |",
        "|---|" + "---:|" * len(names) + "---|" * len(ours),
    ]
    for verb in (*VERBS, "create cpu"):
        medians = {n: statistics.median(verb_times[n][verb][WARMUP:]) * 1e3 for n in names if verb_times[n].get(verb)}
        ratios = [
            f"{medians[n] / medians['runc']:.2f}x runc" if n in medians and "runc" in medians else "" for n in ours
        ]
        row = f"| {verb} | " + " | ".join(f"{medians.get(n, 0):.3f}" for n in names) + " | " + " | ".join(ratios)
        rows.append(row + " |")
    return "Each verb alone (one container's create, start, state, kill, delete --force; medians):\n\n" + "\n".join(
        rows
    )


def _load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH", help="another build of ours")
    args = parser.parse_args()
    compared = dict(item.split("=", 1) for item in args.compare)
    if os.geteuid() != 0:
        sys.exit("run as root (podman and containerd with private state directories)")
    hidden = run_all.enter_private_mount_ns()  # (as run_all.py: crun refuses this host's hybrid cgroups)
    tmp = tempfile.mkdtemp(prefix="bench-oci-")
    namespace = f"sbxbench{os.getpid()}"  # ctr's, and the cgroup parent its containers get
    daemon = None
    try:
        ours = runtime_path(tmp)
        runtimes = {"sandboxlib-runtime": ours, **compared, "crun": shutil.which("crun"), "runc": shutil.which("runc")}
        podman = ["podman", "--root", f"{tmp}/storage", "--runroot", f"{tmp}/run", "--tmpdir", f"{tmp}/tmp"]
        podman += ["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        tar = busybox_tar(tmp)
        subprocess.run([*podman, "import", tar, "localhost/bb:bench"], check=True, capture_output=True)
        image = f"{tmp}/image.tar"
        subprocess.run([*podman, "save", "-o", image, "localhost/bb:bench"], check=True, capture_output=True)
        with open(f"{tmp}/containerd.toml", "w") as f:
            f.write(CONTAINERD.format(base=tmp))
        daemon = subprocess.Popen(
            ["containerd", "--config", f"{tmp}/containerd.toml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        ctr = ["ctr", "--address", f"{tmp}/containerd.sock", "--namespace", namespace]
        for _ in range(100):
            if check([*ctr, "version"]) == "":
                break
            time.sleep(0.1)
        subprocess.run([*ctr, "images", "import", f"{tmp}/image.tar"], check=True, capture_output=True)
        parent = f"/sandboxlib-bench-{os.getpid()}"
        counter = iter(range(10**9))
        workloads, failures = {}, {}
        verb_times: dict = {}
        for name, path in runtimes.items():
            if not path:
                failures[name] = "not installed"
                continue
            run = [*podman, "--runtime", path, "--runtime-flag", f"root={tmp}/runtime-root-{name}"]
            run += ["run", "--rm", "--network", "none", "--cgroup-parent", parent, *ULIMITS]
            error = check([*run, "localhost/bb:bench", "true"])
            if error:
                failures[f"podman run --rm ({name})"] = error
            else:
                workloads[f"podman run --rm ({name})"] = run_quiet([*run, "localhost/bb:bench", "true"])
            ctr_run = [*ctr, "run", "--rm", "--runc-binary", path, "--runc-root", f"{tmp}/runc-root"]
            ctr_run.append("localhost/bb:bench")
            error = check([*ctr_run, f"probe-{name}", "true"])
            if error:
                failures[f"ctr run --rm ({name})"] = error
            else:
                workloads[f"ctr run --rm ({name})"] = lambda c=ctr_run: run_quiet([*c, f"b{next(counter)}", "true"])()
            if name != "crun":  # (crun refuses this host's hybrid cgroups: no container of its own)
                verb_times[name] = {}
                bundle = bundle_of(tmp, name)
                cycle = verb_cycle(path, f"{tmp}/verbs-root-{name}", bundle, f"{parent}/verbs-{name}", verb_times[name])
                workloads[f"{name}: create, start, state, kill, delete"] = cycle
            workloads[f"{name} --version"] = run_quiet([path, "--version"])
            workloads[f"{name} state (no such container)"] = lambda p=path: subprocess.run(
                [p, "--root", f"{tmp}/none", "state", "x"], capture_output=True, check=False
            )
        load_before = _load()
        samples = _common.interleaved(workloads, rounds=args.rounds, warmup=WARMUP)
        load = f"Load average (1 min) {load_before} at the start, {_load()} at the end."
        stats = {name: _common.percentiles(values) for name, values in samples.items()}
        rows = []
        for name, p in stats.items():
            # against crun (the target), or runc where crun fails on this host
            own = next((n for n in ("sandboxlib-runtime", *compared) if n in name), "sandboxlib-runtime")
            for peer_name in ("crun", "runc"):
                peer = name.replace(own, peer_name)
                if peer != name and peer in stats:
                    rows.append((name, p, f"{p[0] / stats[peer][0]:.2f}x {peer_name}"))
                    break
            else:
                rows.append((name, p, ""))
        body = _common.table(rows) + "\n\n" + verbs_table(verb_times)
        if failures:
            body += "\n\nFailed here (no time):\n" + "\n".join(f"- {k}: {v}" for k, v in failures.items())
        versions = ", ".join(_common.tool_version([p or n, "--version"]) for n, p in runtimes.items())
        body = f"{args.rounds} rounds, interleaved. Runtimes: {versions}. {hidden} {load}\n\n{body}"
        print(body)
        if not args.no_record:
            _common.record("bench_oci: podman run --rm and ctr run --rm, per OCI runtime", body)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        subprocess.run(["umount", "--recursive", "--quiet", f"{tmp}/root"], check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        for hierarchy in os.listdir("/sys/fs/cgroup"):  # podman's parent, ctr's namespace
            for name in (f"sandboxlib-bench-{os.getpid()}", namespace):
                top = f"/sys/fs/cgroup/{hierarchy}/{name}"
                for dirpath, _d, _f in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass


if __name__ == "__main__":
    main()
