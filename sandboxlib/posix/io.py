"""Whole reads and writes, and closing what may be closed already."""

from __future__ import annotations

import os
import socket
from typing import List

__all__ = ["write_all", "read_all", "close_quietly", "shutdown_quietly"]


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    """Read ``fd`` to its end (a pipe: until every writer closed it)."""
    chunks: List[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def close_quietly(fd: int) -> None:
    """Close ``fd``, which may be closed already."""
    try:
        os.close(fd)
    except OSError:
        pass


def shutdown_quietly(sock: socket.socket) -> None:
    """Wake the threads using the socket (their send fails, a read sees EOF)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
