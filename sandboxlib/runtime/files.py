"""Copying files into and out of a running ``Container`` and committing it
to an image: the methods ``Container`` inherits from ``FileAccess``."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from typing import BinaryIO, FrozenSet, List, Mapping, Optional, Tuple, Union

from ..config import container_path, data_bytes
from ..errors import ConfigError, ContainerStateError
from ..images import Image
from ..images.compression import decompressed_bytes
from ..images.unpack import IdPolicy
from ..native import binding
from ..rootfs import changes as layer_diff
from ..rootfs import transfer
from .subids import SandboxSubIdFiles

__all__ = ["FileAccess"]


class FileAccess:
    """write_file, read_file, put_archive, get_archive and commit (they need
    the container's init pid, config, id maps, image root and store)."""

    def _in_root(self, func, path: str, *args):
        """``func(root_fd, path, *args)`` with the running container's root."""
        self._check_running()
        path = container_path(path, "path")
        try:
            root_fd = os.open(f"/proc/{self._init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as err:  # its init ended meanwhile
            raise ContainerStateError(f"the container has ended ({err.strerror})") from None
        try:
            return func(root_fd, path, *args)
        finally:
            os.close(root_fd)

    def _transfer(
        self, op: str, func, path: str, *args, ids=None, data: bytes = b"", mode: int = 0, mounts=frozenset()
    ):
        """``func(root_fd, path, *args)`` here, as the container's root but
        without its capabilities in its user namespace.  What that may not
        touch (files of the container's other users, mode-000 directories) is
        done again by a short sandbox with the container's maps, as its root
        (``subids``)."""
        try:
            with ids or contextlib.nullcontext():
                return self._in_root(func, path, *args)
        except PermissionError:
            if self._maps is None:
                raise
        helper = SandboxSubIdFiles()
        return self._in_root(
            lambda root_fd, p: helper.transfer(op, root_fd, p, self._maps, data, mode, mounts=mounts), path
        )

    def _writing(self):
        """(id policy, context) for creating files in the container's root.
        Host root creates them as the container's root (its fsuid): a file
        system of the container's user namespace has no inode for host id 0."""
        policy = self._id_policy()
        if policy.privileged and policy.shift:
            return IdPolicy(squash=(policy.shift, policy.shift)), binding.fs_ids(policy.shift, policy.shift)
        return policy, contextlib.nullcontext()

    def write_file(self, path: str, data: Union[bytes, str], *, mode: int = 0o644, parents: bool = False) -> None:
        """Write ``data`` (bytes, or a str: UTF-8) to the file ``path`` in the
        container (created owned by its root, or truncated).  Symlinks resolve
        inside the root.  ``parents=True`` first makes the missing directories
        (``mkdir -p``: mode 0755, owned by the container's root)."""
        data = data_bytes(data, "data")
        path = container_path(path, "path")
        if parents:
            policy, ids = self._writing()
            self._transfer("make_dirs", transfer.make_dirs, posixpath.dirname(path), policy, ids=ids)
        policy, ids = self._writing()  # (ids: a context, used once)
        try:
            self._transfer("write_file", transfer.write_file, path, data, mode, policy, ids=ids, data=data, mode=mode)
        except FileNotFoundError as err:
            if parents:
                raise
            raise FileNotFoundError(
                err.errno, f"{err.strerror} (a missing directory? parents=True makes it)", path
            ) from None

    def read_file(self, path: str) -> bytes:
        """The contents of the file ``path`` in the container."""
        return self._transfer("read_file", transfer.read_file, path)

    def put_archive(self, path: str, data: bytes) -> None:
        """Unpack the tar ``data`` into the directory ``path`` in the container
        (hostile names are refused with ImageFormatError, as for layers);
        gzip or zstd compressed as Docker takes them (zstd needs the
        ``sandboxlib[zstd]`` extra: UnsupportedError without it)."""
        if isinstance(data, str):  # a file name, most likely: never guessed
            raise ConfigError(
                "data",
                f"expected the tar archive's bytes, got a str ({data[:40]!r}); "
                f"for a file, pass pathlib.Path(name).read_bytes()",
            )
        data = decompressed_bytes(data_bytes(data, "data"), "put_archive data")
        policy, ids = self._writing()
        self._transfer("put_archive", transfer.put_archive, path, data, policy, ids=ids, data=data)

    def get_archive(self, path: str) -> bytes:
        """A tar of ``path`` in the container (named by its last component),
        with the container's ids; symlinks below it are archived, never followed.  A
        symlink at ``path`` itself is resolved inside the root (unlike Docker, which
        archives the link: a docker cp of it would plant the container's link on the host)."""
        mounts = self._mount_points()
        return self._transfer("get_archive", transfer.get_archive, path, self._id_policy(), mounts, mounts=mounts)

    def path_stat(self, path: str) -> Tuple[os.stat_result, str]:
        """``path``'s stat in the container (a final symlink not followed) and,
        for a symlink, its target ("" else)."""
        return self._in_root(transfer.path_stat, path)

    def write_archive(self, path: str, f: BinaryIO) -> None:
        """:meth:`get_archive`'s tar written to the binary file ``f`` as it is made
        (a pipe or socket too: the archive of a large file is never whole in memory)."""
        self._written("write_archive", transfer.write_archive, path, f)

    def export(self, f: BinaryIO) -> None:
        """Write the container's whole file system as a tar to the binary file
        ``f`` (``docker export``: names relative to the root; mount points in
        it such as ``/proc``, ``/dev`` and binds are archived empty)."""
        self._written("export", transfer.export_root, "/", f)

    def _written(self, op: str, func, path: str, f: BinaryIO) -> None:
        """``func(root_fd, path, f, policy, mounts)`` here.  What this process may not read
        (files of the container's other users) the sub-id sandbox writes, as _transfer
        does: again after a rewind of ``f``, or at once for a stream that cannot be
        rewound (rootless: it might meet such a file after some of the tar is sent);
        into ``f``'s own fd when it has one."""
        mounts = self._mount_points()
        policy = self._id_policy()
        start = f.tell() if f.seekable() else None
        if start is not None or self._maps is None or policy.privileged:  # (host root reads everything)
            try:
                self._in_root(func, path, f, policy, mounts)
                return
            except PermissionError:
                if self._maps is None or start is None:
                    raise
            f.seek(start)
            f.truncate()
        try:
            out = f.fileno()
        except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is an OSError)
            out = -1
        if out >= 0:  # the sub-id sandbox writes the file itself (not spooled: twice a large tar on disk)
            f.flush()
            self._in_root(self._as_root, path, op, mounts, out)
            if start is not None:
                f.seek(os.lseek(out, 0, os.SEEK_CUR))  # (its writes moved the shared offset, not f's idea of it)
            return
        with tempfile.TemporaryFile() as spooled:  # (f is a Python object without an fd: BytesIO)
            self._in_root(self._as_root, path, op, mounts, spooled.fileno())
            spooled.seek(0)
            shutil.copyfileobj(spooled, f)

    def _as_root(self, root_fd: int, path: str, op: str, mounts: FrozenSet[str], out: int) -> None:
        SandboxSubIdFiles().transfer(op, root_fd, path, self._maps, mounts=mounts, out=out)

    def _mount_points(self) -> FrozenSet[str]:
        """The mount points in the container (relative to its root): archived empty."""
        self._check_running()
        with open(f"/proc/{self._init_pid}/mountinfo") as info:
            return transfer.mount_points(info.read())

    def changes(self) -> List[Tuple[str, int]]:
        """What the container changed in its image's files, as ``docker diff``
        lists it: ``(path, kind)`` sorted by path, kind 0 modified, 1 added,
        2 deleted."""
        image = self._image
        if image is None:
            raise ContainerStateError("changes needs a container whose root is an image")
        if self.config.read_only:
            self._check_running()
            return []  # (no writable layer)

        def listed(upper: int) -> List[Tuple[str, int]]:
            try:
                return layer_diff.changes(layer_diff.upper_names(upper), image.layers)
            except PermissionError:
                if self._maps is None:
                    raise
            from .commit import layer_tar  # (what your sub-ids own: read by their sandbox)

            with tempfile.TemporaryFile(dir=self._store.tmp) as f:
                layer_tar(f, upper, self._id_policy(), self._maps)
                f.seek(0)
                return layer_diff.changes(layer_diff.layer_tar_names(f), image.layers)

        return self._with_upper("changes", listed)

    def commit(self, ref: Optional[str] = None, *, changes: Optional[Mapping[str, object]] = None) -> Image:
        """A new image in the container's store: its image plus what was
        written in the container (deletions as whiteouts), named ``ref``;
        ``changes`` sets config keys as ``docker commit --change`` does
        (Docker's ``Cmd``, ``Entrypoint``, ``Env``, ``WorkingDir``, ``User``,
        ``ExposedPorts``, ``Labels``, or their lowercase forms; checked first)."""
        from .commit import commit

        return self._with_upper(
            "commit",
            lambda upper: commit(self._store, self._image.image, upper, self._id_policy(), self._maps, ref, changes),
        )

    def commit_layer(self) -> Tuple[str, int, str]:
        """What was written in the container as a plain layer stored in its
        image store, no image made: (blob digest, size, diff_id).  Call it
        inside the store's ``writing()`` and reference the layer before that
        ends (an image builder's step: ``sandboxlib.build``)."""
        from .commit import store_upper

        return self._with_upper(
            "commit_layer", lambda upper: store_upper(self._store, upper, self._id_policy(), self._maps)
        )

    def _with_upper(self, what: str, func):
        """``func(fd of the writable layer's upper dir)``, which the init keeps open."""
        if self._image is None:
            raise ContainerStateError(f"{what} needs a container whose root is an image")

        def with_fd(_root, _path):
            upper = os.open(
                f"/proc/{self._init_pid}/fd/{binding.FD_UPPER}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            )
            try:
                return func(upper)
            finally:
                os.close(upper)

        return self._in_root(with_fd, "/")
