"""Registries: a cold pull of a 5-layer ~100 MB (gzip) image from a local
registry (Debian's docker-registry on loopback, plain HTTP) to a runnable
image, a warm pull (everything present), and a push of the same image to an
empty registry, side by side in one run.

Peers: ``docker pull`` into a private dockerd (pull + unpack into overlay2:
runnable), ``skopeo copy docker://... oci:DIR`` (download and verify only:
not runnable), ``podman pull`` (containers/image + containers/storage,
overlay, its own root in a private mount namespace: runnable).  sandboxlib's
pull is runnable as it ends: each layer is checked and unpacked (for the
caller's default containers) while it streams in.  The row "+ first run"
adds the first ``sb.run(["true"])``, which finds the layers unpacked (it
only starts a container).

Push: ``store.push`` vs ``skopeo copy oci:DIR docker://`` (the same image as
an OCI layout skopeo made of it), each round to a fresh registry (its start
not timed); then a second push of an image sharing all but its last layer,
whose new blobs are counted in the registry's storage (the layer, its
config, its manifest: 3).

    python benchmarks/bench_registry.py [--rounds N] [--warm-rounds N] [--no-record]

Targets (issue 11): cold pull at most 0.6x of docker's (and podman's) time;
warm pull under 20 ms; push at most 0.8x of skopeo's.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the checkout last, for tests' helpers only: sandboxlib is the installed one (make bench)
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common

import sandboxlib as sb
from sandboxlib.images import importer, newimage
from sandboxlib.images.unpack import remove_tree
from tests.conftest import make_busybox_rootfs
from tests.registryd import Registry

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def data_layer(index: int, megabytes: int) -> bytes:
    """A gzip layer of text-like files (base64 of random bytes: gzip makes ~3/4
    of them, as real layers compress), about ``megabytes`` compressed."""
    rng = random.Random(index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        n = total = 0
        while total < megabytes * (4 << 20) // 3:
            size = (64 << 10, 512 << 10, 2 << 20)[n % 3]
            data = base64.b64encode(rng.randbytes(size * 3 // 4))
            info = tarfile.TarInfo(f"data{index}/d{n % 8}/f{n}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            n, total = n + 1, total + len(data)
    return gzip.compress(buf.getvalue(), compresslevel=6)


def busybox_layer(top: str) -> bytes:
    root = make_busybox_rootfs(os.path.join(top, "busybox"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name)
    return gzip.compress(buf.getvalue())


def make_image(store: sb.ImageStore, layers, ref: str):
    with store.writing():
        stored = [
            importer.store_layer(
                store, io.BytesIO(data), digest=None, size=None, media_type=GZIP, diff_id=None, source=f"layer {i}"
            )
            for i, data in enumerate(layers)
        ]
        config = newimage.new_config([s[3] for s in stored], {"Cmd": ["true"]})
        manifest = newimage.write_manifest(store, config, [s[:3] for s in stored])
        return store.add(manifest, (ref,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm-rounds", type=int, default=50)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="bench-registry-")
    os.chmod(top, 0o755)
    try:
        body = run(top, args)
    finally:
        remove_tree(top)
    print(body)
    if not args.no_record:
        _common.record("bench_registry: pulling a 5-layer ~100 MB image from a loopback registry", body)


def run(top: str, args) -> str:
    os.makedirs(f"{top}/registry")
    registry = Registry(f"{top}/registry")
    docker = None
    try:
        src = sb.ImageStore(f"{top}/src")
        layers = [busybox_layer(top)] + [data_layer(i, 25) for i in range(4)]
        make_image(src, layers, "bench:1")
        ref = f"{registry.host}/bench/app:1"
        src.push("bench:1", ref)
        make_image(src, layers[:-1] + [data_layer(99, 1)], "bench:2")  # all but the last layer shared
        megabytes = sum(len(layer) for layer in layers) / 1e6
        if not args.no_docker:
            docker = _start_docker(top)
        cold, warm = measure(top, ref, docker, args)
        push, added = measure_push(top, src, ref, args)
    finally:
        if docker is not None:
            docker.close()
        registry.close()
    return report(cold, warm, megabytes, args, docker_note=_docker_note(args)) + "\n\n" + report_push(push, added)


def measure_push(top: str, src: sb.ImageStore, ref: str, args):
    """Seconds per push, per peer, each to a fresh registry; and the blobs the second push added."""
    layout = os.path.join(top, "oci-layout")
    skopeo_env = dict(os.environ, HOME=os.path.join(top, "skopeo-home"))
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:app"],
        check=True,
        env=skopeo_env,
        capture_output=True,
    )

    def ours(host: str) -> None:
        src.push("bench:1", f"{host}/bench/app:1")

    def skopeo(host: str) -> None:
        shutil.rmtree(skopeo_env["HOME"], ignore_errors=True)  # its blob-info cache: fresh each run
        subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "-q",
                "--dest-tls-verify=false",
                f"oci:{layout}:app",
                f"docker://{host}/bench/app:1",
            ],
            check=True,
            env=skopeo_env,
            capture_output=True,
        )

    peers = {"sandboxlib push": ours, "skopeo copy oci: docker://": skopeo}
    times = {name: [] for name in peers}
    second, added = [], set()
    order = list(peers.items())
    for n in range(args.rounds):
        random.Random(n).shuffle(order)
        for name, go in order:
            os.makedirs(f"{top}/push-registry")
            registry = Registry(f"{top}/push-registry")
            try:
                start = time.perf_counter()
                go(registry.host)
                times[name].append(time.perf_counter() - start)
                if go is ours:
                    before = _stored_blobs(registry.top)
                    start = time.perf_counter()
                    src.push("bench:2", f"{registry.host}/bench/app:2")
                    second.append(time.perf_counter() - start)
                    added.add(len(_stored_blobs(registry.top) - before))
            finally:
                registry.close()
    times["sandboxlib second push (4 of 5 layers there)"] = second
    return times, added


def _stored_blobs(top: str) -> set:
    """The blobs in the registry's storage (distribution keeps manifests as blobs too)."""
    return {
        path
        for path, _, files in os.walk(os.path.join(top, "data", "docker", "registry", "v2", "blobs"))
        if "data" in files
    }


