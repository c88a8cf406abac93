"""A lasting container's main command (``command=``, as ``docker run -d``):
started with the set-up, ``wait()`` for its Result, its output kept in
rotated logs (``log=``) read back with ``logs()``."""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Tuple, cast

from ..config import (
    check_timeout,
)
from ..errors import ConfigError, ContainerStateError
from ..native import protocol
from ..posix.interrupts import sigint_deferred
from ..posix.steps import Steps
from ..results import Result
from ..streams import DEVNULL, PIPE
from . import statedir
from .launch import submit
from .lifecycle import ContainerLifecycle
from .logs import LogWriter, Since, read_log
from .process import Process, result_of

__all__ = ["MainCommand"]


class MainCommand(ContainerLifecycle):
    """The main command of a :class:`~sandboxlib.runtime.commands.BareContainer` (a part of it)."""

    _main: Optional[Process] = None  # the main command (config.command), once started
    _log: Optional[LogWriter] = None  # its log's writer (config.log)
    # (the command path: BareContainer's)
    _request: Callable[..., protocol.ExecRequest]
    _track: Callable[[Process], Process]
    _signal: Callable[[int, int, bool], None]
    _setup_failure: Callable[[], Optional[BaseException]]

    def _start_steps(self) -> Steps:
        """Start the container: its init, idle until commands arrive, or with
        its main command (``command=``) running, as ``docker run -d``."""
        if self.config.command is None:
            return super()._start_steps()
        return self._start_main()

    def _start_main(self) -> Steps:
        """Steps: start with the main command queued behind the set-up (as a
        one-shot run), then wait for its start: a failure to start raises here."""
        command = self.config.command
        argv = () if command is True else cast(tuple, command)
        output = PIPE if self.config.log else DEVNULL  # detached, as docker run -d: not our terminal
        sent: list = []

        def first() -> None:
            full = self._image.command(argv) if self._image else argv
            request = self._request(full, env=None, cwd=None, user=None, main=True)._replace(quiet=False)
            assert self._control is not None  # first() runs after the clone
            sent.append(submit(self._control, request, DEVNULL, output, output))

        try:
            yield from self._start_container(first, one_shot=False)
            starting = sent.pop().started_steps(self._signal, self._setup_failure)  # (its fds now)
            self._main = self._track((yield from starting))
            if self.config.log:
                self._start_log(self._main)
        except BaseException:
            for submission in sent:
                submission.abandon()
            self.close()
            raise

    def _start_log(self, main: Process) -> None:
        """Hand the main command's pipes to a log writer (its files made once the state record exists)."""
        log = self.config.log
        assert main.stdout is not None and main.stderr is not None and self._record is not None
        if log is True:
            root = os.path.dirname(self._record)
            path = os.path.join(statedir.make_log_dir(root, self.id), "container.log")
        else:
            path = cast(str, log)
        ends: List[int] = []
        with sigint_deferred():  # the writer owns the pipes, and the container its writer
            try:
                for pipe in (main.stdout, main.stderr):
                    ends.append(os.dup(pipe.fileno()))
            except BaseException:
                for fd in ends:
                    os.close(fd)
                raise
            main.stdout.close()
            main.stderr.close()
            main.stdout = main.stderr = None
            # (it owns the ends from here on, also when it raises)
            try:
                self._log = LogWriter(path, self.config.log_max_size, self.config.log_max_files, *ends)
            except OSError as err:
                raise ConfigError("log", f"cannot write the log file {path}: {err.strerror}") from None
            self._on_close(self._log.stop)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main command (``command=``), as ``docker kill -s``;
        nothing once it has ended (the container ends with it)."""
        if self._main is None:
            raise ContainerStateError("the container has no main command (give command=[...]) or did not start")
        self._main.send_signal(sig)

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Wait for the main command (``command=``) to end and return its
        :class:`Result` (no output in it: see ``log``/``logs()``).  The container
        has ended with it.  Raises ``TimeoutExpired`` after ``timeout`` seconds
        (the command keeps running)."""
        timeout = check_timeout(timeout)
        main = self._main_command()
        main.wait(timeout)
        self._init_exited(None)  # it ends the container at once: no command runs from here on
        if self._log is not None:
            self._log.join()  # its output is all in the log
        return self._main_result(main)

    def _main_command(self) -> Process:
        """The main command (both fronts' ``wait``), or why there is none."""
        if self._main is None:
            raise ContainerStateError(
                "the container has no main command (give command=[...]) or did not start"
                if self.config.command is None or not self._resources_used
                else "the container's main command did not start"
            )
        return self._main

    def _main_result(self, main: Process) -> Result:
        """The main command's Result, once it and the container ended."""
        return result_of(main, None, None, timed_out=False, events=((0, 0), self._counters()))

    def logs(
        self, *, tail: Optional[int] = None, follow: bool = False, timestamps: bool = False, since: Since = None
    ) -> Iterator[Tuple[str, bytes]]:
        """The main command's output kept by ``log=``: ``(stream, data)`` pairs,
        ``stream`` ``"stdout"`` or ``"stderr"``, ``data`` a line (with its
        newline) or a piece of a line longer than 16 KiB, oldest first.

        ``tail``: only the last N; ``since``: only those from this time on
        (seconds since the epoch or an aware datetime); ``timestamps``: data
        starts with its RFC 3339 time and a space (``docker logs -t``);
        ``follow``: then what comes, until the main command ends.  Readable
        while running and after the command ended until ``close()``; a
        ``log=PATH`` also after (the file outlives the container).  The
        format is documented in ``sandboxlib.runtime.logs``."""
        log = self.config.log
        if log is False:
            raise ContainerStateError(
                "this container keeps no log: start it with log=True (or a file path) "
                "and a main command (command=[...])"
            )
        if log is True and (self._log is None or self._closed):
            raise ContainerStateError(
                "the log is kept from the start of the container until close(): "
                + ("it is closed (log=PATH keeps a log after close)" if self._closed else "it has not started")
            )
        path = self._log.path if self._log is not None else cast(str, log)
        return read_log(
            path,
            self.config.log_max_files,
            tail=tail,
            follow=follow,
            timestamps=timestamps,
            since=since,
            writer=self._log if not self._closed else None,
        )
