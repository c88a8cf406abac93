"""Credentials against real registries (Debian's docker-registry over TLS
with a CA these tests make): htpasswd basic auth, and distribution's token
auth against the tests' own token issuer (tests/tokenissuer.py, its realm on
another host), read from Docker's config.json (``auths``, ``credsStore`` and
``credHelpers`` through a credential helper these tests write) and from
containers' auth.json; ``login`` checks before it stores (0600), ``logout``
forgets; tokens cached per scope and fetched again when refused; identity
tokens fetch them with OAuth2's refresh grant; blobs redirected to another
host get no credentials; no secret in any message or repr.  Root and
rootless: login, push, pull and run with both kinds of auth."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import sys

import pytest

import sandboxlib as sb
from sandboxlib.errors import ConfigError, RegistryAuthError
from sandboxlib.registry import auth
from sandboxlib.registry.auth import forget_tokens, parse_challenge
from sandboxlib.registry.credentials import Credentials, lookup

from .conftest import sandboxlib_cli
from .imagekit import add_image, busybox_layers
from .registryd import HTPASSWD_AUTH, FaultProxy, Registry, environment, write_htpasswd
from .tlskit import CA
from .tokenissuer import TokenIssuer

PASSWORD = "s3cret-Pa55"
USERS = {"alice": PASSWORD}
CONFIG = {"Cmd": ["true"], "Env": ["PATH=/bin"]}


@pytest.fixture(scope="module")
def ca():
    return CA()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory, ca):
    top = str(tmp_path_factory.mktemp("registry-basic"))
    write_htpasswd(top, USERS)
    server = Registry(top, tls=ca.issue("127.0.0.1"), auth=HTPASSWD_AUTH)
    yield server
    server.close()


@pytest.fixture(scope="module")
def issuer(ca):
    server = TokenIssuer(ca, USERS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, ca, issuer):
    top = str(tmp_path_factory.mktemp("registry-token"))
    issuer.write_bundle(top)
    server = Registry(top, tls=ca.issue("127.0.0.1"), auth=issuer.auth_config())
    yield server
    server.close()


@pytest.fixture(autouse=True)
def places(tmp_path, monkeypatch, ca, request):
    """The test's own certs.d (trusting the CA for both registries), Docker config and auth.json;
    no token or challenge cached from another test."""
    certs_d = tmp_path / "certs.d"
    for name in ("basic_registry", "token_registry"):
        if name in request.fixturenames:
            host = request.getfixturevalue(name).host
            (certs_d / host).mkdir(parents=True)
            (certs_d / host / "ca.crt").write_bytes(ca.pem)
    monkeypatch.setenv("SANDBOXLIB_CERTS_D", str(certs_d))
    monkeypatch.setenv("SANDBOXLIB_REGISTRIES", str(tmp_path / "registries.json"))
    (tmp_path / "registries.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    forget_tokens()
    yield tmp_path
    forget_tokens()


def _push_one(tmp_path, ref: str) -> str:
    src = sb.ImageStore(str(tmp_path / "src"))
    if not src.list():
        add_image(src, busybox_layers_cached(), ["auth:1"], config=CONFIG)
    return src.push("auth:1", ref)


_LAYERS = []


def busybox_layers_cached():
    return _LAYERS[0]


@pytest.fixture(autouse=True)
def layers(busybox_root):
    if not _LAYERS:
        _LAYERS.append(busybox_layers(busybox_root)[:1])


def _no_secret(err) -> None:
    for text in (str(err), repr(err), repr(err.args)):
        assert PASSWORD not in text and base64.b64encode(f"alice:{PASSWORD}".encode()).decode() not in text


def _config(places) -> dict:
    return json.loads((places / "docker" / "config.json").read_text())


# -- challenges -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header, expected",
    [
        (
            'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
            'scope="repository:team/app:pull,push"',
            (
                "bearer",
                {
                    "realm": "https://auth.example.com/token",
                    "service": "registry.example.com",
                    "scope": "repository:team/app:pull,push",
                },
            ),
        ),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        ('bearer realm=https://a/t, service="s \\"q\\""', ("bearer", {"realm": "https://a/t", "service": 's "q"'})),
        ("", None),
    ],
)
def test_challenges_are_parsed(header, expected):
    assert parse_challenge(header) == expected


def test_credentials_hide_the_secret():
    creds = Credentials("alice", PASSWORD)
    assert PASSWORD not in repr(creds) and PASSWORD not in str(creds) and "alice" in repr(creds)


# -- basic auth -----------------------------------------------------------------------------------
def test_basic_auth_login_push_pull_logout(basic_registry, places, tmp_path):
    ref = f"{basic_registry.host}/auth/basic:1"
    store = sb.ImageStore(str(tmp_path / "store"))
    with pytest.raises(RegistryAuthError) as anonymous:
        store.pull(ref)
    assert anonymous.value.status == 401 and "sandboxlib login" in str(anonymous.value)
    with pytest.raises(RegistryAuthError) as wrong:
        sb.login(basic_registry.host, "alice", PASSWORD + "x")
    assert "'alice'" in str(wrong.value) and wrong.value.status == 401
    _no_secret(wrong.value)
    assert not (places / "docker" / "config.json").exists()  # checked before stored
    where = sb.login(basic_registry.host, "alice", PASSWORD)
    path = places / "docker" / "config.json"
    assert where == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _config(places) == {
        "auths": {basic_registry.host: {"auth": base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}}
    }
    digest = _push_one(tmp_path, ref)
    assert store.pull(ref).digest == digest
    assert sb.logout(basic_registry.host) is True and _config(places) == {"auths": {}}
    assert sb.logout(basic_registry.host) is False
    with pytest.raises(RegistryAuthError):
        sb.ImageStore(str(tmp_path / "other")).pull(ref)


def test_containers_auth_json(basic_registry, places, tmp_path):
    ref = f"{basic_registry.host}/auth/json:1"
    sb.login(basic_registry.host, "alice", PASSWORD)
    digest = _push_one(tmp_path, ref)
    os.unlink(places / "docker" / "config.json")
    forget_tokens()
    auth_json = places / "run" / "containers" / "auth.json"
    auth_json.parent.mkdir(parents=True)
    auth_json.write_text(
        json.dumps({"auths": {basic_registry.host: {"auth": base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}}})
    )
    assert sb.ImageStore(str(tmp_path / "store")).pull(ref).digest == digest


def test_bad_auths_entry_is_a_config_error(places):
    (places / "docker").mkdir()
    (places / "docker" / "config.json").write_text(json.dumps({"auths": {"reg.example.com": {"auth": "!!"}}}))
    with pytest.raises(ConfigError, match="not base64 of user:password"):
        lookup("reg.example.com")


# -- as root and rootless ----------------------------------------------------------------------------------
def check_login_push_pull_run(path: str, host: str, ca_pem: bytes, busybox_rootfs: str):
    """login, push, pull and run with everything in ``path`` (the worker's own environment);
    (config.json's mode, pushed digest, pulled digest, exit code, logout's answer)."""
    certs = os.path.join(path, "certs.d", host)
    os.makedirs(certs)
    with open(os.path.join(certs, "ca.crt"), "wb") as f:
        f.write(ca_pem)
    with open(os.path.join(path, "registries.json"), "w") as f:
        f.write("{}")
    places = {
        "SANDBOXLIB_CERTS_D": os.path.join(path, "certs.d"),
        "SANDBOXLIB_REGISTRIES": os.path.join(path, "registries.json"),
        "DOCKER_CONFIG": os.path.join(path, "docker"),
        "XDG_RUNTIME_DIR": os.path.join(path, "run"),
    }
    with environment(**places):
        forget_tokens()
        where = sb.login(host, "alice", PASSWORD)
        src = sb.ImageStore(os.path.join(path, "src"))
        add_image(src, busybox_layers(busybox_rootfs)[:1], ["auth:1"], config=CONFIG)
        ref = f"{host}/auth/{os.getuid()}:1"
        digest = src.push("auth:1", ref)
        forget_tokens()
        pulled = sb.ImageStore(os.path.join(path, "dst")).pull(ref)
        code = sb.run(None, image=ref, image_store=os.path.join(path, "dst")).exit_code
        out = sb.logout(host)
        forget_tokens()
    return stat.S_IMODE(os.stat(where).st_mode), digest, pulled.digest, code, out


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_login_push_pull_run_root_and_rootless(
    runner, store_dir, ca, busybox_root, basic_registry, token_registry, kind
):
    server = basic_registry if kind == "basic" else token_registry
    mode, digest, pulled, code, out = runner(check_login_push_pull_run, store_dir, server.host, ca.pem, busybox_root)
    assert (mode, pulled, code, out) == (0o600, digest, 0, True)


# -- credential helpers ---------------------------------------------------------------------------
HELPER = """#!{python}
import json, os, sys
path = {store!r}
saved = json.load(open(path)) if os.path.exists(path) else {{}}
action = sys.argv[1]
data = sys.stdin.read()
with open(path + ".log", "a") as log:
    log.write(action + "\\n")
if action == "get":
    if data.strip() not in saved:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps(saved[data.strip()]))
