"""Registry mirrors (the registries file's ``mirrors``): a pull goes to the
mirrors first, in order, and falls back to the next (and last to the registry
itself) when one fails; the image keeps the registry's name.  The mirror is a
real one: Debian's docker-registry as a pull-through cache of the tests'
upstream registry (distribution's ``proxy: remoteurl``).  Fault proxies in
front of both show which one was asked."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

import sandboxlib as sb

from .registryd import FaultProxy, Registry, environment, free_port
from .test_registry import EXPECTED, pushed, registry  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def front(registry):
    """The upstream as the images are named: a proxy in front of it that logs what it is asked."""
    proxy = FaultProxy(registry.host, {})
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def mirror(registry, tmp_path_factory):
    """A pull-through cache of the upstream registry (it fetches from the upstream directly)."""
    server = Registry(str(tmp_path_factory.mktemp("mirror")), mirror_of=f"http://{registry.host}")
    yield server
    server.close()


@pytest.fixture
def mirror_front(mirror):
    proxy = FaultProxy(mirror.host, {})
    yield proxy
    proxy.close()


def _blob_gets(proxy: FaultProxy) -> int:
    return sum(1 for method, path in proxy.requests if method == "GET" and "/blobs/" in path)


def check_pull_through_mirror(path: str, ref: str, mirrors: dict):
    """Pull and run ``ref`` with these mirrors (the settings written here: the worker's own environment)."""
    settings = os.path.join(path, "registries.json")
    with open(settings, "w") as f:
        json.dump({"mirrors": mirrors}, f)
    with environment(SANDBOXLIB_REGISTRIES=settings):
        store = sb.ImageStore(os.path.join(path, "store"))
        image = store.pull(ref)
        result = sb.run(None, image=ref, image_store=store.path)
    return image.digest, image.references, image.repo_digests, result.exit_code, result.stdout


def test_pull_goes_through_the_mirror(runner, store_dir, pushed, front, mirror_front):
    _, digest = pushed
    ref = f"{front.host}/team/app:1"
    got, names, repo_digests, code, out = runner(
        check_pull_through_mirror, store_dir, ref, {front.host: [f"http://{mirror_front.host}/"]}
    )
    assert (got, names, repo_digests) == (digest, (ref,), (f"{front.host}/team/app@{digest}",))
    assert (code, out) == (0, EXPECTED)
    assert front.requests == [] and _blob_gets(mirror_front) == 4  # config and layers from the mirror only
    assert ("HEAD", "/v2/team/app/manifests/1") in mirror_front.requests


def test_failing_mirrors_fall_back_in_order(pushed, front, mirror, tmp_path, caplog, shared_dir):
    """A mirror that is down, one that lacks the image, one that corrupts a layer: passed
    over in order with a warning each, and the image comes from the registry itself."""
    _, digest = pushed
    (tmp_path / "empty").mkdir()
    empty = Registry(str(tmp_path / "empty"))
    layer = json.loads(front_manifest(front))["layers"][-1]["digest"]
    liar = FaultProxy(mirror.host, {f"blobs/{layer}": "corrupt"})
    down = f"127.0.0.1:{free_port()}"
    before = _blob_gets(front)
    try:
        caplog.set_level(logging.WARNING, logger="sandboxlib")
        got, *_, code, out = check_pull_through_mirror(
            str(tmp_path), f"{front.host}/team/app:1", {front.host: [down, empty.host, liar.host]}
        )
        assert liar.sent(f"blobs/{layer}")  # the corrupted layer was fetched from it
    finally:
        liar.close()
        empty.close()
    assert (got, code, out) == (digest, 0, EXPECTED)
    assert _blob_gets(front) - before == 4
    warned = [r.getMessage() for r in caplog.records if "mirror" in r.getMessage()]
    assert [w.split("the mirror ")[1].split(" ")[0] for w in warned] == [down, empty.host, liar.host]
    assert "404" in warned[1] and "has digest" in warned[2]


def front_manifest(front: FaultProxy) -> bytes:
    import httpx

    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    return httpx.get(f"http://{front.host}/v2/team/app/manifests/1", headers={"Accept": accept}).content


def test_a_mirror_that_is_down_is_passed_over_at_once(pushed, front, tmp_path):
    """A mirror refusing connections is not retried with back-off (0.1 + 0.2 + ... = 3.1 s
    for the registry itself): the image already pulled costs a refused connect and a HEAD."""
    ref = f"{front.host}/team/app:1"
    settings = tmp_path / "registries.json"
    settings.write_text(json.dumps({"mirrors": {front.host: [f"127.0.0.1:{free_port()}"]}}))
    store = sb.ImageStore(str(tmp_path / "store"))
    with environment(SANDBOXLIB_REGISTRIES=str(settings)):
        digest = store.pull(ref).digest
        start = time.monotonic()
        assert store.pull(ref).digest == digest
        assert time.monotonic() - start < 1.5


def test_push_goes_to_the_registry_not_the_mirror(pushed, mirror_front, tmp_path, busybox_root):
    from .imagekit import add_image, busybox_layers

    ref, _ = pushed
    registry_host = ref.split("/")[0]
    settings = tmp_path / "registries.json"
    settings.write_text(json.dumps({"mirrors": {registry_host: [mirror_front.host]}}))
    store = sb.ImageStore(str(tmp_path / "store"))
    add_image(store, busybox_layers(busybox_root)[:1], ["solo:1"], config={"Cmd": ["true"]})
    with environment(SANDBOXLIB_REGISTRIES=str(settings)):
        store.push("solo:1", f"{registry_host}/team/solo:1")
    assert mirror_front.requests == []


def test_mirror_locations_are_normalised(tmp_path):
    from sandboxlib.registry.settings import registry_settings

    settings = tmp_path / "registries.json"
    settings.write_text(json.dumps({"mirrors": {"index.docker.io": ["https://mirror.gcr.io/", "reg.lan:5000/hub"]}}))
    with environment(SANDBOXLIB_REGISTRIES=str(settings)):
        assert registry_settings().mirrors_of("docker.io") == ("mirror.gcr.io", "reg.lan:5000/hub")
