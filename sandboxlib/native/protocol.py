"""The byte protocol between the host process and the container's init.

Requests go over the container's control socket (SOCK_SEQPACKET) with the
per-command reply socket and stdio fds as SCM_RIGHTS; replies come back on
the reply socket.  Constants and layouts come from csrc/sbx.h through the
binding."""

from __future__ import annotations

import _socket
import array
import functools
import os
import resource
import socket
import struct
from typing import NamedTuple, Optional, Sequence, Tuple

from .binding import ffi, lib, message_struct

__all__ = [
    "ExecRequest",
    "encode_exec",
    "renamed",
    "encode_signal",
    "encode_stop",
    "Reply",
    "decode_reply",
    "MAX_REQUEST",
    "RLIMIT_NUMBERS",
]

MSG_EXEC, MSG_SIGNAL, MSG_STOP = lib.SBX_MSG_EXEC, lib.SBX_MSG_SIGNAL, lib.SBX_MSG_STOP
EXEC_MAIN, EXEC_NO_NEW_PRIVS, EXEC_SET_GROUPS = lib.SBX_EXEC_MAIN, lib.SBX_EXEC_NO_NEW_PRIVS, lib.SBX_EXEC_SET_GROUPS
EXEC_QUIET, EXEC_CGROUP, EXEC_TTY = lib.SBX_EXEC_QUIET, lib.SBX_EXEC_CGROUP, lib.SBX_EXEC_TTY
EXEC_HOLD, EXEC_CAP_SETS = lib.SBX_EXEC_HOLD, lib.SBX_EXEC_CAP_SETS
# A detached init's held main command is started by this message (SCM_RIGHTS: its reply socket).
START_MESSAGE = struct.pack("=I", lib.SBX_MSG_START)
REPLY_STARTED, REPLY_FAILED, REPLY_EXITED = lib.SBX_REPLY_STARTED, lib.SBX_REPLY_FAILED, lib.SBX_REPLY_EXITED
REPLY_PID, REPLY_TTY = lib.SBX_REPLY_PID, lib.SBX_REPLY_TTY
CGROUP_READY = lib.SBX_REPLY_CGROUP_READY  # its own cgroup may serve the next command
MAX_REQUEST = lib.SBX_MAX_REQUEST

_HEADER = message_struct("struct sbx_exec_hdr")
_ID_AT = ffi.offsetof("struct sbx_exec_hdr", "id")
_ID = struct.Struct("=I")
_RLIMIT = message_struct("struct sbx_rlimit")
_SIGNAL = message_struct("struct sbx_signal_msg")
_REPLY = message_struct("struct sbx_reply")
REPLY_SIZE = _REPLY.size

RLIMIT_NUMBERS = {
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE,
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "stack": resource.RLIMIT_STACK,
    "memlock": resource.RLIMIT_MEMLOCK,
    "data": resource.RLIMIT_DATA,
}
_INFINITY = 2**64 - 1


# The request and the reply are records of the wire's fields (checked by their
# makers), not configuration: NamedTuples, one made per command in ~1 us where
# an attrs class takes ~5, and cheap to define, where an attrs class's generated
# methods are ~0.5-1 ms of every short-lived program that imports this (the OCI
# runtime's create).


class ExecRequest(NamedTuple):
    argv: Tuple[str, ...]
    env: Tuple[str, ...]  # "NAME=value"
    cwd: str
    search_path: str
    uid: int
    gid: int
    groups: Tuple[int, ...]
    rlimits: Tuple[Tuple[str, int, int], ...]
    cap_keep: int
    main: bool = False
    set_groups: bool = False
    quiet: bool = False  # no PID and STARTED replies: the first reply is FAILED or EXITED
    id: int = 0  # names the command in SIGNAL messages
    cgroup: bool = False  # a 5th fd: the cgroup v2 directory to start the command in
    # A pseudo-terminal of this (rows, cols) as stdio, opened by the init; no stdio fds.
    tty_size: Optional[Tuple[int, int]] = None
    # A detached init keeps this main command until START (the OCI "created" state).
    hold: bool = False
    # The OCI runtime's: a command without no_new_privs (config.json's
    # noNewPrivileges: false), and exact capability sets (effective,
    # permitted, inheritable, ambient masks; cap_keep is then the bounding set).
    no_new_privs: bool = True
    cap_sets: Optional[Tuple[int, int, int, int]] = None
    fault: int = 0  # tests: step | errno << 16


