"""A command running in a container: a Popen-like handle.

The container's init started it and reports its exit on the command's own
reply socket, so each handle can be waited on from any thread without
touching the others.  The container's close (any thread) may end a handle
another thread waits on: the reply socket is a :class:`SharedFd`, shut down
to wake the waiter and closed once it let go.  A handle belongs to the
process that made it: in a forked child it only closes its own fds."""

from __future__ import annotations

import _thread
import errno
import fcntl
import math
import os
import select
import selectors
import signal as signal_module
import socket
import struct
import termios
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..config import check_timeout, check_window_size, data_bytes
from ..errors import ConfigError, ContainerStateError, TimeoutExpired
from ..native import protocol
from ..posix.io import shutdown_quietly
from ..posix.sharedfd import SharedFd
from ..results import Result, Verdict, verdict_of

__all__ = ["Process", "Result", "Verdict", "verdict_of", "result_of"]

_CHUNK = 1 << 16


def result_of(
    proc: Process,
    out: Optional[bytes],
    err: Optional[bytes],
    *,
    timed_out: bool,
    events: Tuple[Tuple[int, int], Tuple[int, int]],
) -> Result:
    """The Result of an ended process; ``events``: the container's (OOM kills,
    forks refused) before and after it ran."""
    code = proc.returncode
    assert code is not None, "the Result of a running process"
    sig = signal_module.Signals(-code) if code < 0 else None
    exit_code = 128 + sig if sig else code
    (oom_before, pids_before), (oom_after, pids_after) = events
    oom_killed, pids_limit_hit = oom_after > oom_before, pids_after > pids_before
    verdict = verdict_of(
        exit_code=exit_code, sig=sig, timed_out=timed_out, oom_killed=oom_killed, pids_limit_hit=pids_limit_hit
    )
    return Result(
        argv=proc.args,
        exit_code=exit_code,
        signal=sig,
        timed_out=timed_out,
        stdout=out,
        stderr=err,
        duration=(proc.ended or time.monotonic()) - proc.started,
        verdict=verdict,
        oom_killed=oom_killed,
        pids_limit_hit=pids_limit_hit,
    )


