"""A container's two seccomp filters, compiled once per policy and kept.

Every create needs two: the init's own (the library's init policy, within the
process's capabilities) and config.json's ``linux.seccomp`` (podman passes
its default profile to every container).  Compiling them takes the policy's
classes, whose attrs import is ~20 ms of a create that imports nothing else
of attrs, and libseccomp (~1-3 ms); so the pair is kept under
``ROOT/.filters/``, keyed by all it is made of: the policy's JSON, the
capabilities, this build and host (version, native ABI, kernel release,
machine) and the security sources' mtimes (a checkout being edited).  A file
holds its whole key, compared byte for byte (its name is only the key's
crc32); it is written whole (a rename), 0600 in the root's own directory, and
used only while it and ``.filters`` are ours and no one else may write them
(reached through the directory's fd, no symlink followed); at most
``MAX_ENTRIES`` are kept, the oldest removed.  A miss, or a
config.json whose policy is wrong (its error names the field), compiles."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from typing import Any, Mapping, Optional, Tuple

__all__ = ["compiled_filters", "DIRECTORY", "MAX_ENTRIES"]

DIRECTORY = ".filters"  # in --root: no container id starts with a dot (state._ID)
MAX_ENTRIES = 16
_SIZES = struct.Struct("=III")  # key, config.json's filter, the init's filter
_SECURITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "security")


def compiled_filters(root: str, seccomp: Optional[Mapping[str, Any]], caps: frozenset) -> Tuple[bytes, bytes]:
    """(config.json's filter, b"" without one; the init's filter) for a process
    whose bounding set is ``caps``."""
    key = _key(seccomp, caps)
    name = f"{zlib.crc32(key):08x}"
    directory = _directory(root)
    try:
        kept = None if directory is None else _read(directory, name, key)
        if kept is not None:
            return kept
        program, init_filter = _compile(seccomp, caps)
        if directory is not None:
            _keep(directory, name, key, program, init_filter)
        return program, init_filter
    finally:
        if directory is not None:
            os.close(directory)


def _directory(root: str) -> Optional[int]:
    """An fd of ``ROOT/.filters`` when it is ours and no one else may change it
    (None: nothing kept).  Everything is done through the fd, without following
    a symlink: in a ``--root`` others may write (a shared directory) another
    user could make ``.filters`` first, a symlink to /etc (whose entries the
    eviction removed) or a directory of their own holding a symlink where
    the next file is written (which we truncated and wrote, as root)."""
    path = os.path.join(root, DIRECTORY)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        return None
    return fd


def _key(seccomp: Optional[Mapping[str, Any]], caps: frozenset) -> bytes:
    from ..native.binding import NATIVE_VERSION
    from ..version import __version__

    sources = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(_SECURITY) if e.name.endswith(".py"))
    host = os.uname()
    facts = [__version__, NATIVE_VERSION, host.release, host.machine, sources, sorted(caps), seccomp]
    return json.dumps(facts, sort_keys=True).encode()


def _compile(seccomp: Optional[Mapping[str, Any]], caps: frozenset) -> Tuple[bytes, bytes]:
    from ..security.bpf import compile_policy
    from ..security.seccomp import Seccomp, init_policy

    policy = Seccomp.from_json(dict(seccomp)) if seccomp else None
    return compile_policy(policy, caps) if policy else b"", compile_policy(init_policy(), caps)


def _read(directory: int, name: str, key: bytes) -> Optional[Tuple[bytes, bytes]]:
    """The kept filters, from a file of ours that only we may write and that holds ``key``."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return None
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None
        data = f.read()
    if len(data) < _SIZES.size:
        return None
    n_key, n_program, n_init = _SIZES.unpack_from(data)
    body = memoryview(data)[_SIZES.size :]
    if n_key + n_program + n_init != len(body) or body[:n_key] != key:
        return None
    return bytes(body[n_key : n_key + n_program]), bytes(body[n_key + n_program :])


def _keep(directory: int, name: str, key: bytes, program: bytes, init_filter: bytes) -> None:
    tmp = f"{name}.{os.getpid()}.tmp"
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES + 1)]:
            os.unlink(old.name, dir_fd=directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(tmp, flags, 0o600, dir_fd=directory), "wb") as f:
            f.write(_SIZES.pack(len(key), len(program), len(init_filter)) + key + program + init_filter)
        os.rename(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)  # (a file of ours: O_EXCL made it)
        # (kept for the next create only: this one has its filters)
