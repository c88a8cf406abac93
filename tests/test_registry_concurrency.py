"""Pulls in several processes and pulls that die: two processes pulling the
same image into one store both succeed and fetch each blob at most twice
(each layer once: the second waits for the first's download and unpack),
and a pull SIGKILLed mid-download (mid-unpack: layers unpack as they
stream in) leaves only what ``prune()`` removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import sandboxlib as sb

from .registryd import FaultProxy
from .test_registry import EXPECTED, pushed, registry  # noqa: F401 (fixtures)
from .test_registry_transfer import layer_descriptors


def _pull_process(store: str, ref: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sandboxlib", "pull", "--store", store, ref],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_two_pulls(path: str, ref: str):
    """Two processes pull ``ref`` into one store at once; (exit codes, outputs, digest, images, run output)."""
    store = os.path.join(path, "store")
    first, second = _pull_process(store, ref), _pull_process(store, ref)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    images = sb.ImageStore(store)
    image = images.get(ref)
    policy = images.caller_policy()
    unpacked = all(os.path.isdir(os.path.join(store, "layers", policy.key, x.diff_id[7:])) for x in image.layers)
    run = sb.run(None, image=image.digest, image_store=store).stdout
    return [first.returncode, second.returncode], outs, image.digest, len(images.list()), run, unpacked


def test_two_processes_pull_the_same_image(runner, store_dir, registry, pushed):
    ref, digest = pushed
    layers = layer_descriptors(registry, ref)
    proxy = FaultProxy(registry.host, {layer: "slow" for layer, _ in layers})
    try:
        codes, outs, got, count, run, unpacked = runner(
            check_two_pulls, store_dir, ref.replace(registry.host, proxy.host)
        )
    finally:
        proxy.close()
    assert codes == [0, 0], outs
    gets = Counter(path.rsplit("/", 1)[1] for method, path in proxy.requests if method == "GET" and "/blobs/" in path)
    assert max(gets.values()) <= 2
    assert [gets[layer] for layer, _ in layers] == [1, 1, 1]  # the other process waited, then checked
    assert sum("waiting" in out for out, _ in outs) >= 1
    assert (got, count, run, unpacked) == (digest, 1, EXPECTED, True)


def check_killed_pull(path: str, ref: str, direct: str):
    """A pull SIGKILLed once half of a stalled blob is in the store's tmp/ (the other layers
    unpacked, the stalled one half); what is left, then after prune(), and whether a pull
    then works (``direct``: the registry without the proxy)."""
    images = sb.ImageStore(os.path.join(path, "store"))
    pull = _pull_process(images.path, ref)
    deadline = time.monotonic() + 60
    while len(_unpacked(images)) < 2 or not any(  # the other two layers whole, unpacked
        name.startswith("blob-") and os.path.getsize(os.path.join(images.tmp, name)) for name in _listing(images.tmp)
    ):
        assert time.monotonic() < deadline and pull.poll() is None, pull.communicate()
        time.sleep(0.02)
    time.sleep(0.2)  # the half arrives and is written
    pull.send_signal(signal.SIGKILL)
    pull.communicate(timeout=30)
    left = (images.list(), sorted(os.listdir(images.tmp)), _unpacked(images))
    images.prune()
    pruned = (os.listdir(images.tmp), os.listdir(images.blobs.dir), _unpacked(images))
    return left, pruned, images.pull(direct).digest


def _unpacked(store: sb.ImageStore) -> list:
    """The layer dirs published under layers/KEY/."""
    top = os.path.join(store.path, "layers")
    return sorted(f"{key}/{name}" for key in _listing(top) for name in _listing(os.path.join(top, key)))


def _listing(path: str) -> list:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def test_pull_killed_mid_download_leaves_only_what_prune_removes(runner, store_dir, registry, pushed):
    ref, digest = pushed
    layer, _ = layer_descriptors(registry, ref)[-1]
    proxy = FaultProxy(registry.host, {f"blobs/{layer}": "stall"})
    try:
        (images, tmp, unpacked), pruned, again = runner(
            check_killed_pull, store_dir, ref.replace(registry.host, proxy.host), ref
        )
    finally:
        proxy.close()
    assert images == [] and any(name.startswith("blob-") for name in tmp)  # the partial blob
    assert any(name.startswith("layer-") for name in tmp)  # its layer, unpacked as it came
    assert len(unpacked) == 2  # the two layers that came whole: unpacked, referenced by nothing
    assert f"pull-{layer[7:]}.lock" in tmp
    assert pruned == ([], [], []) and again == digest  # and the store works
