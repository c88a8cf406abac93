"""Hand one command to a container's init and wait for it to start.

Split in two so that the first command of a one-shot container can be sent
before the container has finished setting up: the init finds it queued on
its control socket the moment it starts."""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, List, Optional

import attrs

from ..cgroups import CommandCgroup
from ..errors import ConfigError, ContainerStateError
from ..native import protocol
from ..native.failures import exec_error
from ..streams import StdioSpec, resolve_stdio
from .process import Process

__all__ = ["Submission", "submit"]


class Submission:
    """A command sent to the init whose first reply has not been read yet."""

    def __init__(
        self,
        request: protocol.ExecRequest,
        reply: socket.socket,
        pipes: List[Optional[int]],
        cgroup: Optional[CommandCgroup] = None,
    ) -> None:
        self.request = request
        self._reply = reply
        self._pipes = pipes
        self._cgroup = cgroup
        self._terminal: Optional[int] = None  # the master of a tty request, once the init sent it
        self.sent_at = time.monotonic()

    def abandon(self) -> None:
        """Release our ends (the command, if it starts, sees EOF/EPIPE)."""
        self._reply.close()
        if self._cgroup is not None:
            self._cgroup.remove()
        for fd in self._pipes:
            if fd is not None:
                os.close(fd)
        self._pipes = [None, None, None]
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None

    def _take_terminal(self, lost: Optional[Callable[[], Optional[BaseException]]] = None) -> None:
        """For a tty request: the init's first reply carries the terminal's
        master (it comes once the container is set up), or says why not."""
        if self.request.tty_size is None:
            return
        try:
            first = protocol.decode_reply(self._reply)
        except BaseException:
            self.abandon()
            raise
        if first is not None and first.kind == protocol.REPLY_TTY and first.fd is not None:
            self._terminal = first.fd
            return
        self.abandon()
        raise self._error(first, lost)

    def _error(
        self, reply: Optional[protocol.Reply], lost: Optional[Callable[[], Optional[BaseException]]] = None
    ) -> BaseException:
        """The exception for a first reply that is not STARTED."""
        if reply is None:
            return (lost and lost()) or ContainerStateError("the container ended before the command started")
        req = self.request
        return exec_error(
            reply.step,
            reply.errno,
            reply.index,
            {
                "argv": req.argv,
                "search_path": req.search_path,
                "cwd": req.cwd,
                "uid": req.uid,
                "gid": req.gid,
                "rlimits": req.rlimits,
            },
        )

    def started(
        self,
        signal_sender: Callable[[int, int, bool], None],
        lost: Optional[Callable[[], Optional[BaseException]]] = None,
    ) -> Process:
        """Wait for the command's PID message and the init's STARTED: the
        running Process, or the exception for the step that failed (``lost()``
        explains an EOF)."""
        host_pid = None
        self._take_terminal()
        try:
            first = protocol.decode_reply(self._reply)
            if first is not None and first.kind == protocol.REPLY_PID:
                host_pid = first.host_pid  # its child, forked: STARTED or FAILED follows
                first = protocol.decode_reply(self._reply)
        except BaseException:
            self.abandon()
            raise
        if first is None or first.kind != protocol.REPLY_STARTED:
            self.abandon()
            raise self._error(first, lost)
        return self._in_cgroup(
            Process(
                self.request.argv,
                request_id=self.request.id,
                container_pid=first.pid,
                host_pid=host_pid,
                reply=self._reply,
                pipes=self._pipes,
                signal_sender=signal_sender,
                started=self.sent_at,
                terminal=self._terminal,
            )
        )

    def unconfirmed(
        self, signal_sender: Callable[[int, int, bool], None], lost: Callable[[], Optional[BaseException]]
    ) -> Process:
        """The Process of a quiet request, without waiting for any reply: its
        wait/communicate raise the failure (``lost()`` explains an EOF).  A
        tty request waits for its terminal (or the failure to open it)."""
        self._take_terminal(lost)
        return self._in_cgroup(
            Process(
                self.request.argv,
                request_id=self.request.id,
                container_pid=0,
                host_pid=None,
                reply=self._reply,
                pipes=self._pipes,
                signal_sender=signal_sender,
                started=self.sent_at,
                terminal=self._terminal,
                failure=lambda reply: self._error(reply, lost),
            )
        )

    def _in_cgroup(self, process: Process) -> Process:
        if self._cgroup is not None:
            process.use_cgroup(self._cgroup)
        return process


def submit(
    control: socket.socket,
    request: protocol.ExecRequest,
    stdin: StdioSpec,
    stdout: StdioSpec,
    stderr: StdioSpec,
    cgroup: Optional[CommandCgroup] = None,
) -> Submission:
    """Send ``request`` with its stdio, a fresh reply socket and the directory
    of its own ``cgroup`` (if any; the Process then owns it) to the init.  A
    tty request sends no stdio: the init opens the terminal (the caller
    checked the stdio arguments are None)."""
    try:
        if cgroup is not None:
            request = attrs.evolve(request, cgroup=True)
        payload = protocol.encode_exec(request)
        if len(payload) > protocol.MAX_REQUEST:
            raise ConfigError(
                "argv", f"command and environment take {len(payload)} bytes; the limit is {protocol.MAX_REQUEST}"
            )
        if request.tty_size is not None:
            child_fds, ours, to_close = [], [None, None, None], []
        else:
            child_fds, ours, to_close = resolve_stdio(stdin, stdout, stderr)
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    reply, reply_child = protocol.reply_socketpair()
    submission = Submission(request, reply, ours, cgroup)
    try:
        extra = [cgroup.fd] if cgroup is not None else []
        protocol.send_request(control, payload, [reply_child.fileno(), *child_fds, *extra])
    except OSError as err:
        submission.abandon()
        raise ContainerStateError(f"the container's init is gone ({err})") from None
    finally:
        reply_child.close()
        if cgroup is not None:
            cgroup.close_fd()  # the init has its own copy now
        for fd in to_close:
            os.close(fd)
    return submission
