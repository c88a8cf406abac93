"""Hand one command to a container's init and wait for it to start.

Split in two so that the first command of a one-shot container can be sent
before the container has finished setting up: the init finds it queued on
its control socket the moment it starts."""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Generator, List, Optional

from ..cgroups import CommandCgroup
from ..errors import ConfigError, ContainerStateError
from ..native import protocol
from ..native.failures import exec_error
from ..streams import StdioSpec, resolve_stdio
from .process import Process

__all__ = ["Outgoing", "Submission", "prepare", "submit"]


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
        self._host_pid: Optional[int] = None
        self._first: Optional[protocol.Reply] = None
        self._terminal: Optional[int] = None  # the master of a tty request, once the init sent it
        self._lost: Optional[Callable[[], Optional[BaseException]]] = None  # explains a quiet request's EOF
        self.sent_at = time.monotonic()

    def abandon(self, kill: bool = False) -> None:
        """Release our ends (the command, if it starts, sees EOF/EPIPE); ``kill``:
        first kill what it started, if it has a cgroup of its own."""
        self._reply.close()
        if self._cgroup is not None:
            if kill:
                self._cgroup.kill()
            self._cgroup.remove()
            self._cgroup = None
        for fd in self._pipes:
            if fd is not None:
                os.close(fd)
        self._pipes = [None, None, None]
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None

    def _abandon_failed(self, reply: Optional[protocol.Reply]) -> None:
        """Abandon a start the init failed: its cgroup serves the next command
        if the init found it ready, else it is killed (what the start left
        there: a command whose forker died before answering) and removed."""
        if self._cgroup is not None and reply is not None and reply.flags & protocol.CGROUP_READY:
            self._cgroup.release(True)
            self._cgroup = None
        self.abandon(kill=reply is not None)

    def _take_terminal(self, lost: Optional[Callable[[], Optional[BaseException]]] = None) -> None:
        """For a tty request: the init's first reply carries the terminal's
        master (it comes once the container is set up), or says why not."""
        if self.request.tty_size is None or self._terminal is not None:
            return
        try:
            first = protocol.decode_reply(self._reply)
        except BaseException:
            self.abandon()
            raise
        if not self._took_terminal(first):
            self._abandon_failed(first)
            raise self._error(first, lost)

    def _took_terminal(self, reply: Optional[protocol.Reply]) -> bool:
        if reply is not None and reply.kind == protocol.REPLY_TTY and reply.fd is not None:
            self._terminal = reply.fd
            return True
        return False

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

    def accept(self, reply: Optional[protocol.Reply]) -> bool:
        """Take one reply of the start (read when the reply socket is
        readable); True once the start is decided: STARTED, or a failure."""
        if self.request.tty_size is not None and self._terminal is None and self._took_terminal(reply):
            return False  # the terminal first, then PID and STARTED
        if reply is not None and reply.kind == protocol.REPLY_PID:
            self._host_pid = reply.host_pid  # its child, forked: STARTED or FAILED follows
            return False
        self._first = reply
        return True

    def read_reply(self) -> Optional[protocol.Reply]:
        return protocol.decode_reply(self._reply)

    @property
    def reply_socket(self) -> socket.socket:
        return self._reply

    def process(
        self,
        signal_sender: Callable[[int, int, bool], None],
        lost: Optional[Callable[[], Optional[BaseException]]] = None,
    ) -> Process:
        """Once ``accept`` decided: the running Process, or the exception for the step that failed."""
        first = self._first
        if first is None or first.kind != protocol.REPLY_STARTED:
            self._abandon_failed(first)
            raise self._error(first, lost)
        return self._in_cgroup(
            Process(
                self.request.argv,
                request_id=self.request.id,
                container_pid=first.pid,
                host_pid=self._host_pid,
                reply=self._reply,
                pipes=self._pipes,
                signal_sender=signal_sender,
                started=self.sent_at,
                terminal=self._terminal,
            )
        )

    def started(
        self,
        signal_sender: Callable[[int, int, bool], None],
        lost: Optional[Callable[[], Optional[BaseException]]] = None,
    ) -> Process:
        """Wait for the command's PID message and the init's STARTED: the
        running Process, or the exception for the step that failed (``lost()``
        explains an EOF)."""
        try:
            while not self.accept(self.read_reply()):
                pass
        except BaseException:
            self.abandon()
            raise
        return self.process(signal_sender, lost)

    def started_steps(
        self,
        signal_sender: Callable[[int, int, bool], None],
        lost: Optional[Callable[[], Optional[BaseException]]] = None,
    ) -> Generator[int, None, Process]:
        """``started`` as steps (``posix.steps``): each reply is awaited."""
        try:
            while True:
                yield self._reply.fileno()
                if self.accept(self.read_reply()):
                    break
        except BaseException:
            self.abandon()
            raise
        return self.process(signal_sender, lost)

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
                failure=self._failed_with(lost),  # (itself: fewer objects than a closure or a partial)
            )
        )

    def _failed_with(self, lost: Optional[Callable[[], Optional[BaseException]]]) -> Submission:
        self._lost = lost
        return self

    def __call__(self, reply: Optional[protocol.Reply]) -> BaseException:
        """A quiet request's ``failure``: the exception for a first reply that is not its exit."""
        return self._error(reply, self._lost)

    def _in_cgroup(self, process: Process) -> Process:
        if self._cgroup is not None:
            process.use_cgroup(self._cgroup)
        return process