def encode_exec(req: ExecRequest) -> bytes:
    strings = "\0".join((req.cwd, req.search_path, *req.argv, *req.env, "")).encode()  # (each NUL-terminated)
    flags = (
        (EXEC_NO_NEW_PRIVS if req.no_new_privs else 0)
        | (EXEC_CAP_SETS if req.cap_sets is not None else 0)
        | (EXEC_MAIN if req.main else 0)
        | (EXEC_SET_GROUPS if req.set_groups else 0)
        | (EXEC_QUIET if req.quiet else 0)
        | (EXEC_CGROUP if req.cgroup else 0)
        | (EXEC_TTY if req.tty_size is not None else 0)
        | (EXEC_HOLD if req.hold else 0)
    )
    rows, cols = req.tty_size or (0, 0)
    limits = _packed_rlimits(req.rlimits) if req.rlimits else b""
    groups = struct.pack(f"={len(req.groups)}I", *req.groups) if req.groups else b""
    header = _HEADER.pack(
        MSG_EXEC,
        flags,
        req.uid,
        req.gid,
        len(req.groups),
        len(req.rlimits),
        req.cap_keep,
        len(req.argv),
        len(req.env),
        len(strings),
        req.fault,
        req.id,
        rows << 16 | cols,
        0,
        *(req.cap_sets or (0, 0, 0, 0)),
    )
    return header + limits + groups + strings


@functools.lru_cache(maxsize=64)  # (a container's requests share theirs)
def _packed_rlimits(rlimits: Tuple[Tuple[str, int, int], ...]) -> bytes:
    return b"".join(
        _RLIMIT.pack(RLIMIT_NUMBERS[name], 0, min(soft, _INFINITY), min(hard, _INFINITY))
        for name, soft, hard in rlimits
    )


def renamed(req: ExecRequest, payload: bytes, command_id: int) -> Tuple[ExecRequest, bytes]:
    """``req`` and its encoding ``payload`` (``encode_exec``) as command
    ``command_id``: a container's repeated commands are encoded once."""
    return req._replace(id=command_id), b"".join((payload[:_ID_AT], _ID.pack(command_id), payload[_ID_AT + _ID.size :]))


def encode_signal(command_id: int, sig: int, *, group: bool) -> bytes:
    return _SIGNAL.pack(MSG_SIGNAL, command_id, sig, int(group), 0)


def encode_stop(grace: float) -> bytes:
    return _SIGNAL.pack(MSG_STOP, 0, 0, 0, max(0, int(grace * 1000)))


class Reply(NamedTuple):
    """One reply of the init (a NamedTuple, as ExecRequest: one per command)."""

    kind: int
    pid: int
    status: int
    step: int
    errno: int
    index: int
    flags: int  # with EXITED and FAILED: CGROUP_READY
    host_pid: Optional[int] = None  # with PID: the command's pid, translated to ours
    fd: Optional[int] = None  # with TTY: the terminal's master (ours to close)


_CREDENTIALS = struct.Struct("=iII")  # struct ucred: pid, uid, gid
_CMSG_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size) + socket.CMSG_SPACE(4)  # and one fd (TTY)


def reply_socketpair(*, credentials: bool = True) -> Tuple[socket.socket, socket.socket]:
    """(ours, the init's).  With ``credentials`` ours receives the credentials
    of every sender, so the PID message, sent by the command's own process,
    carries its pid (a quiet request gets none: no need)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if credentials:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def reply_socket(*, credentials: bool) -> Tuple[socket.socket, int]:
    """``reply_socketpair`` with the init's end as a bare fd, to send and
    close (no socket object made for it: ~2 us of every command)."""
    ours, theirs = _socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, ours.detach())
    if credentials:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return sock, theirs.detach()


def decode_reply(sock: socket.socket, *, block: bool = True) -> Optional[Reply]:
    """Read one reply; None when the init closed the socket without one.
    Without ``block``, BlockingIOError says none is there yet."""
    flags = socket.MSG_CMSG_CLOEXEC if block else socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT
    data, ancillary, _flags, _addr = sock.recvmsg(REPLY_SIZE, _CMSG_SPACE, flags)
    if not ancillary:  # (the usual reply: no fds, no credentials)
        return Reply(*_REPLY.unpack(data)) if len(data) == REPLY_SIZE else None
    fds = [
        fd
        for level, kind, payload in ancillary
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        for fd in struct.unpack(f"={len(payload) // 4}i", payload[: len(payload) // 4 * 4])
    ]
    reply = Reply(*_REPLY.unpack(data)) if len(data) == REPLY_SIZE else None
    if reply is not None and reply.kind == REPLY_TTY and len(fds) == 1:
        return reply._replace(fd=fds[0])
    for fd in fds:  # none is expected here
        os.close(fd)
    if reply is None or reply.kind != REPLY_PID:
        return reply  # other replies carry the init's own credentials: no command pid
    for level, kind, payload in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS) and len(payload) >= _CREDENTIALS.size:
            return reply._replace(host_pid=_CREDENTIALS.unpack_from(payload)[0])
    return reply


def send_request(control: socket.socket, payload: bytes, fds: Sequence[int], *, block: bool = True) -> None:
    """Send one request; without ``block`` BlockingIOError says the socket is full."""
    rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))  # (socket.send_fds, one call less)
    control.sendmsg([payload], [rights], 0 if block else socket.MSG_DONTWAIT)
