"""Files owned by a rootless caller's subordinate ids (/etc/subuid, /etc/subgid).

Rootless with subordinate ranges, a container's ids N > 0 are the host's
start + N - 1, so its image layers must be owned by those ids.  The caller
cannot chown to them, nor delete their files from their directories: only
a process in a user namespace that maps them can (podman does the same in
a user namespace of its own).  Here that process is a short sandbox: the
host view, the trees bound at ``/sbx/N``, and, as its root, this
interpreter running ``images/trees.py`` and ``_subids_worker.py`` (their
source, standard library only).  :class:`ImageStore` is the image store that uses it."""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
from typing import Callable, FrozenSet, Optional, Sequence, Tuple

from .. import images, registry
from ..config import ContainerConfig, IdMapping, Mount
from ..errors import ImageFormatError, SetupError
from ..images import trees
from ..images.store import SubIdFiles
from ..images.unpack import IdPolicy, Owners
from ..native.host import probe_host
from ..rootfs import imageroot
from ..rootfs.idmap import IdMaps, choose_maps
from ..streams import PIPE
from . import subids_worker
from .commands import BareContainer

__all__ = ["ImageStore", "SandboxSubIdFiles"]

WORKER_TIMEOUT = 600.0  # seconds; a chown pass of a large layer takes a few
LIBRARY = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)  # where sandboxlib is imported from