def report_push(times, added) -> str:
    names = list(times)
    base = statistics.median(times[names[0]])
    rows = [
        (
            f"push: {name}",
            _common.percentiles(times[name]),
            "1" if i == 0 else f"{statistics.median(times[name]) / base:.2f}x",
        )
        for i, name in enumerate(names)
    ]
    ratio = base / statistics.median(times[names[1]])
    return "\n".join(
        [
            _common.table(rows),
            "",
            f"sandboxlib/skopeo push: **{ratio:.2f}** (target: at most 0.8). The second push added "
            f"{', '.join(str(n) for n in sorted(added))} blobs to the registry "
            "(the new layer, its config, its manifest).",
        ]
    )


def _start_docker(top: str):
    from tests.dockerd import Dockerd, DockerdError

    try:
        return Dockerd(f"{top}/docker")
    except DockerdError as err:
        print(f"docker: not measured: {err}", file=sys.stderr)
        return None


def _docker_note(args) -> str:
    return "docker pull: not measured (--no-docker)" if args.no_docker else ""


def _checked(argv) -> None:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit status {out.returncode}: {out.stderr.strip()[-2000:]}")


def measure(top: str, ref: str, docker, args):
    stores = os.path.join(top, "stores")
    os.makedirs(stores)
    skopeo_env = dict(os.environ, HOME=os.path.join(top, "skopeo-home"))  # its blob-info cache: fresh each run

    def ours():
        path = tempfile.mkdtemp(dir=stores)
        return (lambda: sb.ImageStore(path).pull(ref)), (lambda: remove_tree(path))

    def ours_and_run():
        path = tempfile.mkdtemp(dir=stores)

        def go():
            sb.ImageStore(path).pull(ref)
            sb.run(["true"], image=ref, image_store=path)

        return go, (lambda: remove_tree(path))

    def skopeo():
        path = tempfile.mkdtemp(dir=stores)
        shutil.rmtree(skopeo_env["HOME"], ignore_errors=True)
        return (
            lambda: subprocess.run(
                [
                    "skopeo",
                    "--insecure-policy",
                    "copy",
                    "-q",
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"oci:{path}/oci:app",
                ],
                check=True,
                env=skopeo_env,
                capture_output=True,
            )
        ), (lambda: shutil.rmtree(path))

    def podman():
        path = tempfile.mkdtemp(dir=stores)
        run_root = tempfile.mkdtemp(prefix="podrun-")  # podman wants a run root of at most 50 characters
        # its own root and run root, in a mount namespace of its own: its overlay mounts
        # never reach this machine's mount table, and go when it exits
        argv = ["unshare", "--mount", "--propagation", "private", "--", "podman", "--root", f"{path}/root"]
        argv += ["--runroot", run_root, "--storage-driver", "overlay", "--events-backend", "none"]
        argv += ["--cgroup-manager", "cgroupfs", "pull", "-q", "--tls-verify=false", ref]
        return (lambda: _checked(argv)), (lambda: (remove_tree(path), remove_tree(run_root)))

    def docker_pull():
        return (lambda: docker("pull", "-q", ref)), (lambda: (docker("rmi", ref), docker("image", "prune", "-f")))

    peers = {
        "sandboxlib pull (runnable: checked and unpacked as it streams)": ours,
        "sandboxlib pull + first run": ours_and_run,
        "skopeo copy docker:// oci: (download only)": skopeo,
    }
    if shutil.which("podman"):
        peers["podman pull (containers/storage, overlay)"] = podman
    if docker is not None:
        peers["docker pull (private dockerd, overlay2)"] = docker_pull
    cold = {name: [] for name in peers}
    order = list(peers.items())
    for _ in range(args.rounds):
        random.Random(len(cold[order[0][0]])).shuffle(order)
        for name, prepare in order:
            go, clean = prepare()
            start = time.perf_counter()
            go()
            cold[name].append(time.perf_counter() - start)
            clean()
    warm_store = sb.ImageStore(os.path.join(stores, "warm"))
    warm_store.pull(ref)
    warm_peers = {"sandboxlib pull, image present (one manifest HEAD)": lambda: warm_store.pull(ref)}
    if docker is not None:
        docker("pull", "-q", ref)
        warm_peers["docker pull, image present"] = lambda: docker("pull", "-q", ref)
    warm = _common.interleaved(warm_peers, rounds=args.warm_rounds, warmup=3)
    return cold, warm


