"""Pull and push over the distribution API against a real registry
(Debian's docker-registry 2.8 on a loopback port, plain HTTP, started by
this module): an image made here is pushed, pulled into a fresh store and
run (root and rootless); a second pull fetches nothing; a registry that
lies (a corrupted or truncated blob, a schema 1 manifest, through a fault
proxy) gets a RegistryError and leaves nothing in the store; skopeo's
pushes are pulled and run, and our pushes read back by ``skopeo inspect``."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError, RegistryDataError, RegistryError, RegistryNotFound
from sandboxlib.registry import Phase, resolve

from .conftest import sandboxlib_cli
from .imagekit import add_image, busybox_layers, write_dir_image
from .registryd import FaultProxy, Registry

CONFIG = {
    "Cmd": ["sh", "-c", "cat /app/new.txt /etc/motd; echo $GREETING"],
    "Env": ["PATH=/bin", "GREETING=hi"],
    "WorkingDir": "/app",
}
EXPECTED = b"new\nmotd 3\nhi\n"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = Registry(str(tmp_path_factory.mktemp("registry")))
    yield server
    server.close()


@pytest.fixture(scope="module")
def pushed(registry, shared_dir, busybox_root):
    """Our three-layer busybox image pushed as HOST/team/app:1; returns (reference, digest)."""
    path = shared_dir / "registry-src"
    store = sb.ImageStore(str(path))
    add_image(store, busybox_layers(busybox_root), ["app:1"], config=CONFIG)
    ref = f"{registry.host}/team/app:1"
    digest = store.push("app:1", ref)
    yield ref, digest
    shutil.rmtree(path, ignore_errors=True)


def _blob_files(path: str) -> list:
    return sorted(os.listdir(os.path.join(path, "images", "blobs", "sha256")))


# -- references ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("alpine", ("docker.io", "library/alpine", "latest", None, "alpine:latest")),
        ("docker.io/library/alpine:3.19", ("docker.io", "library/alpine", "3.19", None, "alpine:3.19")),
        ("user/repo", ("docker.io", "user/repo", "latest", None, "user/repo:latest")),
        ("localhost:5000/team/app:1.2", ("localhost:5000", "team/app", "1.2", None, "localhost:5000/team/app:1.2")),
        ("localhost/app", ("localhost", "app", "latest", None, "localhost/app:latest")),
        ("reg.example.com/x@sha256:" + "a" * 64, ("reg.example.com", "x", None, "sha256:" + "a" * 64, None)),
    ],
)
def test_references_resolve_as_docker(text, expected):
    ref = resolve(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.store_tag) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "a:b:c", "sha256:" + "a" * 64, "app@sha256:short"])
def test_bad_references_are_config_errors(text):
    with pytest.raises(ConfigError) as err:
        resolve(text, "ref")
    assert err.value.field == "ref"


def test_loopback_only_for_plain_http():
    assert resolve("127.0.0.1:5000/a").is_loopback and resolve("localhost:5000/a").is_loopback
    assert resolve("127.0.0.2:5000/a").is_loopback  # (IPv6 hosts: the store's names do not take them yet)
    assert not resolve("registry.example.com/a").is_loopback and not resolve("alpine").is_loopback


def test_registry_errors_pickle_with_their_fields():
    err = RegistryNotFound("localhost:5000", "team/app", 404, "manifest 1: 404 Not Found")
    back = pickle.loads(pickle.dumps(err))
    assert (back.registry, back.repository, back.status, str(back)) == (
        "localhost:5000",
        "team/app",
        404,
        "registry localhost:5000/team/app (HTTP 404): manifest 1: 404 Not Found",
    )
    assert isinstance(back, LookupError) and isinstance(back, sb.SandboxError)


# -- push, pull, run ------------------------------------------------------------------------
def check_pull_and_run(path, ref):
    store = sb.ImageStore(path)
    events = []
    image = store.pull(ref, progress=events.append)
    result = sb.run(None, image=ref, image_store=path)
    again = []
    second = store.pull(ref, progress=again.append)
    return (
        image.digest,
        image.references,
        image.repo_digests,
        result.exit_code,
        result.stdout,
        sorted({e.phase.value for e in events}),
        again,
        second.digest,
        len(store.list()),
    )


def test_push_then_pull_and_run(runner, store_dir, pushed):
    ref, digest = pushed
    image_digest, names, repo_digests, code, out, phases, again, second, count = runner(
        check_pull_and_run, store_dir, ref
    )
    assert image_digest == digest == second and names == (ref,)
    assert repo_digests == (f"{ref.rsplit(':', 1)[0]}@{digest}",)
    assert (code, out) == (0, EXPECTED)
    assert phases == ["done", "downloading", "verifying", "waiting"]
    assert again == [] and count == 1  # the second pull: one HEAD, nothing fetched


def test_second_pull_fetches_nothing(registry, pushed, tmp_path):
    ref, digest = pushed
    proxy = FaultProxy(registry.host, {})
    try:
        via = ref.replace(registry.host, proxy.host)
        store = sb.ImageStore(str(tmp_path / "store"))
        store.pull(via)
        first = list(proxy.requests)
        del proxy.requests[:]
        store.pull(via)
        by_digest = store.pull(f"{via.rsplit(':', 1)[0]}@{digest}")
    finally:
        proxy.close()
    assert sum("/blobs/" in path for _, path in first) == 4  # three layers and the config
    assert proxy.requests == [("HEAD", "/v2/team/app/manifests/1"), ("HEAD", f"/v2/team/app/manifests/{digest}")]
    assert by_digest.digest == digest


def test_layers_in_the_store_are_not_fetched(registry, pushed, tmp_path, busybox_root):
    """Another image sharing two layers (by digest) fetches only its own."""
    ref, _ = pushed
    src = sb.ImageStore(str(tmp_path / "src"))
    layers = busybox_layers(busybox_root)
    add_image(src, layers[:2] + [_one_file_layer()], ["other:1"], config=CONFIG)
    other = f"{registry.host}/team/other:1"
    src.push("other:1", other)
    proxy = FaultProxy(registry.host, {})
    try:
        store = sb.ImageStore(str(tmp_path / "store"))
        store.pull(ref.replace(registry.host, proxy.host))
        del proxy.requests[:]
        events = []
        store.pull(other.replace(registry.host, proxy.host), progress=events.append)
    finally:
        proxy.close()
    fetched = [path for method, path in proxy.requests if method == "GET" and "/blobs/" in path]
    assert len(fetched) == 2  # the new layer and the config
    assert [e.phase for e in events].count(Phase.PRESENT) == 2


def _one_file_layer() -> bytes:
    from .imagekit import layer_tar

    return layer_tar({"app/": "dir/", "app/new.txt": b"other\n", "etc/motd": b"motd 3\n"})


def test_pull_by_digest_keeps_only_the_repo_digest(registry, pushed, tmp_path):
    """As Docker: no tag, a RepoDigest; ``name@digest`` finds it; prune (untagged) removes it,
    and removing an image's last tag drops its repo digests with it."""
    ref, digest = pushed
    by_digest = f"{ref.rsplit(':', 1)[0]}@{digest}"
    store = sb.ImageStore(str(tmp_path / "store"))
    image = store.pull(by_digest)
    assert (image.references, image.repo_digests) == ((), (by_digest,))
    assert store.get(by_digest).digest == digest
    assert store.prune().images == (digest,) and store.list() == [] and _blob_files(store.path) == []
    store.pull(ref)
    assert store.remove(ref) == [ref] and store.list() == [] and _blob_files(store.path) == []


