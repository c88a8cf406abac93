"""Commands in a running container: ``run``, ``spawn``, signals, the
one-shot start that queues the main command with the set-up, and a lasting
container's main command (``command=``: ``wait()``, ``logs()``)."""

from __future__ import annotations

import functools
import os
import weakref
from typing import Generator, Mapping, NamedTuple, Optional, Sequence, Tuple, TypeVar, Union

from ..config import (
    ContainerConfig,
    check_env,
    check_text,
    check_timeout,
    container_path,
    data_bytes,
    env_pairs,
    text_codec,
    tty_size,
)
from ..errors import ConfigError, ContainerStateError, SetupError, TimeoutExpired
from ..native import protocol
from ..posix.interrupts import sigint_deferred
from ..posix.io import read_all
from ..posix.signals import pidfd_kill_quietly
from ..posix.steps import Wait, run_steps
from ..results import Result, decoded
from ..security.capabilities import capability_mask
from ..streams import PIPE, StdioSpec
from .launch import Outgoing, Submission, prepare, submit
from .main_command import MainCommand
from .process import Process, result_of

__all__ = ["BareContainer", "DEFAULT_PATH"]

_Self = TypeVar("_Self", bound="BareContainer")

# Encoded requests a container keeps (the argvs it runs again and again).
_TEMPLATES = 64

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _check_argv(argv: Sequence[str]) -> tuple:
    if isinstance(argv, (str, bytes)) or not argv:
        raise ConfigError("argv", "must be a non-empty list of strings, e.g. ['ls', '-l']")
    checked = tuple(argv)
    for arg in checked:  # (plain strings pass without a call each)
        if type(arg) is not str or "\0" in arg:  # the slow way: PathLikes converted, or the error
            checked = tuple(
                check_text(os.fspath(a) if isinstance(a, os.PathLike) else a, f"argv[{i}]")
                for i, a in enumerate(checked)
            )
            break
    if not checked[0]:  # (execve("") is EACCES or ENOENT: a failed step, not the caller's mistake named)
        raise ConfigError("argv[0]", "the command's name is empty")
    return checked


def _tty_stdio(
    tty: object, stdin: StdioSpec, stdout: StdioSpec, stderr: StdioSpec, captured: Tuple[int, ...]
) -> Optional[Tuple[int, int]]:
    """The terminal size of a ``tty`` argument (None: no terminal).  A
    terminal is the command's stdin, stdout and stderr: no other stream may
    be given (``captured``: values that mean "what the terminal shows",
    run()'s PIPE defaults)."""
    size = tty_size(tty)
    if size is not None:
        for field, spec in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if not (spec is None or (field != "stdin" and isinstance(spec, int) and spec in captured)):
                raise ConfigError(
                    field,
                    f"with tty=True the command's {field} is its terminal; got {spec!r} "
                    f"(leave {field} None: read, write and resize the Process)",
                )
    return size


class _RequestDefaults(NamedTuple):
    env: dict  # (read only)
    env_strings: tuple
    cwd: str
    rlimits: tuple
    cap_keep: int


_HOSTNAME = "HOSTNAME"


@functools.lru_cache(maxsize=64)
def _shared_defaults(
    config: ContainerConfig, image_env: tuple, image_cwd: Optional[str], home: str
) -> Tuple[_RequestDefaults, int]:
    """What the requests of every container of one configuration (and image,
    and user) share: made once, not per container.  Its HOSTNAME is left
    empty, for each container's own; the int is its index in env_strings
    (-1: the image or the config set HOSTNAME)."""
    merged = {"PATH": DEFAULT_PATH, "HOME": home, "TERM": "xterm", _HOSTNAME: None}
    merged.update(image_env)
    merged.update(config.env)
    at = list(merged).index(_HOSTNAME) if merged[_HOSTNAME] is None else -1
    return (
        _RequestDefaults(
            merged,
            tuple(f"{k}={v}" for k, v in merged.items()),
            config.cwd or image_cwd or "/",
            config.limits.rlimits(),
            capability_mask(config.capabilities()),
        ),
        at,
    )


