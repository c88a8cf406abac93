"""The image commands of the command line: ``images``, ``load``, ``save``,
``import``, ``rmi``, ``pull``, ``push``, ``login``, ``logout`` (``run IMAGE`` is in ``cli``)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Callable, Dict

from ..errors import ConfigError
from ..images import default_home
from ..registry import login, logout
from ..runtime import ImageStore
from . import pullprogress

__all__ = ["add_parsers", "COMMANDS"]


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="image store (default: $SANDBOXLIB_HOME, /var/lib/sandboxlib as root, ~/.local/share/sandboxlib)",
    )


def add_parsers(sub) -> None:
    p = sub.add_parser("images", help="list the images in the store")
    add_store_option(p)
    p = sub.add_parser("load", help="import a docker save archive or an OCI layout (dir or tar)")
    p.add_argument("-i", "--input", required=True, metavar="FILE")
    add_store_option(p)
    p = sub.add_parser("save", help="write images to a docker save / OCI archive")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_store_option(p)
    p = sub.add_parser("import", help="make an image of a root file system tarball (plain, gzip, zstd)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("ref", nargs="?", metavar="REF")
    p.add_argument(
        "-c",
        "--change",
        action="append",
        metavar="INSTRUCTION",
        help="a Dockerfile instruction to apply to the image's config, as docker import takes it "
        "(CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR); may be repeated",
    )
    add_store_option(p)
    p = sub.add_parser("rmi", help="remove images (by name:tag, digest or id)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_store_option(p)
    p = sub.add_parser("pull", help="pull an image from a registry (alpine = docker.io/library/alpine:latest)")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--platform", metavar="OS/ARCH", help="of a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the image's digest only")
    add_store_option(p)
    p = sub.add_parser("push", help="push an image to a registry")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", nargs="?", metavar="DEST", help="where to (default: SRC's own name)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the manifest digest only")
    add_store_option(p)
    p = sub.add_parser("login", help="check credentials against a registry and keep them (as docker login)")
    p.add_argument("registry", metavar="REGISTRY")
    p.add_argument("-u", "--username", metavar="USER")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub.add_parser("logout", help="forget the credentials kept for a registry")
    p.add_argument("registry", metavar="REGISTRY")


def _images(args: argparse.Namespace) -> int:
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "SIZE")]
    home = args.store or default_home()
    # No store yet: nothing to list, and listing makes none (as root, /var/lib/sandboxlib).
    images = ImageStore(home).list() if os.path.exists(os.path.join(home, "images", "oci-layout")) else []
    for image in images:
        for ref in image.references or ("<none>:<none>",):
            name, _, tag = ref.rpartition(":")
            rows.append((name, tag, image.id[7:19], str(len(image.layers)), _size(image.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return ""


def _load(args: argparse.Namespace) -> int:
    for image in ImageStore(args.store).load(args.input):
        for ref in image.references or (image.id,):
            print(f"Loaded image: {ref}")
    return 0


def _save(args: argparse.Namespace) -> int:
    ImageStore(args.store).save(args.images, args.output)
    return 0


def _import(args: argparse.Namespace) -> int:
    print(ImageStore(args.store).import_rootfs(args.file, args.ref, changes=args.change).id)
    return 0


def _rmi(args: argparse.Namespace) -> int:
    store = ImageStore(args.store)
    for ref in args.images:
        for removed in store.remove(ref):
            print(f"Untagged: {removed}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    display = None if args.quiet else pullprogress.for_stream(sys.stdout)
    try:
        image = ImageStore(args.store).pull(args.ref, platform=args.platform, progress=display)
    finally:
        if display is not None:
            display.close()
    if args.quiet:
        print(image.digest)
    else:
        print(f"Digest: {image.repo_digests[0] if image.repo_digests else image.digest}")
        print(f"Pulled: {image.references[0] if image.references else image.digest}")
    return 0


def _push(args: argparse.Namespace) -> int:
    digest = ImageStore(args.store).push(args.src, args.dest)
    print(digest if args.quiet else f"{args.dest or args.src}: digest: {digest}")
    return 0


def _login(args: argparse.Namespace) -> int:
    username = args.username
    if not username:
        if args.password_stdin:
            raise ConfigError("--username", "is needed with --password-stdin")
        username = input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
    where = login(args.registry, username, password)
    print(f"Login Succeeded (credentials kept in {where})")
    return 0


def _logout(args: argparse.Namespace) -> int:
    if logout(args.registry):
        print(f"Removing login credentials for {args.registry}")
    else:
        print(f"Not logged in to {args.registry}")
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "images": _images,
    "load": _load,
    "save": _save,
    "import": _import,
    "rmi": _rmi,
    "pull": _pull,
    "push": _push,
    "login": _login,
    "logout": _logout,
}