class _PollSet:
    """The part of ``selectors.PollSelector`` that communicate() uses
    (register, unregister, modify, get_map, select), without its layers: it
    cost ~45 Python calls per command (each register and unregister 4, each
    select a lookup per fd), this ~12.  A poll object holds no fd: nothing
    to close."""

    __slots__ = ("_poll", "keys")

    def __init__(self) -> None:
        self._poll = select.poll()
        self.keys: Dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd in self.keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._poll.register(fd, _POLL_EVENTS[events & 3])
        key = self.keys[fd] = _new_key(selectors.SelectorKey, (fileobj, fd, events, data))
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        except ValueError:  # closed meanwhile: its key has the number it had
            fd = next(key.fd for key in self.keys.values() if key.fileobj is fileobj)
        key = self.keys.pop(fd)
        self._poll.unregister(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def get_map(self) -> Dict[int, selectors.SelectorKey]:
        return self.keys

    def select(self, timeout: Optional[float]) -> List[Tuple[selectors.SelectorKey, int]]:
        """As PollSelector's: (key, events) of the ready fds; [] after ``timeout`` seconds."""
        ready = []
        for fd, event in self._poll.poll(None if timeout is None else max(math.ceil(timeout * 1e3), 0)):
            key = self.keys.get(fd)
            if key is not None:
                events = (selectors.EVENT_WRITE if event & ~select.POLLIN else 0) | (
                    selectors.EVENT_READ if event & ~select.POLLOUT else 0
                )
                ready.append((key, events & key.events))
        return ready


_new_key = tuple.__new__  # a SelectorKey without its Python-level __new__ (as namedtuple's _make)
# selectors' EVENT_READ (1) and EVENT_WRITE (2) -> poll's
_POLL_EVENTS = (0, select.POLLIN, select.POLLOUT, select.POLLIN | select.POLLOUT)


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` becomes readable within ``timeout`` seconds (one poll, no selector)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(math.ceil(max(timeout, 0) * 1e3)))


class Process:
    """A running command.  Mirrors ``subprocess.Popen``: ``pid``, ``returncode``,
    ``stdin``/``stdout``/``stderr`` (raw binary files when PIPE), ``poll``,
    ``wait``, ``communicate``, ``send_signal``, ``terminate``, ``kill``.

    Started with ``tty=True`` it has a pseudo-terminal instead of pipes:
    ``terminal`` is our end (the master, a raw binary file: select on it),
    ``read(n)``/``write(data)`` go through it, ``resize(rows, cols)`` sets
    its window size (the command gets SIGWINCH); stdout and stderr come
    merged, as on any terminal.  ``close()`` closes it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        request_id: int,
        container_pid: int,
        host_pid: Optional[int],
        reply: socket.socket,
        pipes: Sequence[Optional[int]],
        signal_sender: Callable[[int, int, bool], None],
        started: Optional[float] = None,
        terminal: Optional[int] = None,
        failure: Optional[Callable[[Optional[protocol.Reply]], BaseException]] = None,
    ) -> None:
        self.args = tuple(argv)
        self.container_pid = container_pid
        self.request_id = request_id
        self.returncode: Optional[int] = None
        self.started = started if started is not None else time.monotonic()
        # Started without waiting for the init's STARTED reply: a FAILED reply
        # or the socket's EOF then becomes the exception failure() returns.
        self._failure = failure
        self.ended: Optional[float] = None
        self._pid = host_pid
        self._owner = os.getpid()
        self._reply = SharedFd(reply, socket.socket.close, "the command's reply socket is closed")
        self._reply_lock = _thread.RLock()  # one reader of the replies at a time (threading.RLock's, without its call)
        self._released = False
        self._send_signal = signal_sender
        self._partial = {1: bytearray(), 2: bytearray()}
        self._input_left: Optional[memoryview] = None  # what communicate() has still to write
        self.stdin = open(pipes[0], "wb", buffering=0) if pipes[0] is not None else None
        self.stdout = open(pipes[1], "rb", buffering=0) if pipes[1] is not None else None
        self.stderr = open(pipes[2], "rb", buffering=0) if pipes[2] is not None else None
        self.terminal = open(terminal, "r+b", buffering=0) if terminal is not None else None
        self._terminal_ended = False  # its terminal said EIO: no process holds it any more
        self._cgroup = None  # its own cgroup (a cgroups.CommandCgroup), when it has one
        self._cgroup_ready = False  # the init said its cgroup may serve the next command

    @property
    def pid(self) -> Optional[int]:
        """The host pid (None for a command started without confirmation, as ``run`` does)."""
        return self._pid

    def __repr__(self) -> str:
        return f"<sandboxlib.Process args={list(self.args)!r} returncode={self.returncode}>"

    # -- exit status -------------------------------------------------
    def _take_reply(self, timeout: Optional[float]) -> bool:
        """Wait up to timeout for the exit reply; True once returncode is set."""
        if os.getpid() != self._owner:
            self._check_owner()  # (its error)
        if self.returncode is not None:
            return True
        with self._reply.use(closed_ok=True) as sock:  # None: closed, the container ended under it
            if sock is not None and timeout is not None and timeout > 0 and not _readable(sock, timeout):
                return False
            with self._reply_lock:  # another thread may have read it meanwhile
                if self.returncode is not None:
                    return True
                if sock is None:
                    return self._took(None, timeout)
                try:  # (a timeout of 0 reads only a reply that is there: no poll)
                    reply = protocol.decode_reply(sock, block=timeout is None or timeout > 0)
                except BlockingIOError:
                    return False
                return self._took(reply, timeout)

    def _took(self, reply: Optional[protocol.Reply], timeout: Optional[float]) -> bool:
        if self.returncode is not None:
            return True
        if reply is not None and reply.kind == protocol.REPLY_STARTED:
            self._failure = None
            return self._take_reply(timeout)
        if self._failure is not None and (reply is None or reply.kind == protocol.REPLY_FAILED):
            error = self._failure(reply)
            if reply is not None:
                self._failed_start(reply)
            self._release()
            raise error
        if reply is None or reply.kind != protocol.REPLY_EXITED:
            self.returncode = -signal_module.SIGKILL  # the container ended under it
        else:
            self.returncode = os.waitstatus_to_exitcode(reply.status)
            self._cgroup_ready = bool(reply.flags & protocol.CGROUP_READY)
        self.ended = time.monotonic()
        self._release()
        return True

    def _failed_start(self, reply: protocol.Reply) -> None:
        """Its start failed: its cgroup serves the next command if the init found
        it ready, else what the start left there is killed with it (a command
        whose forker died before answering the init)."""
        self._cgroup_ready = bool(reply.flags & protocol.CGROUP_READY)
        if self._cgroup is not None and not self._cgroup_ready and not self._forked():
            self._cgroup.kill()

    def _release(self) -> None:
        """Close the reply socket (once no thread uses it) and remove the command's cgroup, once."""
        with self._reply_lock:
            released, self._released = self._released, True
        if released:
            return
        self._reply.close(wake=shutdown_quietly)
        if self._cgroup is not None and not self._forked():
            group, self._cgroup = self._cgroup, None  # (another command may use it next: never kill it from here)
            group.release(self._cgroup_ready)  # kept for reuse, or removed; one still busy goes with the container's

    def container_ended(self) -> None:
        """Its container is gone: so is the process.  Release the reply socket
        now (pipes stay: what is buffered in them is still the caller's); a
        thread waiting on it sees the end (SIGKILL) unless the exit was sent."""
        if self.returncode is None:
            self._failure = None  # an EOF now is the end, not a failure to start
            try:
                if self._take_reply(0):  # its exit status, if sent
                    return
            except OSError:
                pass
            with self._reply_lock:
                if self.returncode is None:
                    self.returncode = -signal_module.SIGKILL
                    self.ended = time.monotonic()
            self._release()

    def _forked(self) -> bool:
        return os.getpid() != self._owner

    def _check_owner(self) -> None:
        if os.getpid() != self._owner:
            raise ContainerStateError(
                f"this command belongs to process {self._owner}, which started it; in a forked child "
                f"(pid {os.getpid()}) it cannot be used"
            )

    def poll(self) -> Optional[int]:
        self._take_reply(0)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the exit; raises TimeoutExpired (the process keeps running).
        ``timeout``: None, or seconds (0 polls)."""
        timeout = check_timeout(timeout, zero=True)
        if not self._take_reply(timeout):
            assert timeout is not None  # without one, _take_reply waits for the reply
            raise TimeoutExpired(self.args, timeout)
        assert self.returncode is not None  # the reply was taken
        return self.returncode

    # -- signals -----------------------------------------------------
    def send_signal(self, sig: int) -> None:
        self._check_owner()
        if self.returncode is None:
            self._send_signal(self.request_id, int(sig), False)

    def terminate(self) -> None:
        self.send_signal(signal_module.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal_module.SIGKILL)

    def use_cgroup(self, group) -> None:
        """The command runs in its own cgroup ``group`` (kill_tree kills it; it
        is removed once the command has ended and it is empty)."""
        self._cgroup = group

    def killed_by_us(self) -> None:
        """We are killing it (or its container): an EOF is its end, not a failure to start."""
        self._failure = None

    def kill_tree(self) -> None:
        """SIGKILL everything the command started: its own cgroup when it has
        one (sessions and daemons included), else its process group."""
        self._check_owner()
        if self._cgroup is not None:
            self._cgroup.kill()
        elif self.returncode is None:
            self._send_signal(self.request_id, signal_module.SIGKILL, True)

    # -- the terminal ------------------------------------------------
    def _master(self):
        self._check_owner()
        if self.terminal is None:
            raise ConfigError("tty", f"{list(self.args)!r} has no terminal: start it with tty=True")
        return self.terminal

    def read(self, n: int = _CHUNK) -> bytes:
        """Up to ``n`` bytes of the terminal's output (blocks until there is
        some); b"" once every process of the command let go of the terminal."""
        master = self._master()
        os.set_blocking(master.fileno(), True)  # communicate() may have left it non-blocking
        try:
            return os.read(master.fileno(), n)
        except OSError as err:
            if err.errno == errno.EIO:  # the slave side is closed: the terminal's end of file
                return b""
            raise

    def write(self, data: Union[bytes, str]) -> int:
        """Type ``data`` (bytes, or a str: UTF-8) into the terminal; returns its length."""
        master = self._master()
        raw = data_bytes(data, "data")
        os.set_blocking(master.fileno(), True)
        view = memoryview(raw)
        while view:
            view = view[os.write(master.fileno(), view) :]
        return len(raw)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's window size (the command's foreground job gets SIGWINCH)."""
        rows, cols = check_window_size(rows, cols)
        fcntl.ioctl(self._master().fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # -- streams -----------------------------------------------------
    def communicate(
        self, input: Optional[bytes] = None, timeout: Optional[float] = None
    ) -> Tuple[Optional[bytes], Optional[bytes]]:
        """Feed input, read stdout and stderr to EOF, wait for the exit.

        Raises TimeoutExpired with what was read so far; calling again
        goes on where it stopped.  ``input``: bytes, or a str (UTF-8);
        ``timeout``: None, or seconds (0 polls)."""
        if os.getpid() != self._owner:
            self._check_owner()  # (its error)
        if timeout is not None:
            timeout = check_timeout(timeout, zero=True)
        if input is not None:
            input = data_bytes(input, "input")
        deadline = None if timeout is None else time.monotonic() + timeout
        sel = _PollSet()  # a few fds, once: poll() beats creating an epoll fd
        with self._reply.use(closed_ok=True) as reply:
            self._register(sel, input, reply)
            while sel.keys:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    assert timeout is not None  # the deadline's
                    raise self._timed_out(timeout)
                for key, events in sel.select(remaining):
                    self._service(sel, key, events, fresh=True)
        return self._collected()

    def _timed_out(self, timeout: float) -> TimeoutExpired:
        return TimeoutExpired(self.args, timeout, bytes(self._partial[1]), bytes(self._partial[2]))

    def _collected(self) -> Tuple[Optional[bytes], Optional[bytes]]:
        """communicate()'s (stdout, stderr) once everything was read; closes our read ends."""
        out = (
            bytes(self._partial[1])
            if self.stdout is not None or self.terminal is not None or self._partial[1]
            else None
        )
        err = bytes(self._partial[2]) if self.stderr is not None or self._partial[2] else None
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return out, err

    def _register(self, sel: Any, input: Optional[bytes], reply: Optional[socket.socket], *, exit: bool = True) -> None:
        """Register what is left to do in ``sel`` (a _PollSet, or aio's LoopSelector);
        ``reply``: the reply socket in use, None
        once closed (without ``exit``: the streams only; ``_register_exit`` then)."""
        if self.terminal is not None and not self.terminal.closed and not self._terminal_ended:
            # Output comes merged on the terminal; input is typed into it.
            if self._input_left is None:
                self._input_left = memoryview(input or b"")
            os.set_blocking(self.terminal.fileno(), False)
            sel.register(
                self.terminal, selectors.EVENT_READ | (selectors.EVENT_WRITE if self._input_left else 0), "terminal"
            )
        if self.stdin is not None and not self.stdin.closed:
            if self._input_left is None:  # the first call's input; later calls go on with it
                self._input_left = memoryview(input or b"")
            if self._input_left:
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin, selectors.EVENT_WRITE, "stdin")
            else:
                self.stdin.close()
        for which, stream in ((1, self.stdout), (2, self.stderr)):
            if stream is not None and not stream.closed:
                sel.register(stream, selectors.EVENT_READ, which)
        if exit:
            self._register_exit(sel, reply)

    def _register_exit(self, sel: Any, reply: Optional[socket.socket]) -> None:
        if self.returncode is None and reply is not None:
            sel.register(reply, selectors.EVENT_READ, "exit")
        elif self.returncode is None:
            self._take_reply(None)  # the container ended: the reply socket is closed

    def _service_terminal(self, sel: Any, key: selectors.SelectorKey, events: int) -> None:
        if events & selectors.EVENT_WRITE and self._input_left:
            try:
                self._input_left = self._input_left[os.write(key.fd, self._input_left[:_CHUNK]) :]
            except BlockingIOError:
                pass
            if not self._input_left:
                sel.modify(key.fileobj, selectors.EVENT_READ, "terminal")
        if events & selectors.EVENT_READ:
            try:
                chunk = os.read(key.fd, _CHUNK)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.EIO:
                    raise
                chunk = b""  # EIO: no process holds the terminal any more
            if chunk:
                self._partial[1] += chunk
            else:
                self._terminal_ended = True
                sel.unregister(key.fileobj)

    def _service(self, sel: Any, key: selectors.SelectorKey, events: int = 0, fresh: bool = False) -> None:
        """Act on one ready fd.  An event loop may report a readiness that
        an earlier step used up: the pipes are then non-blocking, and
        nothing to do is not an error.  ``fresh``: the readiness was just
        polled (communicate's own loop), so the exit reply is read at once."""
        if key.data == "terminal":
            self._service_terminal(sel, key, events)
        elif key.data == "exit" and fresh:
            sel.unregister(key.fileobj)
            self._take_reply(None)  # (a STARTED is followed by the exit: read it too)
        elif key.data == "exit":
            if self._take_reply(0):  # (readable: a reply, or a STARTED the exit follows)
                sel.unregister(key.fileobj)
        elif key.data == "stdin":
            left, stdin = self._input_left, self.stdin
            assert left is not None and stdin is not None  # _register registered stdin with its input
            try:
                written = os.write(key.fd, left[:_CHUNK])
            except BrokenPipeError:
                written = len(left)
            except BlockingIOError:
                return
            self._input_left = left[written:]
            if not self._input_left:
                sel.unregister(stdin)
                stdin.close()
        else:
            try:
                chunk = os.read(key.fd, _CHUNK)
            except BlockingIOError:
                return
            if chunk:
                self._partial[key.data] += chunk
            else:
                sel.unregister(key.fileobj)

    def close(self) -> None:
        """Close our pipe ends and the reply socket (does not kill).  In a forked
        child: only its copies of them."""
        for stream in (self.stdin, self.stdout, self.stderr, self.terminal):
            if stream is not None:
                stream.close()
        self._release()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