class Outgoing:
    """A request ready to go: its payload and the fds it carries.  ``send``
    it (again while the control socket is full, with a non-blocking send),
    then ``done`` closes the init's ends on our side, sent or not."""

    def __init__(
        self,
        submission: Submission,
        payload: bytes,
        fds: List[int],
        to_close: List[int],
        cgroup: Optional[CommandCgroup],
    ) -> None:
        self.submission = submission
        self.payload = payload
        self.fds = fds
        self._to_close = to_close
        self._cgroup = cgroup
        self.sent = False

    def send(self, control: socket.socket, *, block: bool = True) -> None:
        """Send it; without ``block`` raises BlockingIOError while the socket is full."""
        try:
            protocol.send_request(control, self.payload, self.fds, block=block)
            self.sent = True
        except BlockingIOError:
            raise  # full: the caller waits until it is writable and sends again
        except OSError as err:
            self.submission.abandon()
            raise ContainerStateError(f"the container's init is gone ({err})") from None

    def done(self) -> None:
        for fd in self._to_close:
            os.close(fd)
        self._to_close = []
        self._cgroup = None  # (its fd stays open: the cgroup may serve other commands)


def prepare(
    request: protocol.ExecRequest,
    stdin: StdioSpec,
    stdout: StdioSpec,
    stderr: StdioSpec,
    cgroup: Optional[CommandCgroup] = None,
    payload: Optional[bytes] = None,
) -> Outgoing:
    """Encode ``request`` (unless its ``payload`` is given) with its stdio, a
    fresh reply socket and the directory of its own ``cgroup`` (if any; the
    Process then owns it).  A tty request sends no stdio: the init opens the
    terminal (the caller checked the stdio arguments are None)."""
    try:
        if cgroup is not None and not request.cgroup:
            request, payload = request._replace(cgroup=True), None
        if payload is None:
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
    reply, reply_fd = protocol.reply_socket(credentials=not request.quiet)
    extra = [cgroup.fd] if cgroup is not None else []
    return Outgoing(
        Submission(request, reply, ours, cgroup), payload, [reply_fd, *child_fds, *extra], [reply_fd, *to_close], cgroup
    )


def submit(
    control: socket.socket,
    request: protocol.ExecRequest,
    stdin: StdioSpec,
    stdout: StdioSpec,
    stderr: StdioSpec,
    cgroup: Optional[CommandCgroup] = None,
) -> Submission:
    """Send ``request`` (see ``prepare``) to the init."""
    outgoing = prepare(request, stdin, stdout, stderr, cgroup)
    try:
        outgoing.send(control)
    finally:
        outgoing.done()
    return outgoing.submission
