"""The main command of a container created with ``Tty`` or ``OpenStdin``
(``docker run -it``), or with an Entrypoint that replaces its image's (the
library's ``command=`` keeps the image's in front): spawned into an idle container, its terminal (or
pipes) read by the loop and handed to every attached client as it comes
(a prompt has no newline to wait for), its stdin fed from an attach; a copy
of the output goes through pipes to the library's log writer, so that
``docker logs`` reads it as any other container's."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Optional, Set, Tuple

from .. import aio
from ..aio.process import wait as wait_for_exit
from ..runtime.logs import LogWriter
from ..streams import DEVNULL, PIPE
from .threads import in_thread

__all__ = ["Interactive", "LOG_MAX_SIZE", "LOG_MAX_FILES"]

LOG_MAX_SIZE, LOG_MAX_FILES = 10 << 20, 3  # the library's defaults (config.container)
Chunk = Optional[Tuple[str, bytes]]  # None: the end of the output


class Interactive:
    """One run's main command, its output's subscribers and its log."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.subscribers: Set[asyncio.Queue] = set()
        self.process = None  # the sync Process (tty) or the aio Process (pipes)
        self.tty = False
        self.log: Optional[LogWriter] = None  # (it ends with the run; its file stays)
        self._log_ends: dict = {}
        self._pump: Optional[asyncio.Task] = None

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.discard(queue)

    def _publish(self, chunk: Chunk) -> None:
        for queue in self.subscribers:
            queue.put_nowait(chunk)
        if chunk is not None and chunk[0] in self._log_ends:
            with contextlib.suppress(OSError):
                os.write(self._log_ends[chunk[0]], chunk[1])

    async def start(self, box: aio.Container, argv, *, tty: bool, stdin: bool, rows: int = 24, cols: int = 80) -> None:
        self.tty = tty
        ends = [os.pipe2(os.O_CLOEXEC) for _ in range(2)]
        self.log = LogWriter(self.log_path, LOG_MAX_SIZE, LOG_MAX_FILES, ends[0][0], ends[1][0])
        self._log_ends = {"stdout": ends[0][1], "stderr": ends[1][1]}
        if tty:
            self.process = await in_thread(lambda: box.sync.spawn(list(argv), tty=(rows, cols)))
            self._pump = asyncio.ensure_future(self._read_terminal())
        else:
            self.process = await box.spawn(list(argv), stdin=PIPE if stdin else DEVNULL, stdout=PIPE, stderr=PIPE)
            self._pump = asyncio.ensure_future(self._read_pipes())

    async def _read_terminal(self) -> None:
        loop = asyncio.get_running_loop()
        master = self.process.terminal.fileno()  # type: ignore[union-attr]
        os.set_blocking(master, False)
        done = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: nothing holds the terminal any more
                data = b""
            if data:
                self._publish(("stdout", data))
            elif not done.done():
                loop.remove_reader(master)
                done.set_result(None)

        loop.add_reader(master, readable)
        try:
            await done
        finally:
            loop.remove_reader(master)

    async def _read_pipes(self) -> None:
        async def copy(reader: Optional[asyncio.StreamReader], stream: str) -> None:
            while reader is not None and (data := await reader.read(65536)):
                self._publish((stream, data))

        await asyncio.gather(copy(self.process.stdout, "stdout"), copy(self.process.stderr, "stderr"))  # type: ignore[union-attr]

    async def wait(self) -> int:
        """The exit status, once the output is all read and handed over."""
        assert self.process is not None and self._pump is not None
        with contextlib.suppress(Exception):
            await self._pump
        code = await (wait_for_exit(self.process) if self.tty else self.process.wait())
        self._publish(None)
        self.end()
        return code

    async def write(self, data: bytes) -> None:
        if self.process is None:
            return
        if self.tty:
            master = self.process.terminal.fileno()
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(master, view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                except OSError:
                    return
        elif self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.process.stdin.write(data)
                await self.process.stdin.drain()

    def close_stdin(self) -> None:
        if self.process is not None and not self.tty and self.process.stdin is not None:
            self.process.stdin.close()

    def resize(self, rows: int, cols: int) -> None:
        if self.tty and self.process is not None:
            with contextlib.suppress(OSError):
                self.process.resize(rows, cols)

    def send_signal(self, sig: int) -> None:
        if self.process is not None:
            self.process.send_signal(sig)

    def failed(self) -> None:
        """The run did not start: attaches waiting for it end."""
        self._publish(None)
        self.end()

    def end(self) -> None:
        """Close our ends: the log writer writes what it has and stops; the process's fds go."""
        for fd in self._log_ends.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log_ends = {}
        if self.log is not None:
            self.log.join(5)
            self.log.stop()
        if self.process is not None:
            self.process.close()
            self.process = None
