"""``sandboxlib.aio.Container`` and ``run``: the asyncio front.

The same configuration, requests, results, errors and verdicts as the sync
API: both fronts call the same functions to build a command's request
(``BareContainer._outgoing``), to read its replies and pipes
(``Process._register``/``_service``/``_take_reply``) and to make its
``Result`` (``_run_result``), and to start a container (its steps,
``_start_steps``); they differ only in how they wait.  Here nothing waits
in a thread: the set-up's error pipe, the control socket, the reply
sockets and the pipes are the event loop's readers and writers.  Only
long work of the start (an image's pull and unpack) and the first start
of ``call``'s fork server run in the loop's default executor."""

from __future__ import annotations

import weakref
from typing import Any, AsyncIterator, Callable, Mapping, Optional, Sequence, Tuple, Union

from ..calls.session import SpareLost, check_call_kwargs, check_modules
from ..config import ContainerConfig, check_timeout, config_of, takes_container_options
from ..errors import ContainerStateError, TimeoutExpired
from ..results import Result
from ..runtime.container import Container as SyncContainer
from ..runtime.launch import Submission
from ..runtime.logs import Since
from ..runtime.process import Process as SyncProcess
from ..streams import PIPE, StdioSpec
from .loop import FdHub, StepDriver, control_sender, drive, fd_hub, in_thread, new_lock, readable
from .process import Process, communicate, wait

__all__ = ["Container", "run"]