def report(cold, warm, megabytes: float, args, docker_note: str) -> str:
    rows = []
    names = list(cold)
    base = statistics.median(cold[names[0]])
    for name in names:
        stats = _common.percentiles(cold[name])
        rows.append((f"cold: {name}", stats, "1" if name == names[0] else f"{stats[0] / 1e3 / base:.2f}x"))
    warm_names = list(warm)
    warm_base = statistics.median(warm[warm_names[0]])
    for name in warm_names:
        stats = _common.percentiles(warm[name])
        rows.append((f"warm: {name}", stats, "1" if name == warm_names[0] else f"{stats[0] / 1e3 / warm_base:.2f}x"))
    docker_row = next((n for n in names if n.startswith("docker")), None)
    podman_row = next((n for n in names if n.startswith("podman")), None)
    lines = [_common.table(rows), ""]
    if podman_row:
        ratio = statistics.median(cold[names[0]]) / statistics.median(cold[podman_row])
        ratio_run = statistics.median(cold[names[1]]) / statistics.median(cold[podman_row])
        lines.append(
            f"sandboxlib/podman cold pull to a runnable image: **{ratio:.2f}** "
            f"(with the first run: {ratio_run:.2f}; target: at most 0.6)."
        )
    if docker_row:
        ratio = statistics.median(cold[names[0]]) / statistics.median(cold[docker_row])
        ratio_run = statistics.median(cold[names[1]]) / statistics.median(cold[docker_row])
        lines.append(
            f"sandboxlib/docker cold pull to a runnable image: **{ratio:.2f}** "
            f"(with the first run: {ratio_run:.2f}; target: at most 0.6)."
        )
    else:
        lines.append(docker_note or "docker pull: not measured (dockerd did not start).")
    lines.append(
        f"Warm pull p50: **{statistics.median(warm[warm_names[0]]) * 1e3:.1f} ms** (target: under 20 ms). "
        f"Image: 5 gzip layers, {megabytes:.0f} MB; {args.rounds} interleaved cold rounds, "
        f"{args.warm_rounds} warm; {_common.tool_version(['skopeo', '--version'])}; "
        f"{_common.tool_version(['podman', '--version'])}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
