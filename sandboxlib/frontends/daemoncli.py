"""``sandboxlib daemon``: serve Docker's Engine API on a UNIX socket."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..daemon import default_host, serve

__all__ = ["add_parser", "COMMANDS"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "daemon",
        help="serve Docker's Engine API on a UNIX socket (DOCKER_HOST=unix://...)",
        description="Serve Docker's Engine API (1.44) so that docker, docker-py and testcontainers run "
        "sandboxlib containers.  Access to a root daemon's socket is as good as root on this host. "
        "Stopping the daemon stops its containers.",
    )
    p.add_argument("--host", default=None, metavar="unix:///PATH", help=f"the socket (default: {default_host()})")
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


def _daemon(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="sandboxlib daemon: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(
            serve(args.host or default_host(), group=args.group, store=args.store, network=args.default_network)
        )
    except ModuleNotFoundError as err:
        if err.name != "aiohttp":
            raise
        print("sandboxlib: the daemon needs aiohttp: pip install 'sandboxlib[daemon]'", file=sys.stderr)
        return 125
    return 0


COMMANDS = {"daemon": _daemon}
