"""The daemon as a whole: its context (image store, containers, execs,
events, state directory) and its life: bind (a UNIX socket, or TCP with
mutual TLS), serve, and on SIGTERM/SIGINT stop its containers, then go (the
socket removed, the lock released)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
from typing import Callable, Dict, Optional, Tuple

from aiohttp import web

from ..errors import ConfigError, ImageNotFound
from ..images import Image, default_home
from ..runtime import ImageStore
from . import builds, containers, events, exec, exports, files, images, networks, output, stats, system, volumes
from .apierrors import no_such_image
from .events import Events
from .hosts import default_host, is_tcp, socket_path, tcp_address
from .kept_layer import sweep_kept_layers
from .registry_of_containers import Containers
from .server import bind_socket, bind_tcp, build_app, stop_signals
from .tls import TlsFiles, server_context
from .tlsfront import TlsFront

__all__ = ["Context", "default_network", "serve"]

LOG = logging.getLogger("sandboxlib.daemon")
SHORT_ID = re.compile(r"^(sha256:)?[0-9a-f]{4,64}$")  # (a bare whole id too: docker-py asks for one)
ROUTES = (
    system.ROUTES
    + containers.ROUTES
    + output.ROUTES
    + exec.ROUTES
    + files.ROUTES
    + exports.ROUTES
    + stats.ROUTES
    + images.ROUTES
    + builds.ROUTES
    + volumes.ROUTES
    + networks.ROUTES
    + events.ROUTES
)


class Context:
    """What every handler reaches as ``request.app["context"]``."""

    def __init__(self, store_path: str, state_dir: str, default_network: str = "none") -> None:
        self.store_path = store_path
        self.default_network = default_network  # a container's NetworkMode "" or "default"
        self.network_labels: Dict[str, Dict[str, str]] = {}  # (the library's networks have no labels)
        self.state_dir = state_dir
        self.events = Events()
        self.containers = Containers(state_dir, self.events)
        self.execs: Dict[str, object] = {}
        # A commit's image -> the image of its container (inspect's Parent; kept in
        # memory: Docker keeps it in its image metadata, the store has no place for it).
        self.image_parents: Dict[str, str] = {}

    def store(self) -> ImageStore:
        return ImageStore(self.store_path)

    async def image(self, ref: str) -> Image:
        try:
            return await asyncio.to_thread(self.store().get, ref)
        except ImageNotFound:
            pass
        if SHORT_ID.match(ref):  # an id's unique prefix, as Docker's ("Successfully built 0123456789ab")
            prefix = ref.rpartition(":")[2]
            found = [
                i for i in await asyncio.to_thread(self.store().list) if i.id.rpartition(":")[2].startswith(prefix)
            ]
            if len(found) == 1:
                return found[0]
        raise no_such_image(ref)


def default_network() -> str:
    """As root ``bridge``, as Docker's; rootless ``none``: a rootless bridge is a
    pasta process per container (``--network bridge`` or ``--default-network bridge`` asks for it)."""
    return "bridge" if os.geteuid() == 0 else "none"


def _listen(host: str, group: Optional[str], tls: Optional[TlsFiles]) -> Tuple[socket.socket, int, str, Optional[str]]:
    """(listening socket, its lock, the state directory's base, the UNIX socket's path or None)."""
    if not is_tcp(host):
        if tls is not None:
            raise ConfigError("tlsverify", "TLS is for a tcp://HOST:PORT host; a UNIX socket is guarded by its mode")
        path = socket_path(host)
        sock, lock = bind_socket(path, group)
        return sock, lock, path, path
    if tls is None:
        raise ConfigError(
            "host",
            f"{host}: a TCP host needs mutual TLS: --tlsverify --tlscacert CA --tlscert CERT --tlskey KEY "
            "(there is no plain TCP: whoever reaches the API runs anything as the daemon's user)",
        )
    address, port = tcp_address(host)
    base = os.path.join(os.path.dirname(socket_path(default_host())), f"tcp-{address}-{port}")
    sock, lock = bind_tcp(address, port, base + ".lock")
    return sock, lock, base, None


async def serve(
    host: str,
    *,
    group: Optional[str] = None,
    store: Optional[str] = None,
    network: Optional[str] = None,
    tls: Optional[TlsFiles] = None,
    ready: Optional[Callable[[], None]] = None,
) -> None:
    """Serve the Engine API on ``host`` (``unix:///path``, or ``tcp://HOST:PORT`` with
    ``tls``: clients must present a certificate its CA signed) until SIGTERM or SIGINT;
    ``network``: the containers' default network (see :func:`default_network`)."""
    context_ssl = server_context(tls) if tls is not None else None  # (bad files: refused before binding)
    sock, lock, base, path = _listen(host, group, tls)
    state_dir = base + ".state"  # logs, saves and loads in flight: a killed daemon's are removed here
    shutil.rmtree(state_dir, ignore_errors=True)  # (the lock is ours: nobody else uses them)
    os.mkdir(state_dir, 0o700)
    context = Context(os.path.abspath(store or default_home()), state_dir, network or default_network())
    await asyncio.to_thread(sweep_kept_layers, context.store_path)  # a SIGKILLed daemon's containers' layers
    # handler_cancellation: a client that goes away cancels its handler (a wait, an events or
    # stats stream would otherwise hold its queue until its next write fails)
    runner = web.AppRunner(build_app(context, ROUTES), access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
    front: Optional[TlsFront] = None
    try:
        await runner.setup()
        if context_ssl is None:
            await web.SockSite(runner, sock).start()
        else:
            front = TlsFront(sock, context_ssl, runner.server)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in stop_signals():
            loop.add_signal_handler(sig, stop.set)
        LOG.info("sandboxlib daemon listening on %s", host if path is None else f"unix://{path}")
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        if front is not None:
            front.close()
        await context.containers.shutdown()
        await runner.cleanup()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            # (a TCP daemon's lock file too: the port, held until now, keeps a second one out)
            os.unlink(path if path is not None else base + ".lock")
        os.close(lock)
        shutil.rmtree(state_dir, ignore_errors=True)