class BareContainer(MainCommand):
    """A container that runs commands: no files, no calls.  The short
    sandboxes of ``subids`` are these; :class:`~sandboxlib.Container` is one
    too, with more."""

    _defaults: Optional[_RequestDefaults] = None  # made at the first request
    _templates: Optional[dict] = None  # (argv, flags) -> (request, encoding), made at the first request

    def _environment(self, home: str) -> dict:
        merged = {"PATH": DEFAULT_PATH, "HOME": home, "TERM": "xterm", _HOSTNAME: self.hostname}
        merged.update(self._image.env if self._image else ())
        merged.update(self.config.env)
        return merged

    def _request_defaults(self) -> _RequestDefaults:
        """What every request of this container shares unless told otherwise
        (its config, image and user are fixed once started): made once."""
        if self._defaults is None:
            assert self._user is not None  # resolved at start
            image = self._image
            shared, at = _shared_defaults(
                self.config, image.env if image else (), image.cwd if image else None, self._user.home
            )
            if at >= 0:  # this container's own hostname
                strings = shared.env_strings
                shared = _RequestDefaults(
                    {**shared.env, _HOSTNAME: self.hostname},
                    (*strings[:at], f"{_HOSTNAME}={self.hostname}", *strings[at + 1 :]),
                    shared.cwd,
                    shared.rlimits,
                    shared.cap_keep,
                )
            self._defaults = shared
        return self._defaults

    def _request(
        self,
        argv,
        *,
        env,
        cwd,
        user,
        main: bool,
        quiet: bool = False,
        tty: Optional[Tuple[int, int]] = None,
        command_id: Optional[int] = None,
        cgroup: bool = False,
        checked: bool = False,
    ) -> protocol.ExecRequest:
        """``checked``: ``argv`` is ``_check_argv``'s already."""
        if not checked:
            argv = _check_argv(argv)
        defaults = self._request_defaults()
        if user is None:
            resolved = self._user
            assert resolved is not None  # resolved at start
            merged, env_strings = defaults.env, defaults.env_strings
        else:
            try:
                root_fd = os.open(f"/proc/{self._init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as err:
                raise ContainerStateError(f"the container's init is gone ({err.strerror})") from None
            try:
                resolved = self._checked_user(user, root_fd, "user")
            finally:
                os.close(root_fd)
            merged, env_strings = self._environment(resolved.home), None
        if env is not None:
            extra = env_pairs(env)
            check_env(extra)
            merged = {**merged, **dict(extra)}
            env_strings = None
        if env_strings is None:
            env_strings = tuple(f"{k}={v}" for k, v in merged.items())
        cwd = defaults.cwd if cwd is None else container_path(cwd, "cwd")
        maps = self._maps
        return protocol.ExecRequest(
            argv=argv,
            env=env_strings,
            cwd=cwd,
            search_path=merged["PATH"],
            uid=resolved.uid,
            gid=resolved.gid,
            groups=resolved.groups,
            rlimits=defaults.rlimits,
            cap_keep=defaults.cap_keep,
            id=next(self._command_ids) if command_id is None else command_id,
            main=main,
            quiet=quiet or main,
            set_groups=maps is None or maps.setgroups,
            tty_size=tty,
            fault=self._fault[0] | self._fault[1] << 16 if self._fault else 0,
            cgroup=cgroup,
        )

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: StdioSpec = None,
        stdout: StdioSpec = None,
        stderr: StdioSpec = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        tty: Union[bool, Tuple[int, int]] = False,
    ) -> Process:
        """Start a command in the running container; returns a Popen-like :class:`Process`.

        Streams are ``PIPE``, ``DEVNULL``, ``None`` (inherit ours), an fd or a file
        (and ``STDOUT`` for stderr).  ``tty=True`` (or a ``(rows, cols)``
        size; True is 24x80) gives the command a pseudo-terminal of the
        container's own as its stdio and controlling terminal, in a new
        session; the Process's ``read``/``write``/``resize`` use its end (the
        streams must then be left None)."""
        tty_size = self._spawn_tty(tty, stdin, stdout, stderr)
        return self._start(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd, user=user, main=False, tty=tty_size
        )

    def _start(
        self,
        argv,
        *,
        stdin,
        stdout,
        stderr,
        env,
        cwd,
        user,
        main: bool,
        confirm: bool = True,
        own_cgroup: bool = False,
        tty: Optional[Tuple[int, int]] = None,
    ) -> Process:
        """Start a command; with ``confirm=False`` do not wait for its start
        (its wait/communicate raise a failure to start).  ``own_cgroup``: in
        a cgroup of its own (where the container has a v2 one), so that
        everything it starts can be killed together."""
        self._check_running()
        assert self._channel is not None  # running
        # A close() in another thread waits until the request is sent (or
        # fails: ContainerStateError); Ctrl-C waits until our fds are owned.
        with self._channel.use() as control, sigint_deferred():
            outgoing = self._outgoing(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=cwd,
                user=user,
                main=main,
                confirm=confirm,
                own_cgroup=own_cgroup,
                tty=tty,
            )
            try:
                outgoing.send(control)
            finally:
                outgoing.done()
            if not confirm:
                return self._unconfirmed(outgoing.submission)
        return self._track(outgoing.submission.started(self._signal))

    def _outgoing(
        self,
        argv,
        *,
        stdin,
        stdout,
        stderr,
        env,
        cwd,
        user,
        main: bool,
        confirm: bool,
        own_cgroup: bool,
        tty: Optional[Tuple[int, int]] = None,
    ) -> Outgoing:
        """The request of a command, ready to send (both fronts send it, each its way)."""
        command_id = next(self._command_ids)
        group = self._cgroup.command_group(command_id) if own_cgroup and self._cgroup else None
        try:
            request, payload = self._encoded_request(
                argv, env=env, cwd=cwd, user=user, main=main, quiet=not confirm, tty=tty, cgroup=group is not None
            )
        except BaseException:
            if group is not None:
                group.release(True)  # (unused)
            raise
        request, payload = protocol.renamed(request, payload, command_id)
        return prepare(request, stdin, stdout, stderr, cgroup=group, payload=payload)

    def _encoded_request(
        self, argv, *, env, cwd, user, main: bool, quiet: bool, tty: Optional[Tuple[int, int]], cgroup: bool
    ) -> Tuple[protocol.ExecRequest, bytes]:
        """A request (as command 0) and its encoding.  Commands with the
        container's own environment, cwd and user (its config, image and user
        are fixed once started) are checked, built and encoded once per argv
        (~10 us of a command's host CPU), then only renamed."""
        templates = self._templates
        if templates is None:
            templates = self._templates = {}
        key = None
        if env is None and cwd is None and user is None and self._fault is None and type(argv) in (list, tuple):
            key = (tuple(argv), main, quiet, tty, cgroup)
            try:
                known = templates.get(key)
            except TypeError:  # an unhashable item: _request names it
                known = key = None
            if known is not None:
                return known
        request = self._request(
            argv, env=env, cwd=cwd, user=user, main=main, quiet=quiet, tty=tty, command_id=0, cgroup=cgroup
        )
        encoded = request, protocol.encode_exec(request)
        if key is not None:
            if len(templates) >= _TEMPLATES:
                templates.clear()
            templates[key] = encoded
        return encoded

    def _unconfirmed(self, submission: Submission) -> Process:
        return self._track(submission.unconfirmed(self._signal, _no_explanation))

    def _track(self, process: Process) -> Process:
        """Processes still running when the container closes are released with it."""
        self._processes.add(weakref.ref(process, self._processes.discard))
        return process

    def _signal(self, command_id: int, sig: int, group: bool) -> None:
        self._check_owner()
        if self._channel is None:
            return
        try:
            with self._channel.use() as control:
                control.send(protocol.encode_signal(command_id, sig, group=group))
        except (ContainerStateError, OSError):
            pass  # the container is gone, and the process with it

    def run(
        self,
        argv: Sequence[str],
        *,
        input: Union[bytes, str, None] = None,
        timeout: Optional[float] = None,
        stdin: StdioSpec = None,
        stdout: StdioSpec = PIPE,
        stderr: StdioSpec = PIPE,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        check: bool = False,
        text: bool = False,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
        tty: Union[bool, Tuple[int, int]] = False,
    ) -> Result:
        """Run a command to completion and capture its output.

        ``input`` (bytes, or a str: UTF-8) is fed to stdin.  ``timeout`` is
        None or a positive number of seconds.  On ``timeout`` everything the
        command started is killed (its own cgroup, sessions and daemons
        included; rootless without a delegated cgroup: its process group) and
        the result says ``timed_out``.  As ``subprocess.run``: ``text=True``
        (or an ``encoding``/``errors``) decodes the output to str and encodes
        a str ``input`` so; ``check=True`` raises :class:`CommandFailed` unless
        it exited with 0 in time (``Result.check_returncode()``).  ``tty=True``
        (or a ``(rows, cols)`` size): on a pseudo-terminal, as ``spawn``; the
        result's stdout is the terminal's output (stdout and stderr merged,
        stderr None), ``input`` is typed into it."""
        return self._run(
            argv,
            input=input,
            timeout=timeout,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            user=user,
            main=False,
            check=check,
            text=text,
            encoding=encoding,
            errors=errors,
            tty=tty,
        )

    def _run(
        self,
        argv,
        *,
        input,
        timeout,
        stdin,
        stdout,
        stderr,
        env,
        cwd,
        user,
        main: bool,
        check: bool = False,
        text: bool = False,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
        tty: Union[bool, Tuple[int, int]] = False,
    ) -> Result:
        timeout, codec, input, (stdin, stdout, stderr), tty_size = self._run_inputs(
            input, (stdin, stdout, stderr), timeout, text, encoding, errors, tty
        )
        counters = self._counters() if not main else (0, 0)
        timed_out = False
        proc: Optional[Process] = None
        try:  # (a plain try, not an ExitStack: this is the hot path of c.run)
            if main:  # (may unpack an image: Ctrl-C must work)
                proc = self._start_with_main(argv, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty_size)
            else:
                with sigint_deferred():  # our Process is closed however we leave
                    proc = self._start(
                        argv,
                        stdin=stdin,
                        stdout=stdout,
                        stderr=stderr,
                        env=env,
                        cwd=cwd,
                        user=user,
                        main=False,
                        confirm=False,
                        own_cgroup=timeout is not None,
                        tty=tty_size,
                    )
            try:
                out, err = proc.communicate(input, timeout)
            except TimeoutExpired:
                timed_out = True
                self._kill_after_timeout(proc, main)
                out, err = proc.communicate()
            except BaseException:
                self._kill_after_timeout(proc, main)
                raise
        finally:
            if proc is not None:
                proc.close()
        return self._run_result(proc, out, err, timed_out=timed_out, counters=counters, codec=codec, check=check)

    @staticmethod
    def _spawn_tty(tty, stdin: StdioSpec, stdout: StdioSpec, stderr: StdioSpec) -> Optional[Tuple[int, int]]:
        """spawn()'s terminal size, or None (both fronts): with one, no stream may be given."""
        return _tty_stdio(tty, stdin, stdout, stderr, captured=())

    @staticmethod
    def _run_inputs(input, stdio, timeout, text: bool, encoding: Optional[str], errors: Optional[str], tty):
        """run()'s options checked (both fronts): (timeout, codec, input as bytes,
        (stdin, stdout, stderr), the terminal's size or None)."""
        stdin, stdout, stderr = stdio
        timeout = check_timeout(timeout) if timeout is not None else None
        codec = text_codec(text, encoding, errors)
        tty_size = _tty_stdio(tty, stdin, stdout, stderr, captured=(PIPE,))
        if tty_size is not None:
            stdout = stderr = None  # captured from the terminal
        if input is not None:
            input = data_bytes(input, "input", *(codec or ("utf-8", "strict")))
            if stdin is not None:
                raise ConfigError("stdin", "stdin and input cannot both be given")
            stdin = PIPE if tty_size is None else None  # (typed into the terminal)
        return timeout, codec, input, (stdin, stdout, stderr), tty_size

    def _run_result(
        self, proc: Process, out, err, *, timed_out: bool, counters: Tuple[int, int], codec, check: bool
    ) -> Result:
        """The Result of a run's ended command (``check``: raised if it failed)."""
        result = result_of(proc, out, err, timed_out=timed_out, events=(counters, self._counters()))
        if codec is not None:
            result = decoded(result, *codec)
        if check:
            result.check_returncode()
        return result

    def _counters(self) -> Tuple[int, int]:
        """(OOM kills, forks refused) in the container so far; (0, 0) without limits (or once closed)."""
        return self._cgroup.counters() if self._cgroup is not None and not self._closed else (0, 0)

    def _start_with_main(self, argv, *, stdin, stdout, stderr, tty: Optional[Tuple[int, int]] = None) -> Process:
        """Start the container and its main command in one go: the command
        is queued for the init before the container has finished set-up."""
        return run_steps(self._start_with_main_steps(argv, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty))

    def _start_with_main_steps(
        self, argv, *, stdin, stdout, stderr, tty: Optional[Tuple[int, int]] = None
    ) -> Generator[Wait, None, Process]:
        """``_start_with_main`` as steps (``posix.steps``)."""
        checked = _check_argv(argv) if self.config.image is None else None  # (before anything starts)
        sent: list = []

        def first() -> None:
            if checked is not None:
                request = self._request(checked, env=None, cwd=None, user=None, main=True, tty=tty, checked=True)
            else:
                assert self._image is not None  # prepared by the start
                request = self._request(self._image.command(argv), env=None, cwd=None, user=None, main=True, tty=tty)
            assert self._control is not None  # first() runs after the clone
            sent.append(submit(self._control, request, stdin, stdout, stderr))

        try:
            yield from self._start_container(first)
            if tty is not None:
                yield sent[0].reply_socket.fileno()  # the terminal comes once the container is set up
        except BaseException:
            for submission in sent:
                submission.abandon()
            raise
        # No waiting for the set-up to finish nor for a STARTED reply: the
        # first reply is the exit, or the failure (an EOF: the set-up's).
        return self._track(sent[0].unconfirmed(self._signal, self._setup_failure))

    def _setup_failure(self) -> Optional[BaseException]:
        """The set-up's failure, once the init is gone (None if it reported none)."""
        report = read_all(self._setup_fd) if self._setup_fd is not None else b""
        if not report:
            return None
        try:
            self._raise_setup_failure(report, self._ops)
        except SetupError as err:
            return err

    def _kill_after_timeout(self, proc: Process, main: bool) -> None:
        proc.killed_by_us()
        if main:
            self._kill_all()
            try:
                if self._init_fd is None:
                    return  # not started: nothing to kill
                with self._init_fd.use() as pidfd:
                    pidfd_kill_quietly(pidfd)  # the whole container, grandchildren included
            except ContainerStateError:
                pass  # closed: killed already
        else:
            proc.kill_tree()


def _no_explanation() -> None:
    """A quiet request's ``lost``: an EOF before its start has no other cause to tell."""
    return None