elif action == "store":
    entry = json.loads(data)
    saved[entry["ServerURL"]] = {{"ServerURL": entry["ServerURL"], "Username": entry["Username"],
                                 "Secret": entry["Secret"]}}
elif action == "erase":
    if saved.pop(data.strip(), None) is None:
        sys.exit(1)
json.dump(saved, open(path, "w"))
"""


def _helper(places, monkeypatch, name="sbtest"):
    bin_dir = places / "bin"
    bin_dir.mkdir(exist_ok=True)
    store = places / f"{name}-store.json"
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(HELPER.format(python=sys.executable, store=str(store)))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return store


@pytest.mark.parametrize("how", ["credsStore", "credHelpers"])
def test_credential_helper(basic_registry, places, tmp_path, monkeypatch, how):
    store = _helper(places, monkeypatch)
    (places / "docker").mkdir()
    config = {"credsStore": "sbtest"} if how == "credsStore" else {"credHelpers": {basic_registry.host: "sbtest"}}
    (places / "docker" / "config.json").write_text(json.dumps(config))
    assert sb.login(basic_registry.host, "alice", PASSWORD) == "docker-credential-sbtest"
    assert _config(places) == config  # the secret went to the helper only
    assert json.loads(store.read_text())[basic_registry.host]["Secret"] == PASSWORD
    ref = f"{basic_registry.host}/auth/helper:1"
    digest = _push_one(tmp_path, ref)
    forget_tokens()
    assert sb.ImageStore(str(tmp_path / "store")).pull(ref).digest == digest
    assert "get" in store.with_suffix(".json.log").read_text().split()
    assert sb.logout(basic_registry.host) is True and json.loads(store.read_text()) == {}


def test_missing_helper_is_named(places, monkeypatch):
    (places / "docker").mkdir()
    (places / "docker" / "config.json").write_text(json.dumps({"credsStore": "nosuchhelper"}))
    with pytest.raises(ConfigError, match="docker-credential-nosuchhelper"):
        lookup("reg.example.com")


# -- bearer tokens -----------------------------------------------------------------------------------
def test_token_auth_with_a_realm_on_another_host(token_registry, issuer, places, tmp_path):
    ref = f"{token_registry.host}/auth/token:1"
    with pytest.raises(RegistryAuthError) as anonymous:
        sb.ImageStore(str(tmp_path / "anon")).pull(ref)
    assert "anonymous access" in str(anonymous.value)
    with pytest.raises(RegistryAuthError) as wrong:
        sb.login(token_registry.host, "alice", "wrong-" + PASSWORD)
    assert "'alice'" in str(wrong.value) and "token service localhost" in str(wrong.value)
    _no_secret(wrong.value)
    sb.login(token_registry.host, "alice", PASSWORD)
    del issuer.requests[:]
    digest = _push_one(tmp_path, ref)
    assert ("alice", ("repository:auth/token:pull,push",)) in issuer.requests
    del issuer.requests[:]
    store = sb.ImageStore(str(tmp_path / "store"))
    assert store.pull(ref).digest == digest
    assert issuer.requests == [("alice", ("repository:auth/token:pull",))]
    sb.ImageStore(str(tmp_path / "store2")).pull(ref)
    store.pull(ref)
    assert len(issuer.requests) == 1  # the token is cached per scope


def test_refused_token_is_fetched_again(token_registry, issuer, places, tmp_path):
    ref = f"{token_registry.host}/auth/refresh:1"
    sb.login(token_registry.host, "alice", PASSWORD)
    digest = _push_one(tmp_path, ref)
    sb.ImageStore(str(tmp_path / "first")).pull(ref)  # caches a pull token
    # That token goes bad (revoked, expired early): here, replaced by one the registry does not trust.
    ((key, (token, expiry)),) = [item for item in auth._tokens.items() if item[0][2].endswith(":pull")]
    issuer.spoil = 1
    auth._tokens[key] = (issuer.token("alice", ("repository:auth/refresh:pull",)), expiry)
    del issuer.requests[:]
    assert sb.ImageStore(str(tmp_path / "store")).pull(ref).digest == digest
    assert issuer.requests == [("alice", ("repository:auth/refresh:pull",))]  # fetched again, once


def test_token_refused_twice_is_an_auth_error(token_registry, issuer, places, tmp_path):
    ref = f"{token_registry.host}/auth/refused:1"
    sb.login(token_registry.host, "alice", PASSWORD)
    issuer.spoil = 2
    try:
        with pytest.raises(RegistryAuthError) as err:
            sb.ImageStore(str(tmp_path / "store")).pull(ref)
    finally:
        issuer.spoil = 0
    assert err.value.status == 401 and "refused the credentials of 'alice'" in str(err.value)
    _no_secret(err.value)


# -- the command line -------------------------------------------------------------------------------------
def test_cli_login_logout(basic_registry, places):
    wrong = sandboxlib_cli("login", "-u", "alice", "--password-stdin", basic_registry.host, input="nope\n", text=True)
    assert wrong.returncode != 0 and "'alice'" in wrong.stderr and "nope" not in wrong.stderr + wrong.stdout
    done = sandboxlib_cli(
        "login", "-u", "alice", "--password-stdin", basic_registry.host, input=PASSWORD + "\n", text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("Login Succeeded"), done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert base64.b64decode(_config(places)["auths"][basic_registry.host]["auth"]) == f"alice:{PASSWORD}".encode()
    out = sandboxlib_cli("logout", basic_registry.host, text=True)
    assert (out.returncode, out.stdout) == (0, f"Removing login credentials for {basic_registry.host}\n")
    again = sandboxlib_cli("logout", basic_registry.host, text=True)
    assert again.stdout == f"Not logged in to {basic_registry.host}\n"


# -- identity tokens (OAuth2 refresh grants) -------------------------------------------------------------
IDENTITY_TOKEN = "rt-Zm9vYmFyYmF6-identity"


def _no_identity_token(err) -> None:
    for text in (str(err), repr(err), repr(err.args)):
        assert IDENTITY_TOKEN not in text


@pytest.mark.parametrize("where", ["auths", "credHelpers"])
def test_identity_token_is_a_refresh_grant(token_registry, issuer, places, tmp_path, monkeypatch, where):
    """config.json's identitytoken (or a helper's <token> user) asks for bearer tokens with
    OAuth2's refresh grant (a POST), never with a password."""
    issuer.refresh_tokens[IDENTITY_TOKEN] = "alice"
    (places / "docker").mkdir()
    if where == "auths":
        config: dict = {"auths": {token_registry.host: {"identitytoken": IDENTITY_TOKEN}}}
    else:
        store = _helper(places, monkeypatch)
        entry = {"ServerURL": token_registry.host, "Username": "<token>", "Secret": IDENTITY_TOKEN}
        store.write_text(json.dumps({token_registry.host: entry}))
        config = {"credHelpers": {token_registry.host: "sbtest"}}
    (places / "docker" / "config.json").write_text(json.dumps(config))
    assert "identity_token=<hidden>" in repr(lookup(token_registry.host))
    ref = f"{token_registry.host}/auth/identity-{where.lower()}:1"
    del issuer.requests[:]
    digest = _push_one(tmp_path, ref)
    repository = ref.split("/", 1)[1].split(":")[0]
    assert issuer.requests == [("refresh:alice", (f"repository:{repository}:pull,push",))]
    del issuer.requests[:]
    assert sb.ImageStore(str(tmp_path / "store")).pull(ref).digest == digest
    assert issuer.requests == [("refresh:alice", (f"repository:{repository}:pull",))]


