"""The byte protocol between the host process and the container's init.

Requests go over the container's control socket (SOCK_SEQPACKET) with the
per-command reply socket and stdio fds as SCM_RIGHTS; replies come back on
the reply socket.  Layouts mirror csrc/sbx.h."""
from __future__ import annotations

import os
import resource
import socket
import struct
from typing import Optional, Sequence, Tuple

import attrs

__all__ = ["ExecRequest", "encode_exec", "encode_signal", "encode_stop", "Reply", "decode_reply",
           "MAX_REQUEST", "RLIMIT_NUMBERS"]

MSG_EXEC, MSG_SIGNAL, MSG_STOP = 1, 2, 3
EXEC_MAIN, EXEC_NO_NEW_PRIVS, EXEC_SET_GROUPS, EXEC_QUIET = 0x1, 0x2, 0x4, 0x8
REPLY_STARTED, REPLY_FAILED, REPLY_EXITED = 1, 2, 3
MAX_REQUEST = 256 * 1024

_HEADER = struct.Struct("=IIIIIIQIIIIII")
_RLIMIT = struct.Struct("=IIQQ")
_SIGNAL = struct.Struct("=IIiIQ")
_REPLY = struct.Struct("=iiiiii")
REPLY_SIZE = _REPLY.size

RLIMIT_NUMBERS = {
    "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE, "as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU,
    "stack": resource.RLIMIT_STACK, "memlock": resource.RLIMIT_MEMLOCK, "data": resource.RLIMIT_DATA,
}
_INFINITY = 2**64 - 1


@attrs.frozen(kw_only=True)
class ExecRequest:
    argv: Tuple[str, ...]
    env: Tuple[str, ...]             # "NAME=value"
    cwd: str
    search_path: str
    uid: int
    gid: int
    groups: Tuple[int, ...]
    rlimits: Tuple[Tuple[str, int, int], ...]
    cap_keep: int
    main: bool = False
    set_groups: bool = False
    quiet: bool = False  # no STARTED reply: the first reply is FAILED or EXITED
    id: int = 0          # names the command in SIGNAL messages
    fault: int = 0  # tests: step | errno << 16


def encode_exec(req: ExecRequest) -> bytes:
    strings = b"".join(s.encode() + b"\0" for s in (req.cwd, req.search_path, *req.argv, *req.env))
    flags = (EXEC_NO_NEW_PRIVS | (EXEC_MAIN if req.main else 0) | (EXEC_SET_GROUPS if req.set_groups else 0)
             | (EXEC_QUIET if req.quiet else 0))
    limits = b"".join(_RLIMIT.pack(RLIMIT_NUMBERS[name], 0, min(soft, _INFINITY), min(hard, _INFINITY))
                      for name, soft, hard in req.rlimits)
    groups = struct.pack(f"={len(req.groups)}I", *req.groups)
    header = _HEADER.pack(MSG_EXEC, flags, req.uid, req.gid, len(req.groups), len(req.rlimits),
                          req.cap_keep, len(req.argv), len(req.env), len(strings), req.fault, req.id, 0)
    return header + limits + groups + strings


def encode_signal(command_id: int, sig: int, *, group: bool) -> bytes:
    return _SIGNAL.pack(MSG_SIGNAL, command_id, sig, int(group), 0)


def encode_stop(grace: float) -> bytes:
    return _SIGNAL.pack(MSG_STOP, 0, 0, 0, max(0, int(grace * 1000)))


@attrs.frozen
class Reply:
    kind: int
    pid: int
    status: int
    step: int
    errno: int
    index: int
    fd: Optional[int] = None  # a pidfd with STARTED


def decode_reply(sock: socket.socket) -> Optional[Reply]:
    """Read one reply; None when the init closed the socket without one."""
    data, fds, _flags, _addr = socket.recv_fds(sock, REPLY_SIZE, 1)
    if len(data) < REPLY_SIZE:
        for fd in fds:
            os.close(fd)
        return None
    return Reply(*_REPLY.unpack(data), fd=fds[0] if fds else None)


def send_request(control: socket.socket, payload: bytes, fds: Sequence[int]) -> None:
    socket.send_fds(control, [payload], list(fds))
