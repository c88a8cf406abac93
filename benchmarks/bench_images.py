"""Images: unpacking a ~100 MB five-layer image with sandboxlib's checked
extractor vs GNU ``tar -x`` of the same layer tars, and container start on a
five-layer busybox image (its writable layer on disk, the default, and on a
tmpfs) vs the same files as a plain root directory.  Interleaved in one process.

    python benchmarks/bench_images.py [--rounds N] [--unpack-rounds N] [--no-record]

Targets (issue 3): unpack within 1.5x of tar; image start under 1.5x of a directory root.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the checkout last, for tests.conftest only: sandboxlib is the installed one (make bench)
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common

import sandboxlib as sb
from sandboxlib.images import newimage
from sandboxlib.images.layers import unpacked_layers
from sandboxlib.images.unpack import IdPolicy, remove_tree
from tests.conftest import make_busybox_rootfs

PLAIN = "application/vnd.oci.image.layer.v1.tar"


def data_layer(index: int, megabytes: int) -> bytes:
    """A layer of files of mixed sizes (4 KB to 1 MB), incompressible, ~``megabytes``."""
    buf = io.BytesIO()
    sizes = [4096, 65536, 1 << 20]
    with tarfile.open(fileobj=buf, mode="w") as tar:
        total, n = 0, 0
        while total < megabytes << 20:
            size = sizes[n % 3]
            info = tarfile.TarInfo(f"data{index}/d{n % 16}/f{n}")
            info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
            total, n = total + size, n + 1
    return buf.getvalue()


def add_layers(store: sb.ImageStore, layers, ref: str, config=None):
    with store.writing():
        stored = [newimage.add_plain_layer(store, io.BytesIO(data)) + (PLAIN,) for data in layers]
        manifest = newimage.write_manifest(store, newimage.new_config([d for d, _, _ in stored], config), stored)
        return store.add(manifest, (ref,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--unpack-rounds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="bench-images-")
    try:
        body = run(top, args)
    finally:
        remove_tree(top)
    print(body)
    if not args.no_record:
        _common.record("bench_images: unpacking and starting images", body)


def run(top: str, args) -> str:
    store = sb.ImageStore(os.path.join(top, "store"))
    big = [data_layer(i, 20) for i in range(5)]
    image = add_layers(store, big, "big:1")
    tars = []
    for i, data in enumerate(big):
        tars.append(os.path.join(top, f"layer{i}.tar"))
        with open(tars[-1], "wb") as f:
            f.write(data)
    policy = IdPolicy.for_caller()

    def ours() -> None:
        remove_tree(os.path.join(store.path, "layers"))
        unpacked_layers(store, image, policy)

    def gnu_tar() -> None:
        dest = os.path.join(top, "tar-out")
        shutil.rmtree(dest, ignore_errors=True)
        for i, path in enumerate(tars):
            os.makedirs(f"{dest}/{i}")
            subprocess.run(["tar", "-x", "-f", path, "-C", f"{dest}/{i}"], check=True)

    unpack = _common.interleaved(
        {
            "sandboxlib unpack (5 layers, 100 MB, hostile-input checks)": ours,
            "GNU tar -x of the same 5 layer tars": gnu_tar,
        },
        rounds=args.unpack_rounds,
        warmup=1,
    )
    root = make_busybox_rootfs(os.path.join(top, "busybox"))
    small = [_dir_layer(root)] + [_file_layer(i) for i in range(4)]
    add_layers(store, small, "bb5:1")
    flat = os.path.join(top, "flat")
    shutil.copytree(root, flat, symlinks=True)
    for i in range(4):
        os.makedirs(os.path.join(flat, f"layer{i}"), exist_ok=True)
        with open(os.path.join(flat, f"layer{i}", "f"), "w") as f:
            f.write(str(i))
    sb.run(["/bin/true"], image="bb5:1", image_store=store.path)  # unpack once
    start = _common.interleaved(
        {
            "sb.run([/bin/true], image= 5 layers)": lambda: sb.run(
                ["/bin/true"], image="bb5:1", image_store=store.path
            ),
            "sb.run([/bin/true], rootfs= the same files)": lambda: sb.run(["/bin/true"], rootfs=flat),
            "sb.run([/bin/true], image= 5 layers, writable_layer=tmpfs)": lambda: sb.run(
                ["/bin/true"], image="bb5:1", image_store=store.path, writable_layer="tmpfs"
            ),
        },
        rounds=args.rounds,
    )
    return _report(unpack, start, args)


def _dir_layer(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return buf.getvalue()


def _file_layer(i: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"layer{i}/f")
        info.size = 1
        tar.addfile(info, io.BytesIO(str(i).encode()))
    return buf.getvalue()


def _report(unpack, start, args) -> str:
    rows = []
    for samples in (unpack, start):
        stats = {name: _common.percentiles(v) for name, v in samples.items()}
        names = list(stats)
        for name in names:
            rows.append((name, stats[name], f"{stats[name][0] / stats[names[1]][0]:.2f}x" if name != names[1] else "1"))
    unpack_ratio = rows[0][1][0] / rows[1][1][0]
    start_ratio = rows[2][1][0] / rows[3][1][0]
    return _common.table(rows) + (
        f"\n\nunpack / tar p50: **{unpack_ratio:.2f}** (target: at most 1.50); image / directory start p50: "
        f"**{start_ratio:.2f}** (target: under 1.50). {args.unpack_rounds} unpack rounds, {args.rounds} start "
        f"rounds, interleaved; {_common.tool_version(['tar', '--version'])}."
    )


if __name__ == "__main__":
    main()
