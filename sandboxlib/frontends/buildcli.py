"""``sandboxlib build``: an image from a Dockerfile, as ``docker build``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict

from ..build import ImageStore
from ..errors import ConfigError
from .imagecli import add_store_option

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(sub) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile (as docker build)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME:TAG", help="name the image (repeatable)")
    p.add_argument("-f", "--file", metavar="DOCKERFILE", help="the Dockerfile (default: PATH/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="a build argument")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label of the image")
    p.add_argument("--target", metavar="STAGE", help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="run every step, even those in the cache")
    networks = ("none", "bridge", "host")
    p.add_argument("--network", default="none", choices=networks, help="RUN's network (default: none)")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line of each RUN's /etc/hosts")
    p.add_argument(
        "--cache-from",
        action="append",
        metavar="IMAGE",
        help="reuse only the cached steps of these images (and their ancestors)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("path", metavar="PATH", help="the build context directory")
    add_store_option(p)


def _pairs(values, option: str) -> Dict[str, str]:
    found = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not key:
            raise ConfigError(option, f"expected KEY=VALUE, got {value!r}")
        found[key] = rest if sep else os.environ.get(key, "")  # docker: a bare KEY takes the environment's
    return found


def _hosts(values) -> Dict[str, str]:
    found = {}
    for value in values:
        name, sep, address = value.partition(":")
        if not sep:
            raise ConfigError("extra_hosts", f"expected NAME:IP, got {value!r}")
        found[name] = address
    return found


def _build(args: argparse.Namespace) -> int:
    dockerfile = os.path.relpath(os.path.abspath(args.file), os.path.abspath(args.path)) if args.file else None
    image = ImageStore(args.store).build(
        args.path,
        tag=args.tag,
        dockerfile=dockerfile,
        build_args=_pairs(args.build_arg, "build_args"),
        labels=_pairs(args.label, "labels"),
        target=args.target,
        network=args.network,
        no_cache=args.no_cache,
        extra_hosts=_hosts(args.add_host),
        cache_from=args.cache_from,
        progress=not args.quiet,
    )
    print(image.id)
    if not args.quiet:
        for ref in image.references:
            print(f"Tagged: {ref}", file=sys.stderr)
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"build": _build}
