"""Registry credentials where Docker and podman keep them, read and written
as they do.  The secret of a :class:`Credentials` never shows in its repr,
in logs or in exceptions.

Looked up, first found wins:

1. Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``): ``credHelpers[registry]`` names a credential
   helper for that registry, else ``credsStore`` one for all, else
   ``auths[registry].auth`` holds ``base64(user:password)`` and/or
   ``auths[registry].identitytoken`` an OAuth2 refresh token (what ``docker
   login`` keeps for a registry whose token service issued one).  A helper is the
   program ``docker-credential-NAME`` on ``PATH``, spoken to with Docker's
   protocol (``get``/``store``/``erase``, the server on stdin, JSON out); its
   ``Username`` ``<token>`` means the ``Secret`` is an identity token.
2. containers' ``auth.json`` (``$REGISTRY_AUTH_FILE``, else
   ``$XDG_RUNTIME_DIR/containers/auth.json``): ``auths[registry].auth``.

Keys of ``auths`` are matched as Docker matches them: ``host:port``, or a URL
with that host (``https://host/v1/``); Docker Hub is
``https://index.docker.io/v1/``.  :func:`store` and :func:`erase` change
``config.json`` (mode 0600, replaced atomically) or its helper, as ``docker
login`` and ``docker logout`` do."""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import tempfile
from typing import Optional, Tuple

import attrs

from ..errors import ConfigError
from .names import DOCKER_HUB

__all__ = ["Credentials", "lookup", "store", "erase", "docker_config_path", "auth_json_path"]

HUB_KEY = "https://index.docker.io/v1/"  # Docker Hub's key in config.json, as docker login writes it
HELPER_TIMEOUT = 30


IDENTITY_TOKEN_USER = "<token>"  # a helper's Username when its Secret is an identity token (Docker's)


@attrs.frozen
class Credentials:
    """A user name and its secret (a password or a token), and/or an identity
    token (an OAuth2 refresh token: bearer tokens are asked for with it instead
    of the password); the secrets are never shown."""

    username: str
    password: str = attrs.field(repr=False)
    identity_token: Optional[str] = attrs.field(default=None, repr=False, kw_only=True)

    def __repr__(self) -> str:
        token = ", identity_token=<hidden>" if self.identity_token else ""
        return f"Credentials(username={self.username!r}, password=<hidden>{token})"

    __str__ = __repr__


def docker_config_path() -> str:
    top = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(top, "config.json")


def auth_json_path() -> Optional[str]:
    chosen = os.environ.get("REGISTRY_AUTH_FILE")
    if chosen:
        return chosen
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "containers", "auth.json") if runtime else None


def _key(registry: str) -> str:
    return HUB_KEY if registry == DOCKER_HUB else registry


def _host_of_key(key: str) -> str:
    """``https://host:port/v1/`` or ``host:port`` -> ``host:port`` (Docker Hub's aliases -> docker.io)."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io", "docker.io") else host


def _read_json(path: Optional[str]) -> dict:
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read(4 << 20))
    except OSError as err:
        raise ConfigError("credentials", f"{path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError("credentials", f"{path} is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError("credentials", f"{path} is not a JSON object")
    return document


def _from_auths(document: dict, registry: str, path: str) -> Optional[Credentials]:
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _host_of_key(key) != registry or not isinstance(entry, dict):
            continue
        token = entry.get("identitytoken")
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigError("credentials", f"{path}: auths[{key!r}].identitytoken is not a token (a string)")
        if not entry.get("auth"):
            if token:
                return Credentials(IDENTITY_TOKEN_USER, "", identity_token=token)
            continue
        try:
            user, colon, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
            raise ConfigError("credentials", f"{path}: auths[{key!r}].auth is not base64 of user:password") from None
        if not colon:
            raise ConfigError("credentials", f"{path}: auths[{key!r}].auth is not base64 of user:password")
        return Credentials(user, password, identity_token=token)
    return None


def _helper_of(document: dict, registry: str) -> Optional[str]:
    helpers = document.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _host_of_key(key) == registry and isinstance(name, str) and name:
                return name
    store_name = document.get("credsStore")
    return store_name if isinstance(store_name, str) and store_name else None


def _helper(name: str, action: str, data: str) -> Tuple[int, str]:
    """Run ``docker-credential-NAME ACTION`` with ``data`` on stdin: (exit status, stdout).
    Its stderr is not kept: a helper may echo what it was given."""
    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, action], input=data, capture_output=True, text=True, timeout=HELPER_TIMEOUT)
    except FileNotFoundError:
        raise ConfigError(
            "credentials", f"the credential helper {program} (from {docker_config_path()}) is not on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            "credentials", f"the credential helper {program} did not answer {action!r} within {HELPER_TIMEOUT} s"
        ) from None
    return done.returncode, done.stdout


def _helper_get(name: str, registry: str) -> Optional[Credentials]:
    status, out = _helper(name, "get", _key(registry))
    if status != 0:  # "credentials not found in native keychain" and the like: none for this registry
        return None
    try:
        answer = json.loads(out)
        user, secret = str(answer["Username"]), str(answer["Secret"])
        if user == IDENTITY_TOKEN_USER:
            return Credentials(user, "", identity_token=secret)
        return Credentials(user, secret)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            "credentials",
            f"the credential helper docker-credential-{name} answered 'get' "
            'with something else than {"Username", "Secret"} JSON',
        ) from None


def lookup(registry: str) -> Optional[Credentials]:
    """The credentials for ``registry`` (``host[:port]``, ``docker.io``), or None."""
    path = docker_config_path()
    document = _read_json(path)
    helper = _helper_of(document, registry)
    found = _helper_get(helper, registry) if helper else None
    if found is None:
        found = _from_auths(document, registry, path)
    if found is None:
        containers = auth_json_path()
        found = _from_auths(_read_json(containers), registry, containers or "")
    return found


def _write_config(path: str, document: dict) -> None:
    """Replace config.json atomically, mode 0600 (its directory 0700 when made)."""
    top = os.path.dirname(path)
    os.makedirs(top, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=top, prefix=".config.json.")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(document, f, indent="\t")
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def store(registry: str, credentials: Credentials) -> str:
    """Keep ``credentials`` for ``registry`` as ``docker login`` does; returns where."""
    path = docker_config_path()
    document = _read_json(path)
    helper = _helper_of(document, registry)
    if helper:
        data = json.dumps(
            {"ServerURL": _key(registry), "Username": credentials.username, "Secret": credentials.password}
        )
        status, _ = _helper(helper, "store", data)
        if status != 0:
            raise ConfigError(
                "credentials",
                f"the credential helper docker-credential-{helper} refused to "
                f"store the credentials for {registry} (exit status {status})",
            )
        return f"docker-credential-{helper}"
    auths = document.setdefault("auths", {})
    for key in [k for k in auths if _host_of_key(k) == registry]:
        del auths[key]
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    auths[_key(registry)] = {"auth": token}
    _write_config(path, document)
    return path


def erase(registry: str) -> bool:
    """Forget the credentials for ``registry`` as ``docker logout`` does; False if there were none."""
    path = docker_config_path()
    document = _read_json(path)
    found = False
    helper = _helper_of(document, registry)
    if helper:
        found = _helper(helper, "erase", _key(registry))[0] == 0
    auths = document.get("auths")
    if isinstance(auths, dict):
        keys = [k for k in auths if _host_of_key(k) == registry]
        for key in keys:
            del auths[key]
        if keys:
            found = True
            _write_config(path, document)
    return found