def check_push(path, busybox_rootfs, ref):
    store = sb.ImageStore(path)
    add_image(store, busybox_layers(busybox_rootfs)[:1], ["mine:1"], config={"Cmd": ["true"]})
    digest = store.push("mine:1", ref)
    return digest, store.get("mine:1").repo_digests


def test_push_is_read_back_by_skopeo(runner, store_dir, registry, busybox_root):
    ref = f"{registry.host}/{runner.mode}/mine:1"
    digest, repo_digests = runner(check_push, store_dir, busybox_root, ref)
    assert repo_digests == (f"{registry.host}/{runner.mode}/mine@{digest}",)
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    inspected = json.loads(out)
    assert inspected["Digest"] == digest and len(inspected["Layers"]) == 1


def test_skopeo_push_is_pulled_and_run(runner, store_dir, registry, busybox_root, shared_dir):
    src = str(shared_dir / f"skopeo-dir-{runner.mode}")
    write_dir_image(src, busybox_layers(busybox_root), CONFIG)
    ref = f"{registry.host}/skopeo/{runner.mode}:1"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", f"dir:{src}", f"docker://{ref}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(src)
    _, names, _, code, out, *_ = runner(check_pull_and_run, store_dir, ref)
    assert names == (ref,) and (code, out) == (0, EXPECTED)


