"""Downloads against a registry that misbehaves (through the fault proxy of
``registryd.py``): a blob cut mid-stream resumes with a closed Range (proved
by the bytes the proxy sent), a registry ignoring Range restarts the blob,
one that sends forever is cut at the declared size, 429/503 are retried,
and a truncated manifest is a RegistryDataError."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

import sandboxlib as sb
from sandboxlib.errors import RegistryDataError

from .registryd import FaultProxy
from .test_registry import EXPECTED, pushed, registry  # noqa: F401 (fixtures)


def layer_descriptors(registry, ref: str) -> list:
    """[(digest, size)] of the layers of ``ref`` (HOST/REPO:TAG), read from the registry itself."""
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return [(layer["digest"], layer["size"]) for layer in json.load(answer)["layers"]]


def pull_through(registry, ref: str, faults: dict, path: str, **kwargs):
    """Pull ``ref`` through a fault proxy; returns (image or the exception, proxy)."""
    proxy = FaultProxy(registry.host, faults)
    try:
        store = sb.ImageStore(path)
        try:
            return store.pull(ref.replace(registry.host, proxy.host), **kwargs), proxy
        except RegistryDataError as err:
            return err, proxy
    finally:
        proxy.close()


def _nothing_left(path: str) -> bool:
    store = sb.ImageStore(path)
    return store.list() == [] and os.listdir(store.blobs.dir) == [] and os.listdir(store.tmp) == []


def check_pull_and_run(path: str, ref: str):
    """Pull ``ref`` and run it: (digest, stdout), or the RegistryDataError's (status, message)
    and whether the store was left empty."""
    try:
        image = sb.ImageStore(path).pull(ref)
    except RegistryDataError as err:
        return (err.status, str(err)), _nothing_left(path)
    return image.digest, sb.run(None, image=image.digest, image_store=path).stdout


def test_cut_blob_resumes_with_a_closed_range(runner, store_dir, registry, pushed):
    ref, digest = pushed
    layer, size = layer_descriptors(registry, ref)[-1]
    proxy = FaultProxy(registry.host, {f"blobs/{layer}": "cut"})
    try:
        assert runner(check_pull_and_run, store_dir, ref.replace(registry.host, proxy.host)) == (digest, EXPECTED)
    finally:
        proxy.close()
    half = size // 2
    assert proxy.sent(layer) == [(None, half), (f"bytes={half}-{size - 1}", size - half)]  # no byte twice


def test_corrupt_blob_leaves_nothing(runner, store_dir, registry, pushed):
    ref, _ = pushed
    layer, _ = layer_descriptors(registry, ref)[-1]
    proxy = FaultProxy(registry.host, {f"blobs/{layer}": "corrupt"})
    try:
        (status, message), nothing_left = runner(check_pull_and_run, store_dir, ref.replace(registry.host, proxy.host))
    finally:
        proxy.close()
    assert status == 200 and f"blob {layer} has digest" in message and nothing_left


def test_registry_ignoring_range_restarts_the_blob(registry, pushed, tmp_path):
    ref, digest = pushed
    layer, size = layer_descriptors(registry, ref)[-1]
    image, proxy = pull_through(registry, ref, {f"blobs/{layer}": "cut", layer: "no-range"}, str(tmp_path / "store"))
    assert image.digest == digest
    assert proxy.sent(layer) == [(None, size // 2), (f"bytes={size // 2}-{size - 1}", size)]


def test_endless_blob_is_cut_at_its_declared_size(registry, pushed, tmp_path):
    ref, _ = pushed
    layer, size = layer_descriptors(registry, ref)[-1]
    path = str(tmp_path / "store")
    err, proxy = pull_through(registry, ref, {f"blobs/{layer}": "endless"}, path)
    assert isinstance(err, RegistryDataError) and err.status == 200
    assert f"sends more than the {size} bytes" in str(err) and layer in str(err)
    (sent,) = [sent for _, sent in proxy.sent(layer)]
    assert sent < size + (32 << 20)  # what the sockets buffered: the client stopped reading
    assert _nothing_left(path)


def test_429_and_503_are_retried(registry, pushed, tmp_path):
    ref, digest = pushed
    layer, _ = layer_descriptors(registry, ref)[0]
    image, proxy = pull_through(registry, ref, {"manifests/1": "429", f"blobs/{layer}": "503"}, str(tmp_path / "store"))
    assert image.digest == digest
    assert proxy.requests[:2] == [("HEAD", "/v2/team/app/manifests/1")] * 2
    assert [method for method, path in proxy.requests if path.endswith(layer)] == ["GET", "GET"]


def test_a_blob_failing_every_time_gives_up(registry, pushed, tmp_path):
    """A registry that cuts every answer short: bounded retries, then a RegistryDataError."""
    ref, _ = pushed
    layer, size = layer_descriptors(registry, ref)[-1]
    path = str(tmp_path / "store")
    err, proxy = pull_through(registry, ref, {f"blobs/{layer}": "truncate+no-range"}, path)
    assert isinstance(err, RegistryDataError) and "the transfer broke off" in str(err)
    assert len(proxy.sent(layer)) == 6  # the first request and five retries
    assert _nothing_left(path)


def test_truncated_manifest_is_a_data_error(registry, pushed, tmp_path):
    ref, _ = pushed
    err, proxy = pull_through(registry, ref, {"manifests/1": "truncate"}, str(tmp_path / "store"))
    assert isinstance(err, RegistryDataError) and "manifest 1 was cut off" in str(err)
    assert err.registry == proxy.host and err.repository == "team/app"


@pytest.mark.parametrize("wrong", [-1, 1])
def test_wrong_content_length_is_refused(registry, pushed, tmp_path, monkeypatch, wrong):
    """A descriptor size that the registry's Content-Length contradicts (here: the
    manifest lies about the size, by one byte either way)."""
    from sandboxlib.registry import pulling

    ref, _ = pushed
    real = pulling.parse_manifest

    def lying(data, label):
        config, layers = real(data, label)
        return config, [(d, s + wrong, t) for d, s, t in layers]

    monkeypatch.setattr(pulling, "parse_manifest", lying)
    path = str(tmp_path / "store")
    err, _ = pull_through(registry, ref, {}, path)
    assert isinstance(err, RegistryDataError) and "Content-Length" in str(err)
    assert _nothing_left(path)