def test_unknown_identity_token_is_refused(token_registry, issuer, places, tmp_path):
    (places / "docker").mkdir()
    config = {"auths": {token_registry.host: {"identitytoken": IDENTITY_TOKEN + "-revoked"}}}
    (places / "docker" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RegistryAuthError) as err:
        sb.ImageStore(str(tmp_path / "store")).pull(f"{token_registry.host}/auth/identity:1")
    assert err.value.status == 400 and "refused the identity token stored" in str(err.value)
    assert issuer.requests[-1] == ("refresh:?", ("repository:auth/identity:pull",))
    _no_identity_token(err.value)


# -- redirects ---------------------------------------------------------------------------------------------
def test_redirected_blobs_never_carry_credentials(basic_registry, places, tmp_path, ca):
    """Blob GETs answered with a 307 to blob storage on another host (as distribution's
    redirect middleware and CDNs do) are followed without the registry's credentials:
    the storage server (its own credentials injected, as a signed URL carries them)
    sees none, while the registry's own requests carried them."""
    sb.login(basic_registry.host, "alice", PASSWORD)
    ref = f"{basic_registry.host}/auth/redirect:1"
    digest = _push_one(tmp_path, ref)
    image = sb.ImageStore(str(tmp_path / "src")).get("auth:1")
    blobs = [layer.digest for layer in image.layers] + [image.id]
    tls = ssl.create_default_context(cadata=ca.pem.decode())
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    storage = FaultProxy(basic_registry.host, {}, upstream_tls=tls, inject={"Authorization": basic})
    storage_url = "http://localhost:" + storage.host.rsplit(":", 1)[1]  # another host than 127.0.0.1
    front = FaultProxy(
        basic_registry.host,
        {f"blobs/{blob}": "redirect" for blob in blobs},
        upstream_tls=tls,
        redirect_to=storage_url,
    )
    try:
        sb.login(front.host, "alice", PASSWORD)
        forget_tokens()
        assert sb.ImageStore(str(tmp_path / "store")).pull(f"{front.host}/auth/redirect:1").digest == digest
    finally:
        front.close()
        storage.close()
    redirected = [e for e in front.log if e["method"] == "GET" and "/blobs/" in e["path"]]
    fetched = [e for e in storage.log if e["method"] == "GET"]
    assert len(redirected) == len(fetched) == len(blobs)
    assert all(e["authorization"] is None for e in fetched)
    assert all(e["authorization"] == basic for e in redirected)  # the registry got them
