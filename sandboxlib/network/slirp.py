"""Rootless networking through ``slirp4netns``, the fallback when pasta is
missing (or ``SANDBOXLIB_ROOTLESS_NETWORK=slirp4netns``).

slirp4netns stays a child of the host process, in the foreground: it
reports readiness on ``--ready-fd`` and ends when ``--exit-fd`` (a pipe whose
write end only the host process holds) reaches EOF, so the owner's death,
SIGKILL included, ends it: nothing to sweep.  ``--disable-host-loopback``
keeps the host's loopback out of reach; published ports are added through
its API socket (``add_hostfwd``).  Its DNS forwarder is 10.0.2.3."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from typing import Optional

from ..errors import SetupError, UnsupportedError
from .pasta import UserModeAttachment

__all__ = ["SlirpAttachment", "find_slirp"]


def find_slirp() -> Optional[str]:
    return shutil.which("slirp4netns") or shutil.which("slirp4netns", path="/usr/bin:/usr/sbin")


class SlirpAttachment(UserModeAttachment):
    DNS = "10.0.2.3"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._process: Optional[subprocess.Popen] = None
        self._exit_w = -1

    @staticmethod
    def program() -> str:
        found = find_slirp()
        if found is None:
            raise UnsupportedError("rootless networking (pasta or slirp4netns)", "apt-get install passt")
        return found

    def connect(self, netns_fd: int, init_pid: int) -> None:
        assert self._files is not None
        api = os.path.join(self._files.path, "slirp.sock")
        exit_r, self._exit_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        argv = [
            self.program(),
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--netns-type=path",
            f"--userns-path=/proc/{init_pid}/ns/user",
            f"--exit-fd={exit_r}",
            f"--ready-fd={ready_w}",
            f"--api-socket={api}",
            f"/proc/self/fd/{netns_fd}",
            "eth0",
        ]
        try:
            self._process = subprocess.Popen(  # (a session of its own: a terminal's ^C to the caller's group)
                argv,
                pass_fds=(netns_fd, exit_r, ready_w),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            os.close(exit_r)
            os.close(ready_w)
        try:
            ready = os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if ready != b"1":
            raise SetupError(0, "slirp4netns (rootless network)", step="NETWORK", hint=self._stderr())
        self._pid = self._process.pid
        for mapping in self._ports:
            self._forward(api, mapping)

    def _stderr(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        process.kill()
        return process.stderr.read().decode(errors="replace").strip()[-500:]

    @staticmethod
    def _forward(api: str, mapping) -> None:
        request = {
            "execute": "add_hostfwd",
            "arguments": {
                "proto": mapping.protocol,
                "host_addr": mapping.host_ip,
                "host_port": mapping.host_port,
                "guest_port": mapping.port,
            },
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(api)
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            answer = json.loads(sock.recv(65536) or b"{}")
        if "error" in answer or "return" not in answer:
            raise SetupError(0, f"slirp4netns add_hostfwd {mapping.key}", step="NETWORK", hint=str(answer))

    def close(self) -> None:
        if self._exit_w >= 0:
            os.close(self._exit_w)  # slirp4netns ends
            self._exit_w = -1
        if self._process is not None:
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        self._pid = None
        super().close()
