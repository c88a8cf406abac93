"""TLS to a registry (Debian's docker-registry serving HTTPS with a
certificate from a CA these tests make): verified by default, the CA found in
a certs.d directory (Docker's layout, pointed at by $SANDBOXLIB_CERTS_D so
nothing is written to /etc), no quiet fall back to plain HTTP when the
certificate is not trusted, unverified only for a registry named insecure in
the registries file; plain HTTP only for loopback and insecure registries."""

from __future__ import annotations

import json
import os

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError, RegistryError
from sandboxlib.registry import resolve
from sandboxlib.registry.hosts import certs_d_dirs, host_of

from .imagekit import add_image, busybox_layers
from .registryd import Registry
from .tlskit import CA

CONFIG = {"Cmd": ["sh", "-c", "echo over tls"], "Env": ["PATH=/bin"]}


@pytest.fixture(scope="module")
def ca():
    return CA()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, ca):
    server = Registry(str(tmp_path_factory.mktemp("registry-tls")), tls=ca.issue("127.0.0.1"))
    yield server
    server.close()


@pytest.fixture
def certs_d(tmp_path, monkeypatch):
    """An empty certs.d of the test's own, the only one searched."""
    top = tmp_path / "certs.d"
    top.mkdir()
    monkeypatch.setenv("SANDBOXLIB_CERTS_D", str(top))
    monkeypatch.setenv("SANDBOXLIB_REGISTRIES", str(tmp_path / "registries.json"))
    (tmp_path / "registries.json").write_text("{}")
    return top


def _trust(certs_d, host: str, ca) -> None:
    (certs_d / host).mkdir()
    (certs_d / host / "ca.crt").write_bytes(ca.pem)


def check_push_pull_run(path, busybox_rootfs, ref, files):
    """``files`` ({name: PEM}) in certs.d/HOST/. (In the caller's process: the rootless
    worker has its own environment.)"""
    certs_d = os.path.join(path, "certs.d")
    os.makedirs(os.path.join(certs_d, ref.split("/")[0]))
    for name, data in files.items():
        with open(os.path.join(certs_d, ref.split("/")[0], name), "wb") as f:
            f.write(data)
    saved = os.environ.get("SANDBOXLIB_CERTS_D")
    os.environ["SANDBOXLIB_CERTS_D"] = certs_d
    try:
        return _push_pull_run(path, busybox_rootfs, ref)
    finally:
        if saved is None:
            del os.environ["SANDBOXLIB_CERTS_D"]
        else:
            os.environ["SANDBOXLIB_CERTS_D"] = saved


def _push_pull_run(path, busybox_rootfs, ref):
    src = sb.ImageStore(os.path.join(path, "src"))
    add_image(src, busybox_layers(busybox_rootfs)[:1], ["tls:1"], config=CONFIG)
    digest = src.push("tls:1", ref)
    store = sb.ImageStore(os.path.join(path, "dst"))
    image = store.pull(ref)
    result = sb.run(None, image=ref, image_store=store.path)
    return digest, image.digest, result.exit_code, result.stdout


def test_push_pull_and_run_over_verified_tls(runner, store_dir, tls_registry, ca, busybox_root):
    ref = f"{tls_registry.host}/tls/{runner.mode}:1"
    digest, pulled, code, out = runner(check_push_pull_run, store_dir, busybox_root, ref, {"ca.crt": ca.pem})
    assert pulled == digest and (code, out) == (0, b"over tls\n")


# -- client certificates (mutual TLS) ------------------------------------------------------------
@pytest.fixture(scope="module")
def client_ca():
    return CA("sandboxlib test client CA")


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, ca, client_ca):
    """A registry that wants a client certificate its client CA signed."""
    server = Registry(str(tmp_path_factory.mktemp("registry-mtls")), tls=ca.issue("127.0.0.1"), client_ca=client_ca.pem)
    yield server
    server.close()


def _client_files(ca, signer) -> dict:
    cert, key = signer.issue("sandboxlib-client")
    return {"ca.crt": ca.pem, "client.cert": cert, "client.key": key}


def test_client_certificate_from_certs_d(runner, store_dir, mtls_registry, ca, client_ca, busybox_root):
    ref = f"{mtls_registry.host}/mtls/{runner.mode}:1"
    files = _client_files(ca, client_ca)
    digest, pulled, code, out = runner(check_push_pull_run, store_dir, busybox_root, ref, files)
    assert pulled == digest and (code, out) == (0, b"over tls\n")


def test_missing_client_certificate_is_named(mtls_registry, certs_d, ca, tmp_path):
    _trust(certs_d, mtls_registry.host, ca)
    with pytest.raises(RegistryError) as err:
        sb.ImageStore(str(tmp_path / "store")).pull(f"{mtls_registry.host}/mtls/none:1")
    assert "wants a client certificate" in str(err.value) and str(certs_d / mtls_registry.host) in str(err.value)


def test_client_certificate_of_another_ca_is_refused(mtls_registry, certs_d, ca, tmp_path):
    for name, data in _client_files(ca, CA("a CA the registry does not know")).items():
        (certs_d / mtls_registry.host).mkdir(exist_ok=True)
        (certs_d / mtls_registry.host / name).write_bytes(data)
    with pytest.raises(RegistryError) as err:
        sb.ImageStore(str(tmp_path / "store")).pull(f"{mtls_registry.host}/mtls/none:1")
    assert f"refused the client certificate {certs_d / mtls_registry.host / 'client.cert'}" in str(err.value)


