"""``sandboxlib daemon``: serve Docker's Engine API on a UNIX socket, or on
TCP with mutual TLS (dockerd's ``--tlsverify`` flags)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..daemon import TlsFiles, default_host, serve
from ..errors import ConfigError

__all__ = ["add_parser", "COMMANDS"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "daemon",
        help="serve Docker's Engine API on a UNIX socket (DOCKER_HOST=unix://...) or TCP with mutual TLS",
        description="Serve Docker's Engine API (1.44) so that docker, docker-py and testcontainers run "
        "sandboxlib containers.  Access to a root daemon's socket is as good as root on this host. "
        "Stopping the daemon stops its containers.  A tcp://HOST:PORT host needs --tlsverify and the three "
        "files: clients must present a certificate signed by the CA (there is no plain TCP).",
    )
    p.add_argument(
        "-H",
        "--host",
        default=None,
        metavar="unix:///PATH|tcp://HOST:PORT",
        help=f"where to listen (default: {default_host()})",
    )
    p.add_argument("--tlsverify", action="store_true", help="TLS, and clients must present a certificate the CA signed")
    p.add_argument("--tlscacert", metavar="FILE", help="the CA that signs the clients' certificates (PEM)")
    p.add_argument("--tlscert", metavar="FILE", help="the daemon's certificate (PEM)")
    p.add_argument("--tlskey", metavar="FILE", help="the daemon's key (PEM)")
    p.add_argument("--group", default=None, metavar="G", help="as root: the socket's group (0660; created if missing)")
    p.add_argument(
        "--store",
        metavar="DIR",
        help="image store (default: $SANDBOXLIB_HOME, /var/lib/sandboxlib as root, ~/.local/share/sandboxlib)",
    )
    p.add_argument(
        "--default-network",
        choices=("bridge", "none", "host"),
        default=None,
        help="the network of a container that names none (default: bridge as root, as Docker's; none rootless)",
    )


def _tls(args: argparse.Namespace):
    files = {"tlscacert": args.tlscacert, "tlscert": args.tlscert, "tlskey": args.tlskey}
    if not args.tlsverify:
        given = [f"--{name}" for name, value in files.items() if value]
        if given:
            raise ConfigError("tlsverify", f"{', '.join(given)} without --tlsverify (TLS here is always mutual)")
        return None
    missing = [f"--{name}" for name, value in files.items() if not value]
    if missing:
        raise ConfigError("tlsverify", f"--tlsverify needs {', '.join(missing)}")
    return TlsFiles(ca=args.tlscacert, cert=args.tlscert, key=args.tlskey)


def _daemon(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="sandboxlib daemon: %(message)s", stream=sys.stderr)
    try:
        tls = _tls(args)
        asyncio.run(
            serve(
                args.host or default_host(),
                group=args.group,
                store=args.store,
                network=args.default_network,
                tls=tls,
            )
        )
    except ModuleNotFoundError as err:
        if err.name != "aiohttp":
            raise
        print("sandboxlib: the daemon needs aiohttp: pip install 'sandboxlib[daemon]'", file=sys.stderr)
        return 125
    return 0


COMMANDS = {"daemon": _daemon}
