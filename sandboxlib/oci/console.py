"""``--console-socket``: the terminal's master goes to the caller as runc sends it.

The caller (conmon, containerd's shim) listens on a unix stream socket;
the runtime connects and sends one message, the pty's name as its bytes,
the master fd as SCM_RIGHTS."""

from __future__ import annotations

import socket

from ..errors import ConfigError

__all__ = ["send_console"]


def send_console(path: str, master: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as err:
            raise ConfigError("--console-socket", f"cannot connect to {path}: {err}") from None
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