@functools.lru_cache(maxsize=1)
def _worker_source() -> str:
    """The worker's program: the tree walker's source, then the worker's."""
    parts = []
    for module in (trees, subids_worker):
        with open(module.__file__, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def _caller_maps() -> Optional[IdMaps]:
    """The id maps of the caller's default containers."""
    return choose_maps(ContainerConfig(), probe_host())


def _policy_maps(policy: IdPolicy) -> Tuple[Tuple[IdMapping, ...], Tuple[IdMapping, ...]]:
    """The maps of a container whose layers ``policy`` owns (``0 caller 1, 1 start size``)."""
    (uid, gid), (uid_start, gid_start, size) = policy.squash, policy.sub
    return (
        (IdMapping(container=0, host=uid, size=1), IdMapping(container=1, host=uid_start, size=size)),
        (IdMapping(container=0, host=gid, size=1), IdMapping(container=1, host=gid_start, size=size)),
    )


class SandboxSubIdFiles(SubIdFiles):
    """Chowns, removes and archives files of sub-ids in a short sandbox
    (for removal with the caller's default maps, else with those given)."""

    def chown(self, root: str, owners: Owners, policy: IdPolicy) -> None:
        payload = json.dumps({str(ino): list(want) for ino, want in owners.items()}).encode()
        _run("chown", [root], *_policy_maps(policy), input=payload)

    def empty(self, paths: Sequence[str]) -> None:
        maps = _caller_maps()
        _run("empty", paths, maps.uid_map, maps.gid_map, input=b"")

    def transfer(
        self,
        op: str,
        root_fd: int,
        path: str,
        maps: IdMaps,
        data: bytes = b"",
        mode: int = 0,
        *,
        mounts: FrozenSet[str] = frozenset(),
        out: Optional[int] = None,
    ) -> bytes:
        """``sandboxlib.rootfs.transfer``'s ``op`` on ``path`` in the container
        ``root_fd`` whose maps are ``maps``, as its root with its capabilities
        (files of its other users included); returns what read_file and
        get_archive return.  ``mounts``: the container's mount points, archived
        empty; ``out``: an fd the output is written to instead (export)."""
        request = json.dumps({"op": op, "path": path, "mode": mode, "mounts": sorted(mounts)}).encode()
        data_fd = os.memfd_create("sbx-in", os.MFD_CLOEXEC)
        out_fd = os.memfd_create("sbx-out", os.MFD_CLOEXEC) if out is None else os.dup(out)
        try:
            _write_all(data_fd, data)
            os.lseek(data_fd, 0, os.SEEK_SET)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with ours, theirs:
                socket.send_fds(ours, [request], [root_fd, data_fd, out_fd])
                _run("transfer", [], maps.uid_map, maps.gid_map, stdin=theirs.fileno(), library=True)
            if out is not None:
                return b""
            os.lseek(out_fd, 0, os.SEEK_SET)
            with os.fdopen(os.dup(out_fd), "rb") as f:
                return f.read()
        finally:
            os.close(data_fd)
            os.close(out_fd)

    def tar(self, upper_fd: int, out_fd: int, maps: IdMaps) -> None:
        """Write the writable layer ``upper_fd`` of a container with ``maps``
        as a layer tar to ``out_fd``, with the container's ids (the worker's)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:  # a short message: it waits in the socket for the worker
            socket.send_fds(ours, [b"t"], [upper_fd, out_fd])
            _run("tar", [], maps.uid_map, maps.gid_map, stdin=theirs.fileno())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _run(
    op: str,
    trees: Sequence[str],
    uid_map: Tuple[IdMapping, ...],
    gid_map: Tuple[IdMapping, ...],
    *,
    input: Optional[bytes] = None,
    stdin: Optional[int] = None,
    library: bool = False,
) -> None:
    """Run the worker's ``op`` on ``trees`` as the root of a sandbox with
    these maps (``library``: with sandboxlib importable, bound read-only)."""
    mounts = [Mount.bind(path, f"/sbx/{i}") for i, path in enumerate(trees)]
    argv = [sys.executable, "-I", "-S", "-c", _worker_source(), op]
    if library:
        mounts.append(Mount.bind(LIBRARY, LIBRARY, read_only=True))
        argv = argv[:2] + argv[3:] + [LIBRARY]  # with site: cffi's backend is a site package
    container = BareContainer(ContainerConfig(mounts=mounts, uid_map=uid_map, gid_map=gid_map))
    try:
        result = container._run(
            argv,
            input=input,
            timeout=WORKER_TIMEOUT,
            stdin=stdin,
            stdout=PIPE,
            stderr=PIPE,
            env=None,
            cwd=None,
            user=None,
            main=True,
        )
    finally:
        container.close()
    if result.exit_code == 0:
        return
    try:
        kind, *fields = json.loads(result.stdout)
    except ValueError:
        kind, fields = "os", [0, f"{op} ({result.stderr.decode(errors='replace').strip()[-500:]})"]
    if kind == "image":
        raise ImageFormatError(*fields)
    if op == "transfer" and fields[0]:  # about the caller's path: as if it had been done here
        raise OSError(fields[0], os.strerror(fields[0]), fields[2])
    raise SetupError(
        fields[0],
        f"{fields[1]} on {list(trees)}" if trees else fields[1],
        step="SUBIDS",
        hint="the files of a rootless user's sub-ids are handled in a user namespace that maps them",
    )


class ImageStore(images.ImageStore):
    """A content-addressed image store, safe for concurrent use by several processes.

    Rootless with /etc/subuid and /etc/subgid ranges, layers are unpacked
    with the image's owners shifted into those ranges (as containers see
    them), and removed, with the help of a short sandbox that maps them.

    Args:
        path: the store's home directory (see :func:`sandboxlib.images.default_home`).
    """

    def caller_policy(self) -> IdPolicy:
        return imageroot.id_policy(ContainerConfig(), _caller_maps())

    def pull(
        self,
        ref: str,
        *,
        platform: Optional[str] = None,
        progress: Optional[Callable[[registry.Progress], None]] = None,
    ) -> images.Image:
        """Pull an image from its registry (``alpine`` is ``docker.io/library/alpine:latest``,
        ``localhost:5000/team/app:1.2``, ``name@sha256:...``), as ``docker pull`` does.

        An index resolves to the host's platform, or to ``platform``
        (``"linux/arm64"``).  Layers the store has (by digest or diff_id) are
        not fetched; an image the store has under the registry's digest costs
        one ``HEAD``.  Each blob is checked against its digest and each layer
        as :meth:`load` checks it, and unpacked in that same pass for the
        caller's default containers (their first start unpacks nothing).  ``progress`` is called with a
        :class:`sandboxlib.registry.Progress` per layer step.  The image keeps
        the registry's digest in ``repo_digests``.  The registry's mirrors
        (the registries file: see :mod:`sandboxlib.registry.settings`) are
        tried first, in order; one that fails is passed over.

        Raises:
            RegistryError: the registry could not be reached, refused, or sent
                what it should not (``RegistryNotFound``, ``RegistryAuthError``,
                ``RegistryDataError``); nothing is left referenced.
            ImageFormatError: a layer or config is malformed or over the store's limits.
        """
        return registry.pull(self, ref, platform=platform, progress=progress)

    def push(self, src: str, dest: Optional[str] = None) -> str:
        """Push the image ``src`` to ``dest`` (default: ``src``'s own name), as
        ``docker push`` does; returns the manifest digest.  Only the blobs the
        registry lacks are uploaded; the manifest goes last.

        Raises:
            RegistryError: the registry could not be reached or refused.
            ImageNotFound: the store has no image ``src``.
        """
        return registry.push(self, src, dest)

    def sub_id_files(self) -> Optional[SubIdFiles]:
        if os.geteuid() == 0:  # root needs none
            return None
        return SandboxSubIdFiles()
