"""Sockets made inside a container's network namespace.

A socket belongs to the network namespace of the thread that created it:
a short-lived thread joins the container's namespace (``setns`` affects
only the calling thread), creates the socket and ends, so no thread of
the host process is ever left in the wrong namespace."""

from __future__ import annotations

import functools
import os
import socket
import threading
from typing import Any, Dict

__all__ = ["socket_in"]

CLONE_NEWNET = 0x40000000


@functools.lru_cache(maxsize=1)
def _setns() -> Any:
    import ctypes  # (not at import sandboxlib: it is light)

    return ctypes.CDLL(None, use_errno=True).setns


def socket_in(netns_fd: int, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A new socket in the network namespace ``netns_fd``."""
    result: Dict[str, Any] = {}

    def make() -> None:
        try:
            if _setns()(netns_fd, CLONE_NEWNET) != 0:
                code = _errno()
                raise OSError(code, f"setns into the container's network namespace: {os.strerror(code)}")
            result["socket"] = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=make, name="sandboxlib-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()
