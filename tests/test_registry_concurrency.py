"""Pulls in several processes and pulls that die: two processes pulling the
same image into one store both succeed and fetch each blob at most twice
(each layer once: the second waits for the first's download), and a pull
SIGKILLed mid-download leaves only what ``prune()`` removes."""

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


def test_two_processes_pull_the_same_image(registry, pushed, tmp_path):
    ref, digest = pushed
    layers = layer_descriptors(registry, ref)
    proxy = FaultProxy(registry.host, {layer: "slow" for layer, _ in layers})
    store = str(tmp_path / "store")
    try:
        via = ref.replace(registry.host, proxy.host)
        first = _pull_process(store, via)
        second = _pull_process(store, via)
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        proxy.close()
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    gets = Counter(path.rsplit("/", 1)[1] for method, path in proxy.requests if method == "GET" and "/blobs/" in path)
    assert max(gets.values()) <= 2
    assert [gets[layer] for layer, _ in layers] == [1, 1, 1]  # the other process waited, then checked
    assert sum("waiting" in out for out, _ in outs) >= 1
    image = sb.ImageStore(store).get(ref.replace(registry.host, proxy.host))
    assert image.digest == digest and len(sb.ImageStore(store).list()) == 1
    assert sb.run(None, image=digest, image_store=store).stdout == EXPECTED


def test_pull_killed_mid_download_leaves_only_what_prune_removes(registry, pushed, tmp_path):
    ref, digest = pushed
    layer, size = layer_descriptors(registry, ref)[-1]
    proxy = FaultProxy(registry.host, {f"blobs/{layer}": "stall"})
    store = str(tmp_path / "store")
    try:
        pull = _pull_process(store, ref.replace(registry.host, proxy.host))
        deadline = time.monotonic() + 60
        while not proxy.sent(layer) or not proxy.sent(layer)[0][1]:  # half the blob is out
            assert time.monotonic() < deadline and pull.poll() is None
            time.sleep(0.02)
        time.sleep(0.2)  # the half arrives and is written
        pull.send_signal(signal.SIGKILL)
        pull.communicate(timeout=30)
    finally:
        proxy.close()
    images = sb.ImageStore(store)
    tmp = os.listdir(images.tmp)
    assert images.list() == [] and any(name.startswith("blob-") for name in tmp)  # the partial blob
    assert any(name == f"pull-{layer[7:]}.lock" for name in tmp)
    images.prune()
    assert os.listdir(images.tmp) == [] and os.listdir(images.blobs.dir) == []
    assert images.pull(ref).digest == digest  # and the store works
