"""Building an image from a Dockerfile: a 10-step, 2-stage Dockerfile with a
``COPY`` of a 20 MB tree and several ``RUN``s, built by sandboxlib, by
Docker's legacy builder (a private dockerd, ``DOCKER_BUILDKIT=0``) and by
``buildah bud --layers``, side by side in one run: a cold build (no cache),
a fully cached rebuild, and a rebuild after one source file changed.

    python benchmarks/bench_build.py [--rounds N] [--no-record]

Targets (issue 15): cold at most 0.7x docker's; cached at most 0.1x
buildah's and 0.5x docker's; one-file change at most 0.7x docker's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the checkout last, for tests.* only: sandboxlib is the installed one (make bench)
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common

import sandboxlib as sb
from tests.conftest import make_busybox_rootfs
from tests.dockerd import Dockerd
from tests.imagekit import add_image, busybox_layers

DOCKERFILE = """\
FROM bb:1 AS build
WORKDIR /src
COPY tree/ /src/tree/
RUN find /src/tree -type f | wc -l > /src/count
RUN du -s /src/tree > /src/size
ENV MODE=release
RUN mkdir -p /out && cp /src/count /src/size /out/ && echo $MODE > /out/mode
FROM bb:1
COPY --from=build /out /app/
RUN ls /app > /app/list
CMD ["cat", "/app/list"]
"""
TREE_MB = 20


def make_context(path: str) -> str:
    """The Dockerfile and a 20 MB tree: 20 directories of 10 files of 100 KB."""
    rng = random.Random(15)
    for d in range(20):
        os.makedirs(os.path.join(path, "tree", f"d{d:02}"))
        for i in range(10):
            with open(os.path.join(path, "tree", f"d{d:02}", f"f{i}.bin"), "wb") as f:
                f.write(rng.randbytes(TREE_MB * 1024 * 1024 // 200))
    with open(os.path.join(path, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)
    return path


def change_one_file(context: str, stamp: int) -> None:
    with open(os.path.join(context, "tree", "d07", "f3.bin"), "r+b") as f:
        f.write(stamp.to_bytes(8, "big"))


class Buildah:
    def __init__(self, top: str, base_tar: str) -> None:
        # in a mount namespace of its own: its overlay mounts never show in this machine's mount table
        # (other test sessions compare it), and go when each command ends
        self.argv = ["unshare", "--mount", "--propagation", "private", "--", "buildah"]
        self.argv += ["--root", f"{top}/root", "--runroot", f"{top}/run", "--storage-driver", "overlay"]
        self.top = top
        subprocess.run(self.argv + ["pull", "-q", f"docker-archive:{base_tar}"], check=True, capture_output=True)

    def build(self, context: str, no_cache: bool) -> None:
        bud = ["bud", "-q", "--layers", "--isolation", "oci", "--runtime", "runc", "--network", "none"]
        argv = self.argv + bud + (["--no-cache"] if no_cache else []) + ["-t", "bench:1", context]
        subprocess.run(argv, check=True, capture_output=True)

    def close(self) -> None:
        subprocess.run(self.argv + ["rmi", "-a", "-f"], capture_output=True)
        shutil.rmtree(self.top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="bench-build-")
    os.chmod(top, 0o755)
    try:
        store = sb.ImageStore(os.path.join(top, "store"))
        add_image(store, busybox_layers(make_busybox_rootfs(os.path.join(top, "bb")))[:1], ["bb:1"], {"Cmd": ["sh"]})
        base = os.path.join(top, "bb.tar")
        store.save("bb:1", base)
        context = make_context(os.path.join(top, "ctx"))
        docker = Dockerd(os.path.join(top, "docker"))
        buildah = Buildah(os.path.join(top, "buildah"), base)
        try:
            docker("load", "-i", base)
            tools = {
                "sandboxlib": lambda no_cache: store.build(context, tag="bench:1", no_cache=no_cache),
                "docker": lambda no_cache: docker(
                    "build", "-q", "--network", "none", *(["--no-cache"] if no_cache else []), "-t", "bench:1", context
                ),
                "buildah": lambda no_cache: buildah.build(context, no_cache),
            }
            samples = {(tool, phase): [] for tool in tools for phase in ("cold", "cached", "one file")}
            changes = 0  # each change writes bytes no build has seen
            for round_ in range(args.rounds):
                order = list(tools.items())
                random.Random(round_).shuffle(order)
                for tool, build in order:
                    for phase in ("cold", "cached", "one file"):
                        if phase == "one file":
                            changes += 1
                            change_one_file(context, changes)
                        start = time.perf_counter()
                        build(phase == "cold")
                        samples[(tool, phase)].append(time.perf_counter() - start)
        finally:
            docker.close()
            buildah.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for phase in ("cold", "cached", "one file"):
        ours = medians[("sandboxlib", phase)]
        rows.append(
            f"| {phase} | {ours:.3f} | {medians[('docker', phase)]:.3f} | {medians[('buildah', phase)]:.3f} "
            f"| {ours / medians[('docker', phase)]:.2f} | {ours / medians[('buildah', phase)]:.2f} |"
        )
    table = "\n".join(
        [
            "| phase | sandboxlib s | docker (legacy) s | buildah s | ours/docker | ours/buildah |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(table)
    if not args.no_record:
        versions = f"{_common.tool_version(['docker', '--version'])}; {_common.tool_version(['buildah', '--version'])}"
        _common.record("bench_build", f"{args.rounds} rounds, medians (s); {versions}\n\n{table}")


if __name__ == "__main__":
    main()