class Container:
    """A container on the event loop: ``async with Container(...) as c``;
    ``await c.run(argv)``, ``await c.spawn(argv)``, ``await c.call(fn, ...)``.
    Options are those of :class:`~sandboxlib.ContainerConfig`.  Use it from
    one event loop (the one that started it)."""

    @takes_container_options
    def __init__(self, config: Optional[ContainerConfig] = None, **options: Any) -> None:
        self._box = SyncContainer(config_of(config, options))
        self._sender: Any = None  # a ControlSender of the loop, once started
        self._hub: Optional[FdHub] = None  # its commands' pipes, as one reader of the loop, once started
        self._starting: Optional[StepDriver] = None  # while start() runs
        self._spawned: weakref.WeakSet[Process] = weakref.WeakSet()
        self._call_lock: Any = None  # one call at a time on the fork server (a lock of the loop's kind)

    @property
    def config(self) -> ContainerConfig:
        return self._box.config

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def pid(self) -> Optional[int]:
        return self._box.pid

    @property
    def sync(self) -> SyncContainer:
        """The same container for the sync API (files, stats, top, ...)."""
        return self._box

    def __repr__(self) -> str:
        return repr(self._box).replace("sandboxlib.", "sandboxlib.aio.", 1)

    async def start(self) -> Container:
        """Start the container: the sync start's steps, its waits (id-map
        helpers, the set-up's end, a main command's start) awaited on the
        loop; an image's pull and unpack in the loop's executor.  Cancelled
        (or closed) at any of them, it closes the container and raises."""
        if self._starting is not None:
            raise ContainerStateError("the container is starting already")
        driver = self._starting = StepDriver()
        try:
            await driver.run(self._box._start_steps())
        finally:
            self._starting = None
        assert self._box._channel is not None  # running
        self._sender = control_sender(self._box._channel)
        self._hub = fd_hub()
        self._call_lock = new_lock()
        return self

    async def __aenter__(self) -> Container:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kill everything in the container and release every resource (on the
        loop's thread: a few milliseconds; idempotent).  During ``start()``
        the start is ended instead: it closes the container and raises
        ``ContainerStateError``."""
        if self._starting is not None:
            self._starting.abort(ContainerStateError("the container was closed during its start"))
            return
        if self._sender is not None:
            self._sender.close()
        if self._hub is not None:
            self._hub.close()  # (once the runs still reading their pipes are done)
        for process in list(self._spawned):
            process.close()
        self._box.close()

    async def _send(
        self, argv, *, stdin, stdout, stderr, env, cwd, user, confirm: bool, own_cgroup: bool, tty=None
    ) -> Submission:
        """Build and send a command's request: its Submission (the shared steps, sent from the loop)."""
        box = self._box
        box._check_running()
        assert self._sender is not None  # running
        outgoing = box._outgoing(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            user=user,
            main=False,
            confirm=confirm,
            own_cgroup=own_cgroup,
            tty=tty,
        )
        try:
            if not self._sender.send_now(outgoing):
                await self._sender.send(outgoing)
        except BaseException:
            if outgoing.sent and tty is None:  # sent, then cancelled: it runs; kill what it starts
                proc = box._unconfirmed(outgoing.submission)
                box._kill_after_timeout(proc, False)
                proc.close()
            else:  # (a terminal's command, if it starts, finds its master closed: a hangup)
                outgoing.submission.abandon(kill=outgoing.sent)
            raise
        finally:
            outgoing.done()
        return outgoing.submission

    async def run(
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
        """``Container.run``, awaited: the same options and :class:`Result`
        (``tty=True``: on a pseudo-terminal, its output the result's stdout).

        On ``timeout`` everything the command started is killed (its own
        cgroup; rootless without a delegated cgroup: its process group) and
        the result says ``timed_out``.  Cancelled (``task.cancel()``,
        ``asyncio.timeout()``, ``wait_for``), it kills the same way and the
        cancellation goes on (``asyncio.timeout`` raises ``TimeoutError``)."""
        box = self._box
        timeout, codec, input, (stdin, stdout, stderr), tty_size = box._run_inputs(
            input, (stdin, stdout, stderr), timeout, text, encoding, errors, tty
        )
        box._check_running()
        counters = box._counters()
        # Always in a cgroup of its own: any await may be cancelled, and a
        # cancelled run kills all it started.
        submission = await self._send(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            user=user,
            confirm=False,
            own_cgroup=True,
            tty=tty_size,
        )
        if tty_size is not None:
            await _terminal_reply(submission)
        proc = box._unconfirmed(submission)
        try:  # (not a with: its bound __exit__ would be one more object per run in flight)
            out, err, timed_out = await _communicate_or_kill(proc, input, timeout, box, False, self._hub)
        finally:
            proc.close()
        return box._run_result(proc, out, err, timed_out=timed_out, counters=counters, codec=codec, check=check)

    async def spawn(
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
        """Start a command; returns once it started (or raises the step that
        failed, as ``Container.spawn``).  PIPE streams are asyncio streams;
        ``tty=True`` (or a size): a pseudo-terminal (``await p.read()``,
        ``await p.write(data)``, ``p.resize(rows, cols)``)."""
        box = self._box
        tty_size = box._spawn_tty(tty, stdin, stdout, stderr)
        submission = await self._send(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            user=user,
            confirm=True,
            own_cgroup=False,
            tty=tty_size,
        )
        # (abandoned, if cancelled: the command, if it started, sees EOF/EPIPE)
        process = Process(box._track(await StepDriver().run(submission.started_steps(box._signal))))
        try:
            await process._connect()
        except BaseException:
            process.kill()
            process.close()
            raise
        self._spawned.add(process)
        return process

    async def wait(self, timeout: Optional[float] = None) -> Result:
        """``Container.wait``, awaited: the main command's (``command=``)
        :class:`Result` once it ended, and the container with it.  Raises
        ``TimeoutExpired`` after ``timeout`` seconds (it keeps running)."""
        timeout = check_timeout(timeout)
        box = self._box
        main = box._main_command()
        await wait(main, timeout)
        if box._init_fd is not None:
            try:
                with box._init_fd.use() as pidfd:
                    await readable(pidfd)  # it ends the container at once
            except ContainerStateError:
                pass  # closed meanwhile: ended
        if box._log is not None:
            await in_thread(box._log.join)  # (its output is all in the log: a moment)
        return box._main_result(main)

    async def logs(
        self, *, tail: Optional[int] = None, follow: bool = False, timestamps: bool = False, since: Since = None
    ) -> AsyncIterator[Tuple[str, bytes]]:
        """``Container.logs``, as an async iterator: ``async for stream, data in c.logs(follow=True)``.
        The file is read in a worker thread (a follow waits there, not on the loop)."""
        records = self._box.logs(tail=tail, follow=follow, timestamps=timestamps, since=since)
        try:
            while True:
                record = await in_thread(lambda: next(records, None))
                if record is None:
                    return
                yield record
        finally:
            records.close()  # type: ignore[attr-defined]  # (a generator)

    async def preload(self, modules: Sequence[str]) -> None:
        """``Container.preload``, awaited: (re)start the fork server of ``call``
        with ``modules`` imported (its start runs in the loop's executor)."""
        modules = check_modules(modules)
        self._box._check_running()
        async with self._call_lock:
            await in_thread(lambda: self._box._calls.get(modules))

    async def call(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        """``Container.call``, awaited (see :meth:`invoke`)."""
        check_call_kwargs(kwargs)
        return await self.invoke(fn, args, kwargs)

    async def invoke(
        self,
        fn: Callable,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        trust_result: bool = False,
    ) -> Any:
        """``Container.invoke``, awaited: the same steps (``CallServer.steps``)
        with the fork server's output as a reader of the loop; calls wait
        their turn (one at a time per server, as in the sync front).  The
        server's first start runs in the loop's executor.  Cancelled (or
        under ``asyncio.timeout()``), the call ends as a timeout ends it:
        the server and what the call started are killed (the next call
        starts a new one)."""
        timeout = check_timeout(timeout)
        self._box._check_running()
        slot = self._box._calls
        async with self._call_lock:
            for attempt in (1, 2):  # a server that lost the process for the call: retried once (ServerSlot.invoke)
                server = slot.running()
                if server is None:
                    server = await in_thread(slot.get)
                steps = server.steps(fn, tuple(args), dict(kwargs or {}), timeout=timeout, trust_result=trust_result)
                try:
                    with server._lock:  # (a sync caller in another thread waits; no await blocks on it)
                        return await drive(steps, server.output_fd)
                except SpareLost:
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")


async def _terminal_reply(submission: Submission) -> None:
    """Wait for a terminal's request's first reply (its master, or why not: read by ``_unconfirmed``)."""
    try:
        await readable(submission.reply_socket)
    except BaseException:
        submission.abandon(kill=True)
        raise


async def _communicate_or_kill(
    proc: SyncProcess,
    input: Optional[bytes],
    timeout: Optional[float],
    box: SyncContainer,
    main: bool,
    hub: Optional[FdHub] = None,
):
    """(out, err, timed out): communicate; on timeout ``box._kill_after_timeout(proc,
    main)`` and read what is left; on any exception (cancellation included)
    kill and re-raise.  (The container and a flag, not a closure nor a bound
    method: fewer objects per run in flight for the cycle collector.)"""
    try:
        out, err = await communicate(proc, input, timeout, hub)
        return out, err, False
    except TimeoutExpired:
        box._kill_after_timeout(proc, main)
        out, err = await communicate(proc, hub=hub)
        return out, err, True
    except BaseException:
        box._kill_after_timeout(proc, main)
        raise


@takes_container_options
async def run(
    argv: Optional[Sequence[str]],
    *,
    input: Union[bytes, str, None] = None,
    timeout: Optional[float] = None,
    stdin: StdioSpec = None,
    stdout: StdioSpec = PIPE,
    stderr: StdioSpec = PIPE,
    check: bool = False,
    text: bool = False,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    tty: Union[bool, Tuple[int, int]] = False,
    **options: Any,
) -> Result:
    """``sandboxlib.run``, awaited: ``argv`` as the main process of a fresh
    container, which ends with it.  The start (with the command queued, as
    the sync one-shot does) and the command's output and exit are awaited
    on the loop.  Cancelled, the container is killed."""
    box = SyncContainer(config_of(None, options))
    try:
        timeout, codec, input, (stdin, stdout, stderr), tty_size = box._run_inputs(
            input, (stdin, stdout, stderr), timeout, text, encoding, errors, tty
        )
        proc = await StepDriver().run(
            box._start_with_main_steps(argv, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty_size)
        )
        with proc:
            out, err, timed_out = await _communicate_or_kill(proc, input, timeout, box, True)
        return box._run_result(proc, out, err, timed_out=timed_out, counters=(0, 0), codec=codec, check=check)
    finally:
        box.close()