# -- a registry that lies ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["corrupt", "truncate"])
def test_bad_blob_is_refused_and_nothing_is_left(registry, pushed, tmp_path, kind):
    ref, digest = pushed
    layer_digest = _last_layer(registry, ref)
    proxy = FaultProxy(registry.host, {f"blobs/{layer_digest}": kind})
    try:
        store = sb.ImageStore(str(tmp_path / "store"))
        with pytest.raises(RegistryDataError) as err:
            store.pull(ref.replace(registry.host, proxy.host))
    finally:
        proxy.close()
    assert err.value.repository == "team/app" and err.value.registry == proxy.host
    assert err.value.status == 200 and layer_digest in str(err.value)
    assert store.list() == [] and _blob_files(store.path) == [] and os.listdir(store.tmp) == []


def _last_layer(registry, ref) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out)["layers"][-1]["digest"]


def test_schema1_manifest_is_refused(registry, tmp_path):
    proxy = FaultProxy(registry.host, {"manifests/1": "schema1"})
    try:
        with pytest.raises(RegistryDataError, match="schema 1"):
            sb.ImageStore(str(tmp_path / "store")).pull(f"{proxy.host}/team/old:1")
    finally:
        proxy.close()


def test_missing_image_is_not_found(registry, tmp_path):
    store = sb.ImageStore(str(tmp_path / "store"))
    with pytest.raises(RegistryNotFound) as err:
        store.pull(f"{registry.host}/team/nothing:1")
    assert (err.value.status, err.value.repository) == (404, "team/nothing")
    assert store.list() == []


def test_unreachable_registry(tmp_path):
    from .registryd import free_port

    with pytest.raises(RegistryError) as err:
        sb.ImageStore(str(tmp_path / "store")).pull(f"127.0.0.1:{free_port()}/a:1")
    assert err.value.status is None and "ConnectError" in str(err.value)


# -- the command line ------------------------------------------------------------------------------
def test_cli_push_and_pull(registry, pushed, tmp_path, busybox_root):
    ref, digest = pushed
    store = str(tmp_path / "store")
    quiet = sandboxlib_cli("pull", "-q", "--store", store, ref, text=True)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, digest + "\n", "")
    again = sandboxlib_cli("pull", "--store", store, ref, text=True)  # present: nothing fetched, no layer lines
    assert again.stdout.splitlines() == [f"Digest: {ref.rsplit(':', 1)[0]}@{digest}", f"Pulled: {ref}"]
    fresh = sandboxlib_cli("pull", "--store", str(tmp_path / "fresh"), ref, text=True)
    lines = fresh.stdout.splitlines()
    assert fresh.returncode == 0 and lines[-1] == f"Pulled: {ref}" and f"{_short_layers(ref)[0]}: done" in lines
    moved = f"{registry.host}/team/copy:2"
    pushed_out = sandboxlib_cli("push", "-q", "--store", store, ref, moved, text=True)
    assert (pushed_out.returncode, pushed_out.stdout) == (0, digest + "\n")
    missing = sandboxlib_cli("pull", "--store", store, f"{registry.host}/team/nothing:1", text=True)
    assert missing.returncode != 0 and "(HTTP 404)" in missing.stderr and "team/nothing" in missing.stderr


