"""The daemon's HTTP side: its UNIX socket (permissions, one daemon per
socket), the versioned routes of every endpoint module, Docker-shaped errors.

aiohttp, because the daemon is an asyncio program (the library's ``aio``
front) and needs an HTTP/1.1 server that streams responses (logs, events,
pulls, wait) and lets a handler take the connection over (attach and exec's
``101 UPGRADED``), on a socket we bind ourselves; it is well kept and small."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import grp
import json
import logging
import os
import signal
import socket
import stat
import subprocess
from typing import Any, Awaitable, Callable, Iterable, Optional, Tuple

from aiohttp import web

from ..errors import SandboxError
from .apierrors import ApiError, error_response, library_error
from .hosts import API_VERSION

__all__ = [
    "API_VERSION",
    "MIN_API_VERSION",
    "Route",
    "bind_socket",
    "bind_tcp",
    "build_app",
    "flush_headers",
    "json_body",
    "json_response",
    "query_bool",
    "query_int",
]

MIN_API_VERSION = "1.24"
MAX_BODY = 4 << 20  # a JSON request body (image and archive uploads are streamed, not bounded by it)
LOG = logging.getLogger("sandboxlib.daemon")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Tuple[str, str, Handler]


def _lock(path: str, what: str) -> int:
    """``path`` (made if missing) held with ``flock`` as long as the daemon runs: one daemon per ``what``."""
    os.makedirs(os.path.dirname(path), mode=0o755 if os.geteuid() == 0 else 0o700, exist_ok=True)
    _check_ours(os.path.dirname(path))
    lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise SandboxError(f"another sandboxlib daemon serves {what} (it holds {path})") from None
    return lock


def _check_ours(directory: str) -> None:
    """Refuse a directory another user could change (or one of its parents): they could
    put a socket of theirs in the daemon's place, or swap its state directory for a
    symlink.  Each must be ours or root's, and writable by nobody else unless sticky
    (/tmp).  A default socket under /tmp/sandboxlib-UID someone else made first is one."""
    me = os.geteuid()
    path = os.path.realpath(directory)
    while True:
        st = os.stat(path)
        if st.st_uid not in (0, me) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            owner = f"owned by uid {st.st_uid}" if st.st_uid not in (0, me) else f"mode {stat.S_IMODE(st.st_mode):o}"
            raise SandboxError(
                f"{path} is {owner}: another user could replace the daemon's socket or state there "
                f"(use a directory of your own, mode 0700 or 0755)"
            )
        if path == "/":
            return
        path = os.path.dirname(path)


def bind_socket(path: str, group: Optional[str]) -> Tuple[socket.socket, int]:
    """The listening socket at ``path`` and the lock that makes it ours.

    One daemon per socket: ``PATH.lock`` is held (``flock``) as long as the
    daemon runs; a socket left by a dead daemon is replaced, one something
    answers on is refused.  As root the socket is 0660 with ``group``
    (created if missing); rootless 0600: access to a root daemon's socket is
    as good as root on this host, as Docker's."""
    lock = _lock(path + ".lock", path)
    try:
        if os.path.lexists(path):
            if _answers(path):
                raise SandboxError(f"a server already listens on {path}: stop it, or give another --host")
            os.unlink(path)  # stale: its daemon is gone
        gid = _group_id(group) if os.geteuid() == 0 else None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            if gid is not None:
                os.chown(path, 0, gid)
                os.chmod(path, 0o660)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
    except BaseException:
        os.close(lock)
        raise
    return sock, lock


def bind_tcp(address: str, port: int, lock_path: str) -> Tuple[socket.socket, int]:
    """A listening TCP socket on ``address:port`` (served only with mutual TLS)
    and the lock of its state (``lock_path``)."""
    lock = _lock(lock_path, f"tcp://{address}:{port}")
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (a past daemon's TIME_WAIT)
            try:
                sock.bind((address, port))
            except OSError as err:
                raise SandboxError(f"cannot listen on tcp://{address}:{port}: {err.strerror}") from None
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except BaseException:
        os.close(lock)
        raise
    return sock, lock


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        return True
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()


def _group_id(name: Optional[str]) -> int:
    """The socket's group: ``name`` (made with groupadd if missing), else root's."""
    if not name:
        return 0
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        return grp.getgrnam(name).gr_gid


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@web.middleware
async def _docker_shaped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API version of a ``/vX.Y/`` prefix checked; every failure as Docker's JSON error."""
    try:
        asked = request.match_info.get("api_version")
        if asked:
            asked = asked[1:]
            if _version(asked) > _version(API_VERSION):
                raise ApiError(
                    400, f"client version {asked} is too new. Maximum supported API version is {API_VERSION}"
                )
            if _version(asked) < _version(MIN_API_VERSION):
                raise ApiError(
                    400,
                    f"client version {asked} is too old. Minimum supported API version is {MIN_API_VERSION}, "
                    "please upgrade your client to a newer version",
                )
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.message)
    except SandboxError as err:
        api = library_error(err)
        return error_response(api.status, api.message)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"request body larger than {MAX_BODY} bytes")
    except web.HTTPException as err:
        if err.status == 404:
            return error_response(404, "page not found")
        return error_response(err.status, err.reason)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as err:  # noqa: BLE001  (the daemon lives on; the client learns what broke)
        LOG.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{type(err).__name__}: {err}")


def build_app(context: object, routes: Iterable[Route]) -> web.Application:
    """Every route, unversioned and under ``/vX.Y/``; the daemon's context as ``app["context"]``."""
    app = web.Application(middlewares=[_docker_shaped], client_max_size=MAX_BODY)
    app["context"] = context
    for method, path, handler in routes:
        # a container's name may be a link's, PARENT/ALIAS: a slash in {id}, as dockerd takes it
        path = path.replace("/containers/{id}", "/containers/{id:.+}")
        app.router.add_route(method, path, handler)
        app.router.add_route(method, r"/{api_version:v[0-9]+\.[0-9]+}" + path, handler)
    return app


async def json_body(request: web.Request, *, required: bool = True) -> dict:
    """The request's JSON object (an absent body: ``{}`` unless required)."""
    data = await request.read()
    if not data.strip():
        if required:
            raise ApiError(400, "a JSON body is required")
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"invalid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"invalid JSON: expected an object, got {type(body).__name__}")
    return body


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter, as Docker reads them (1/0/true/false/True/False)."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "t"):
        return True
    if value.lower() in ("0", "false", "f"):
        return False
    raise ApiError(400, f"invalid value for {name}: {value!r} is not a boolean")


def query_int(request: web.Request, name: str, default: Optional[int] = None) -> Optional[int]:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {value!r} is not an integer") from None


def stop_signals() -> Tuple[int, ...]:
    return (signal.SIGTERM, signal.SIGINT)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(value).encode(), headers={"Content-Type": "application/json"})


async def flush_headers(response: web.StreamResponse, request: web.Request) -> None:
    """Send the status and headers now (aiohttp holds them for the first body bytes)."""
    writer = request.writer
    if hasattr(writer, "send_headers"):
        writer.send_headers()
    else:
        await response.write(b"\n")
