"""The program ``sandboxlib.runtime.subids`` runs in a short sandbox whose user
namespace maps a rootless caller's subordinate ids (its source is passed
with ``-c``: standard library only; only ``transfer`` imports sandboxlib,
from the checkout bound read-only).

It is the container's root there, with the capabilities to chown and
delete files of every mapped id, and works on the trees bound at
``/sbx/0``, ``/sbx/1``, ... (never on their top directories, which stay
the caller's and which the caller removes or renames itself):

    chown    stdin: JSON {inode: [uid, gid, mode]} (container ids); every
             entry below /sbx/0 with such an inode gets those owners (and,
             for a directory, its mode again: a setgid bit survives)
    empty    removes everything below each /sbx/N
    tar      stdin: a socket carrying (SCM_RIGHTS) a container's writable
             layer (its overlay upper dir) and a file: writes the layer as
             an image layer tar (``add_tree``) with the ids as they are
             inside (the sandbox has the container's maps)
    transfer stdin: a socket carrying a JSON request and the container's
             root, an input and an output file: copy in or out with
             ``sandboxlib.rootfs.transfer`` (imported from the directory in argv[2])

Every walk is ``sandboxlib.images.trees``' (its source comes first in the
program): iterative, whatever the depth, and never following a symlink.
On failure it prints ``[errno, operation]`` as JSON and exits 1.
``commit`` uses ``add_tree`` directly when the caller can read the layer."""

import contextlib
import json
import os
import socket
import stat
import sys
import tarfile

try:  # in the host; in the sandbox the walker's source comes first in the program
    from ..images.trees import DIR_FLAGS, empty_dir, walk
except ImportError:
    pass

TOP = "/sbx"
OPAQUE_XATTR = "user.overlay.opaque"


def _tar_entry(name: str, st: os.stat_result, ids, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.uid, info.gid = ids(st.st_uid, st.st_gid)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def add_tree(tar: tarfile.TarFile, dir_fd: int, prefix: str, ids) -> None:
    """Add an overlay upper dir's tree below ``prefix``: overlay whiteouts
    and opaque dirs become OCI whiteouts; ``ids(uid, gid)`` gives the ids
    the tar records."""
    for entry in walk(dir_fd, sort=True):
        st, name, path = entry.st, entry.name, prefix + entry.path
        if entry.leaving:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # overlay whiteout -> OCI whiteout
            tar.addfile(_tar_entry(path[: len(path) - len(name)] + ".wh." + name, st, ids, mode=0o644))
        elif entry.dir_fd is not None:
            tar.addfile(_tar_entry(path + "/", st, ids, type=tarfile.DIRTYPE))
            with contextlib.suppress(OSError):
                if os.getxattr(entry.dir_fd, OPAQUE_XATTR) == b"y":
                    tar.addfile(_tar_entry(path + "/.wh..wh..opq", st, ids, mode=0o644))
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry.parent_fd)
            with os.fdopen(fd, "rb") as f:
                tar.addfile(_tar_entry(path, st, ids, size=st.st_size), f)
        elif stat.S_ISLNK(st.st_mode):
            tar.addfile(
                _tar_entry(path, st, ids, type=tarfile.SYMTYPE, linkname=os.readlink(name, dir_fd=entry.parent_fd))
            )
        elif stat.S_ISFIFO(st.st_mode):
            tar.addfile(_tar_entry(path, st, ids, type=tarfile.FIFOTYPE))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            tar.addfile(
                _tar_entry(
                    path,
                    st,
                    ids,
                    devmajor=os.major(st.st_rdev),
                    devminor=os.minor(st.st_rdev),
                    type=tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE,
                )
            )


def _received(count: int):
    """(request bytes, fds) from the socket on stdin."""
    with socket.socket(fileno=os.dup(0)) as sock:
        request, fds, _, _ = socket.recv_fds(sock, 1 << 16, count)
    if len(fds) != count:
        raise OSError(22, f"expected {count} fds, got {len(fds)}")
    return request, fds


def tar_layer() -> None:
    _, (upper, out) = _received(2)
    try:
        with os.fdopen(out, "wb", closefd=False) as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                add_tree(tar, upper, "", lambda uid, gid: (uid, gid))
    finally:
        os.close(upper)
        os.close(out)


def chown(owners: dict) -> None:
    top = os.open(os.path.join(TOP, "0"), DIR_FLAGS)
    try:
        for entry in walk(top):
            want = owners.get(str(entry.st.st_ino))
            if want is None or entry.leaving:
                continue
            uid, gid, mode = want
            os.chown(entry.name, uid, gid, dir_fd=entry.parent_fd, follow_symlinks=False)
            if entry.dir_fd is not None:
                os.chmod(entry.dir_fd, mode)
    finally:
        os.close(top)


def empty() -> None:
    for top in sorted(os.listdir(TOP)):
        fd = os.open(os.path.join(TOP, top), DIR_FLAGS)
        try:
            empty_dir(fd)
        finally:
            os.close(fd)


def transfer(library: str) -> None:
    """Copy in or out (``sandboxlib.rootfs.transfer``, from ``library``, bound read-only)
    as the container's root with its capabilities: files of every container
    user are reachable.  fds: the container's root, the input, the output."""
    request, (root_fd, data_fd, out_fd) = _received(3)
    sys.path.insert(0, library)
    from sandboxlib.images.unpack import IdPolicy
    from sandboxlib.rootfs import transfer as t

    args = json.loads(request)
    policy = IdPolicy(squash=(0, 0))  # in here the container's root is 0, and ids are the container's
    with os.fdopen(data_fd, "rb") as f:
        data = f.read()
    op, path = args["op"], args["path"]
    mounts = frozenset(args["mounts"])
    if op == "write_file":
        t.write_file(root_fd, path, data, args["mode"], policy)
    elif op == "make_dirs":
        t.make_dirs(root_fd, path, policy)
    elif op == "put_archive":
        t.put_archive(root_fd, path, data, policy)
    elif op == "export":
        with os.fdopen(out_fd, "wb", closefd=False) as f:
            t.export_root(root_fd, path, f, policy, mounts)
    elif op == "write_archive":
        with os.fdopen(out_fd, "wb", closefd=False) as f:
            t.write_archive(root_fd, path, f, policy, mounts)
    else:
        result = t.read_file(root_fd, path) if op == "read_file" else t.get_archive(root_fd, path, policy, mounts)
        with os.fdopen(out_fd, "wb", closefd=False) as f:
            f.write(result)


def main() -> int:
    try:
        if sys.argv[1] == "chown":
            chown(json.load(sys.stdin))
        elif sys.argv[1] == "empty":
            empty()
        elif sys.argv[1] == "tar":
            tar_layer()
        elif sys.argv[1] == "transfer":
            transfer(sys.argv[2])
        else:
            raise OSError(22, f"unknown operation {sys.argv[1]!r}")
    except OSError as err:
        print(json.dumps(["os", err.errno or 0, f"{sys.argv[1]}: {err}", err.filename]))
        return 1
    except ValueError as err:  # the extractor's ImageFormatError
        print(json.dumps(["image", getattr(err, "source", sys.argv[1]), getattr(err, "detail", str(err))]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
