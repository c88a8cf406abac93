"""A command in a container, awaited: the sync :class:`~sandboxlib.Process`
driven by the event loop (its reply socket and pipes are the loop's readers)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal as signal_module
import time
from typing import Optional, Tuple, Union

from ..config import check_timeout, data_bytes
from ..errors import ContainerStateError, TimeoutExpired
from ..runtime.process import Process as SyncProcess
from .loop import FdHub, asyncio_loop, readable, readable_until, selector, writable

__all__ = ["Process", "communicate", "wait"]

_CHUNK = 1 << 16


async def communicate(
    proc: SyncProcess, input: Optional[bytes] = None, timeout: Optional[float] = None, hub: Optional[FdHub] = None
) -> Tuple[Optional[bytes], Optional[bytes]]:
    """``Process.communicate`` on the loop: the same steps (``_register``,
    ``_service``, ``_collected``), awaited instead of polled (the fds
    through ``hub``, a container's, when given)."""
    proc._check_owner()
    timeout = check_timeout(timeout, zero=True)
    if input is not None:
        input = data_bytes(input, "input")
    deadline = None if timeout is None else time.monotonic() + timeout
    for stream in (proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            os.set_blocking(stream.fileno(), False)  # (a stale readiness must not block the loop)
    # The selector lets go of the fds before the reply socket's use ends (it
    # may close then).  (try/finally, not with: a with's bound __exit__ is one
    # more object per run in flight for the cycle collector.)
    use = proc._reply.use(closed_ok=True)
    reply = use.__enter__()
    try:
        sel = selector(hub)
        try:
            # The streams first: once they ended, the exit is usually there
            # already, read without waiting (one fd fewer for the loop to watch).
            proc._register(sel, input, reply, exit=False)
            exit_registered = False
            while True:
                if not sel.get_map():
                    if exit_registered or proc._take_reply(0):
                        break
                    proc._register_exit(sel, reply)
                    exit_registered = True
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    assert timeout is not None  # the deadline's
                    raise proc._timed_out(timeout)
                await sel.serve(proc._service, remaining)
        finally:
            sel.close()
    finally:
        use.__exit__()
    return proc._collected()


async def wait(proc: SyncProcess, timeout: Optional[float] = None) -> int:
    """The exit status, awaited on the reply socket; TimeoutExpired after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not proc._take_reply(0):
        try:
            with proc._reply.use() as sock:
                if not await readable_until(sock.fileno(), deadline):
                    assert timeout is not None  # (only a deadline ends the wait early)
                    raise TimeoutExpired(proc.args, timeout)
        except ContainerStateError:
            pass  # closed: the next _take_reply sees the end
    assert proc.returncode is not None  # taken
    return proc.returncode


class Process:
    """A running command (``Container.spawn``).  As ``asyncio.subprocess.Process``:
    ``stdin`` an ``asyncio.StreamWriter``, ``stdout``/``stderr`` ``asyncio.StreamReader``\\ s
    when PIPE (``read``, ``readline``, ``async for line in p.stdout``; under
    trio, readers and writers with those methods);
    ``await wait()``, ``await communicate()``, ``send_signal``, ``terminate``,
    ``kill``, ``kill_tree``.  Cancelling a ``wait`` does not kill it."""

    def __init__(self, proc: SyncProcess) -> None:
        self._proc = proc
        self.stdin: Optional[asyncio.StreamWriter] = None
        self.stdout: Optional[asyncio.StreamReader] = None
        self.stderr: Optional[asyncio.StreamReader] = None
        self._transports: list = []

    async def _connect(self) -> None:
        """Our pipe ends as the loop's transports (they close on EOF or close())."""
        loop = asyncio_loop()
        proc = self._proc
        if loop is None:  # (trio)
            from .anyio_loop import PipeReader, PipeWriter

            self.stdout = PipeReader(proc.stdout) if proc.stdout is not None else None  # type: ignore[assignment]
            self.stderr = PipeReader(proc.stderr) if proc.stderr is not None else None  # type: ignore[assignment]
            self.stdin = PipeWriter(proc.stdin) if proc.stdin is not None else None  # type: ignore[assignment]
            return
        for name in ("stdout", "stderr"):
            pipe = getattr(proc, name)
            if pipe is not None:
                reader = asyncio.StreamReader(loop=loop)
                transport, _ = await loop.connect_read_pipe(
                    lambda reader=reader: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
                )
                self._transports.append(transport)
                setattr(self, name, reader)
        if proc.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), proc.stdin
            )
            self._transports.append(transport)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid

    @property
    def args(self) -> tuple:
        return self._proc.args

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.returncode

    def __repr__(self) -> str:
        return f"<sandboxlib.aio.Process args={list(self.args)!r} returncode={self.returncode}>"

    async def wait(self) -> int:
        return await wait(self._proc)

    async def communicate(self, input: Optional[bytes] = None) -> Tuple[Optional[bytes], Optional[bytes]]:
        """Feed ``input``, read stdout and stderr to EOF (through their readers), wait for the exit."""
        if input is not None and self.stdin is not None:
            self.stdin.write(data_bytes(input, "input"))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.stdin.drain()
        if self.stdin is not None:
            self.stdin.close()
        out, err = await _read_both(self.stdout, self.stderr)
        await self.wait()
        return out, err

    # -- the terminal (tty=True) --------------------------------------
    @property
    def terminal(self):
        """Our end of its pseudo-terminal (the master), or None."""
        return self._proc.terminal

    async def read(self, n: int = _CHUNK) -> bytes:
        """Up to ``n`` bytes of the terminal's output, awaited; b"" once every
        process of the command let go of the terminal."""
        fd = self._proc._master().fileno()
        os.set_blocking(fd, False)
        while True:
            try:
                return os.read(fd, n)
            except BlockingIOError:
                await readable(fd)
            except OSError as err:
                if err.errno == errno.EIO:  # the slave side is closed: the terminal's end of file
                    return b""
                raise

    async def write(self, data: Union[bytes, str]) -> int:
        """Type ``data`` (bytes, or a str: UTF-8) into the terminal; returns its length."""
        fd = self._proc._master().fileno()
        raw = data_bytes(data, "data")
        os.set_blocking(fd, False)
        view = memoryview(raw)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await writable(fd)
        return len(raw)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's window size (the command's foreground job gets SIGWINCH)."""
        self._proc.resize(rows, cols)

    def send_signal(self, sig: int) -> None:
        self._proc.send_signal(sig)

    def terminate(self) -> None:
        self._proc.send_signal(signal_module.SIGTERM)

    def kill(self) -> None:
        self._proc.kill()

    def kill_tree(self) -> None:
        self._proc.kill_tree()

    def close(self) -> None:
        """Close our ends and the reply socket (does not kill)."""
        for transport in self._transports:
            transport.close()
        self._proc.close()


async def _read_both(*readers) -> list:
    """Each reader read to its end, together (one could fill its pipe while we wait on the other)."""
    if asyncio_loop() is not None:
        return list(await asyncio.gather(*(_read(reader) for reader in readers)))
    from .anyio_loop import anyio

    found: list = [None] * len(readers)

    async def one(i: int) -> None:
        found[i] = await _read(readers[i])

    async with anyio.create_task_group() as group:
        for i in range(len(readers)):
            group.start_soon(one, i)
    return found


async def _read(reader) -> Optional[bytes]:
    return await reader.read() if reader is not None else None
