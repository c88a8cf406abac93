"""The ``/etc/hosts`` of a container off any bridge that asks for extra
hosts (``extra_hosts=``, ``docker build --add-host``): the localhost lines,
or with the host's network the host's own file, as Docker writes them, then
the extra hosts; in a directory of its own (``files.ContainerFiles``: held
while the container lives, swept after a crash).  A bridge's container gets
its file from its attachment instead.  Either's extra hosts lines (its last)
can be replaced while the container runs: ``replace_extra_hosts``."""

from __future__ import annotations

from typing import Tuple

from ..config import Mount
from .files import ContainerFiles, rewrite
from .names import LOCALHOST_LINES, extra_lines

__all__ = ["HostsFile", "HOST_HOSTS", "replace_extra_hosts"]

HOST_HOSTS = "/etc/hosts"


class HostsFile:
    """Written when made; ``close()`` removes it."""

    def __init__(self, state_root: str, container_id: str, extra: Tuple[Tuple[str, str], ...], host: bool) -> None:
        base = _host_file() if host else "\n".join(LOCALHOST_LINES) + "\n"
        self._files = ContainerFiles(state_root, container_id, {"hosts": base + extra_lines(extra)})

    def mounts(self) -> Tuple[Mount, ...]:
        """The bind of ``/etc/hosts`` (read-only)."""
        return self._files.mounts()

    def close(self) -> None:
        self._files.close()


def _host_file() -> str:
    try:
        with open(HOST_HOSTS, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return "\n".join(LOCALHOST_LINES) + "\n"
    return text if not text or text.endswith("\n") else text + "\n"


def replace_extra_hosts(path: str, old: Tuple[Tuple[str, str], ...], new: Tuple[Tuple[str, str], ...]) -> None:
    """A running container's ``/etc/hosts`` (``path``, the file bound there) with the
    extra hosts lines ``new`` in place of ``old``; rewritten in place: the container's
    bind shows this file, not whatever a path names later."""
    with open(path, encoding="utf-8", errors="replace") as file:
        text = file.read()
    tail = extra_lines(old)
    head = text[: len(text) - len(tail)] if tail and text.endswith(tail) else text
    rewrite(path, (head + extra_lines(new)).encode())