def _short_layers(ref: str) -> list:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [layer["digest"][7:19] for layer in json.loads(out)["layers"]]


# -- run pulls what is missing ------------------------------------------------------------------------
def check_run_pulls(path, ref):
    first = sb.run(None, image=ref, image_store=path)
    second = sb.run(None, image=ref, image_store=path)
    return first.stdout, second.stdout, [image.references for image in sb.ImageStore(path).list()]


def _fetches(requests) -> tuple:
    return (
        sum(method == "GET" and "/blobs/" in path for method, path in requests),
        [(method, path) for method, path in requests if "/manifests/" in path],
    )


def test_run_pulls_a_missing_image_once(runner, store_dir, registry, pushed):
    ref, digest = pushed
    proxy = FaultProxy(registry.host, {})
    try:
        via = ref.replace(registry.host, proxy.host)
        first, second, names = runner(check_run_pulls, store_dir, via)
    finally:
        proxy.close()
    assert first == second == EXPECTED and names == [(via,)]
    blobs, manifests = _fetches(proxy.requests)
    assert blobs == 4 and manifests == [("HEAD", "/v2/team/app/manifests/1"), ("GET", "/v2/team/app/manifests/1")]


def test_run_pull_always_asks_the_registry(registry, pushed, tmp_path):
    ref, _ = pushed
    store = sb.ImageStore(str(tmp_path / "store"))
    proxy = FaultProxy(registry.host, {})
    try:
        via = ref.replace(registry.host, proxy.host)
        store.pull(via)
        del proxy.requests[:]
        with sb.Container(image=via, image_store=store.path, pull="always") as container:
            out = container.run(["cat", "/etc/motd"]).stdout
    finally:
        proxy.close()
    assert out == b"motd 3\n" and proxy.requests == [("HEAD", "/v2/team/app/manifests/1")]


def test_pull_never_with_a_missing_image(registry, pushed, tmp_path):
    ref, _ = pushed
    proxy = FaultProxy(registry.host, {})
    try:
        with pytest.raises(sb.ImageNotFound) as err:
            sb.run(None, image=ref.replace(registry.host, proxy.host), image_store=str(tmp_path / "s"), pull="never")
    finally:
        proxy.close()
    assert "pull='never'" in str(err.value) and proxy.requests == []


def test_run_of_an_image_no_registry_has(registry, tmp_path):
    ref = f"{registry.host}/team/nothing:1"
    with pytest.raises(sb.ImageNotFound) as err:
        sb.run(None, image=ref, image_store=str(tmp_path / "s"))
    assert err.value.reference == ref and "(HTTP 404)" in str(err.value)
    assert isinstance(err.value.__cause__, RegistryNotFound)


def test_pull_option_is_checked():
    with pytest.raises(ConfigError) as err:
        sb.ContainerConfig(pull="sometimes")
    assert err.value.field == "pull" and "'missing', 'always', 'never'" in str(err.value)
    assert sb.ContainerConfig(pull="always").pull is sb.Pull.ALWAYS and sb.ContainerConfig().pull is sb.Pull.MISSING


def test_cli_run_pull(registry, pushed, tmp_path):
    ref, _ = pushed
    store = str(tmp_path / "store")
    never = sandboxlib_cli("run", "--store", store, "--pull", "never", ref, text=True)
    assert never.returncode != 0 and "pull='never'" in never.stderr
    done = sandboxlib_cli("run", "--store", store, ref, text=True)
    assert (done.returncode, done.stdout) == (0, EXPECTED.decode())