@pytest.mark.parametrize("alone", ["client.cert", "client.key"])
def test_client_certificate_without_its_pair_is_a_config_error(certs_d, client_ca, alone):
    (certs_d / "127.0.0.1:5000").mkdir()
    (certs_d / "127.0.0.1:5000" / alone).write_bytes(client_ca.pem)
    with pytest.raises(ConfigError) as err:
        host_of(resolve("127.0.0.1:5000/a"))
    assert err.value.field == "certs.d" and str(certs_d / "127.0.0.1:5000" / alone) in str(err.value)


def test_ssl_context_is_made_once_per_set_of_files(certs_d, ca):
    _trust(certs_d, "127.0.0.1:5000", ca)
    first = host_of(resolve("127.0.0.1:5000/a")).ssl_context()
    assert host_of(resolve("127.0.0.1:5000/b")).ssl_context() is first
    assert host_of(resolve("127.0.0.1:5001/a")).ssl_context() is not first  # no CA of its own
    path = certs_d / "127.0.0.1:5000" / "ca.crt"
    path.write_bytes(CA("renewed").pem)
    os.utime(path, ns=(1, 1))
    assert host_of(resolve("127.0.0.1:5000/a")).ssl_context() is not first  # a changed file: made again


def test_untrusted_certificate_is_an_error_not_plain_http(tls_registry, certs_d, tmp_path):
    """Loopback may use plain HTTP, but a registry that speaks TLS is verified: no quiet fall back."""
    store = sb.ImageStore(str(tmp_path / "store"))
    with pytest.raises(RegistryError) as err:
        store.pull(f"{tls_registry.host}/tls/none:1")
    message = str(err.value)
    assert err.value.status is None and "not trusted" in message and "CERTIFICATE_VERIFY_FAILED" in message
    assert os.path.join(str(certs_d), tls_registry.host, "ca.crt") in message
    assert store.list() == []


def test_another_ca_is_not_trusted(tls_registry, certs_d, tmp_path):
    _trust(certs_d, tls_registry.host, CA("another CA"))
    with pytest.raises(RegistryError, match="not trusted"):
        sb.ImageStore(str(tmp_path / "store")).pull(f"{tls_registry.host}/tls/none:1")


def test_ca_of_another_registry_is_not_used(tls_registry, certs_d, ca, tmp_path):
    _trust(certs_d, "127.0.0.1:1", ca)
    with pytest.raises(RegistryError, match="not trusted"):
        sb.ImageStore(str(tmp_path / "store")).pull(f"{tls_registry.host}/tls/none:1")


def test_insecure_registry_is_not_verified(tls_registry, certs_d, ca, tmp_path, busybox_root):
    (certs_d.parent / "registries.json").write_text(json.dumps({"insecure": [tls_registry.host]}))
    src = sb.ImageStore(str(tmp_path / "src"))
    add_image(src, busybox_layers(busybox_root)[:1], ["tls:2"], config=CONFIG)
    digest = src.push("tls:2", f"{tls_registry.host}/tls/insecure:2")
    assert sb.ImageStore(str(tmp_path / "dst")).pull(f"{tls_registry.host}/tls/insecure:2").digest == digest


def test_plain_http_only_for_loopback_and_insecure(certs_d):
    assert host_of(resolve("127.0.0.1:5000/a")).plain_http_allowed
    assert host_of(resolve("localhost/a")).plain_http_allowed
    remote = host_of(resolve("registry.example.com:5000/a"))
    assert not remote.plain_http_allowed and remote.ssl_context() is not False
    (certs_d.parent / "registries.json").write_text(json.dumps({"insecure": ["registry.example.com:5000"]}))
    named = host_of(resolve("registry.example.com:5000/a"))
    assert named.plain_http_allowed and named.ssl_context() is False
    assert not host_of(resolve("registry.example.com/a")).plain_http_allowed  # another port, another registry


def test_certs_d_places(monkeypatch, tmp_path):
    monkeypatch.delenv("SANDBOXLIB_CERTS_D", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert certs_d_dirs() == (
        str(tmp_path / "containers" / "certs.d"),
        "/etc/containers/certs.d",
        "/etc/docker/certs.d",
    )
    monkeypatch.setenv("SANDBOXLIB_CERTS_D", "/a:/b")
    assert certs_d_dirs() == ("/a", "/b")


@pytest.mark.parametrize(
    "text, words",
    [
        ("[", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"insecur": []}', "unknown key 'insecur'"),
        ('{"insecure": "host"}', "'insecure' must be a list"),
        ('{"insecure": ["a/b"]}', "'insecure' must be a list"),
        ('{"mirrors": ["m"]}', "'mirrors' must map registries"),
        ('{"mirrors": {"docker.io": "m"}}', "['docker.io'] must be a list of mirrors"),
        ('{"mirrors": {"docker.io": ["a b"]}}', "'a b' is not a mirror"),
        ('{"mirrors": {"a/b": []}}', "'a/b' is not a registry"),
    ],
)
def test_bad_registries_file(certs_d, text, words):
    path = certs_d.parent / "registries.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        host_of(resolve("127.0.0.1:5000/a"))
    assert err.value.field == "SANDBOXLIB_REGISTRIES" and words in str(err.value) and str(path) in str(err.value)
