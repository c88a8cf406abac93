"""A main command's output kept in a size-bounded, rotated file, and read back.

The format is Docker's ``json-file`` driver's: one JSON object a line,
``{"log": "text\\n", "stream": "stdout", "time": "2026-12-06T02:17:31.123456789Z"}``
(UTC, RFC 3339 with nanoseconds).  A line longer than ``MAX_LINE`` bytes is
cut into several records (the last without its newline), as Docker does;
output that is not UTF-8 is kept as lone surrogates (``\\udcXX``, Python's
``surrogateescape``), so ``logs()`` gives back the exact bytes.  The file
``PATH`` is rotated to ``PATH.1`` (``PATH.1`` to ``PATH.2``, ...) before a
record would take it past ``max_size``; ``max_files`` files are kept in all.

Who writes: a thread of the host process (one per logged container) polls
the command's stdout and stderr pipes and appends what it reads, one
``os.write`` per read.  Each stream is one pipe read in order, so the order
within a stream is kept; between the two streams, records are in the order
the thread read them (their times are those of the read).  The pipes are
the back-pressure: when the host process is slow the command blocks on a
full pipe, nothing is lost.  A slow ``logs()`` consumer reads the file,
never the pipes, so it slows nothing (with ``follow``, a reader that falls a
whole rotation behind misses what was rotated away, as with Docker)."""

from __future__ import annotations

import collections
import datetime
import json
import os
import selectors
import threading
import time
from typing import Deque, Iterator, List, Optional, Tuple, Union

from ..errors import ConfigError

__all__ = ["LogWriter", "read_log", "MAX_LINE", "log_time"]

MAX_LINE = 16 * 1024  # bytes of one record's text at most (Docker's buffer)
_CHUNK = 1 << 16
_STREAMS = ("stdout", "stderr")


def log_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC: the ``time`` of a record (sorts as text)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def _record(stream: str, data: bytes, stamp: str) -> bytes:
    text = json.dumps(data.decode("utf-8", "surrogateescape"))
    return f'{{"log":{text},"stream":"{stream}","time":"{stamp}"}}\n'.encode()


class _RotatingFile:
    """``path`` and its rotated predecessors; whole records only."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path, self._max_size, self._max_files = path, max_size, max_files
        self.lock = threading.Lock()  # rotation vs. a reader opening the set of files
        for n in range(1, max_files):  # a former log's: this one starts empty
            try:
                os.unlink(f"{path}.{n}")
            except FileNotFoundError:
                pass
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._size = 0

    def write(self, records: List[bytes]) -> None:
        batch: List[bytes] = []
        size = self._size
        for record in records:
            if size + len(record) > self._max_size and size > 0:
                self._flush(batch)
                self._rotate()
                batch, size = [], 0
            batch.append(record)
            size += len(record)
        self._flush(batch)

    def _flush(self, batch: List[bytes]) -> None:
        data = memoryview(b"".join(batch))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
            self._size += written

    def _rotate(self) -> None:
        with self.lock:
            if self._max_files == 1:
                os.ftruncate(self._fd, 0)
            else:
                for n in range(self._max_files - 1, 1, -1):
                    _rename_quietly(f"{self.path}.{n - 1}", f"{self.path}.{n}")
                os.rename(self.path, f"{self.path}.1")
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _rename_quietly(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        pass


class LogWriter:
    """The thread that moves a command's stdout and stderr (pipe read ends,
    owned from now on) into a rotated log file."""

    def __init__(self, path: str, max_size: int, max_files: int, stdout_fd: int, stderr_fd: int) -> None:
        self.path, self.max_files = path, max_files
        self.changed = threading.Condition()  # notified after each write and at the end
        self.done = threading.Event()  # both pipes at EOF (or stopped), everything written
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._pipes = {stdout_fd: "stdout", stderr_fd: "stderr"}
        try:
            self.file = _RotatingFile(path, max_size, max_files)
        except BaseException:
            self._close_fds()
            os.close(self._stop_r)
            os.close(self._stop_w)
            raise
        self._thread = threading.Thread(target=self._run, name=f"sandboxlib log {os.path.basename(path)}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        partial = dict.fromkeys(_STREAMS, b"")
        try:
            with selectors.PollSelector() as sel:
                for fd in (*self._pipes, self._stop_r):
                    sel.register(fd, selectors.EVENT_READ)
                while len(sel.get_map()) > 1:
                    for key, _ in sel.select():
                        if key.fd == self._stop_r:
                            self._drain(sel, partial)
                            return
                        self._take(sel, key.fd, partial)
        finally:
            self._close_fds()
            self.file.close()
            with self.changed:
                self.done.set()
                self.changed.notify_all()

    def _take(self, sel: selectors.BaseSelector, fd: int, partial: dict) -> None:
        """One read of one pipe, written as records; at EOF, its last partial line."""
        stream = self._pipes[fd]
        data = os.read(fd, _CHUNK)
        if not data:
            sel.unregister(fd)
        self._write(stream, partial, data)

    def _write(self, stream: str, partial: dict, data: bytes) -> None:
        """Records of the whole lines in ``partial + data`` and of its full
        ``MAX_LINE`` pieces (at EOF, ``data`` empty: of all of it)."""
        buf = partial[stream] + data
        end = buf.rfind(b"\n") + 1
        rest = buf[end:]
        keep = len(rest) % MAX_LINE if data else 0
        partial[stream] = rest[len(rest) - keep :]
        pieces = [line + b"\n" for line in buf[:end].split(b"\n")[:-1]]  # (only newlines split lines)
        if len(rest) > keep:
            pieces.append(rest[: len(rest) - keep])
        if not pieces:
            return
        stamp = log_time(time.time_ns())
        self.file.write(
            [
                _record(stream, piece[i : i + MAX_LINE], stamp)
                for piece in pieces
                for i in range(0, len(piece), MAX_LINE)
            ]
        )
        with self.changed:
            self.changed.notify_all()

    def _drain(self, sel: selectors.BaseSelector, partial: dict) -> None:
        """Stopped: what the pipes hold already is written, then nothing more is read."""
        for fd in [k.fd for k in sel.get_map().values() if k.fd != self._stop_r]:
            os.set_blocking(fd, False)
            while True:
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    data = b""
                self._write(self._pipes[fd], partial, data)
                if not data:
                    break

    def _close_fds(self) -> None:
        for fd in self._pipes:
            try:
                os.close(fd)
            except OSError:
                pass
        self._pipes = {}

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until the command's output is all written (its pipes at EOF)."""
        self._thread.join(timeout)
        return self.done.is_set()

    def stop(self) -> None:
        """Write what the pipes hold, stop reading and close them; idempotent."""
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")  # (read by the thread, or by nobody if it has ended)
            self._thread.join()
            os.close(self._stop_w)
            os.close(self._stop_r)
            self._stop_w = -1


Since = Union[float, int, datetime.datetime, None]


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _since_stamp(since: Since) -> Optional[str]:
    if since is None:
        return None
    if isinstance(since, datetime.datetime):
        if since.tzinfo is None:
            raise ConfigError("since", "a datetime needs a time zone (e.g. datetime.timezone.utc)")
        return log_time((since - _EPOCH) // datetime.timedelta(microseconds=1) * 1000)  # exact, no float
    if isinstance(since, bool) or not isinstance(since, (int, float)):
        raise ConfigError("since", f"expected seconds since the epoch or an aware datetime, got {since!r}")
    # To the microsecond: a float of today's epoch seconds holds no finer, and
    # since * 1e9 lands up to ~200 ns off (past a record at that very microsecond).
    return log_time(round(since * 1_000_000) * 1000)


def _check_tail(tail: Optional[int]) -> Optional[int]:
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
        raise ConfigError("tail", f"expected None or a number of lines >= 0, got {tail!r}")
    return tail


def read_log(
    path: str,
    max_files: int,
    *,
    tail: Optional[int] = None,
    follow: bool = False,
    timestamps: bool = False,
    since: Since = None,
    writer: Optional[LogWriter] = None,
) -> Iterator[Tuple[str, bytes]]:
    """``(stream, data)`` of each record, oldest first (``timestamps``: data
    prefixed by its time and a space, as ``docker logs -t``); ``follow``: then
    what comes, until the ``writer`` is done."""
    tail, after = _check_tail(tail), _since_stamp(since)
    return _records(path, max_files, tail, follow, timestamps, after, writer)


def _records(path, max_files, tail, follow, timestamps, after, writer) -> Iterator[Tuple[str, bytes]]:
    files = [_Cursor(fd, timestamps, after) for fd in _open_all(path, max_files, writer)]
    try:
        kept: Deque[Tuple[str, bytes]] = collections.deque(maxlen=tail)
        for cursor in files:
            kept.extend(cursor.entries())
        yield from kept
        kept.clear()
        current = files[-1] if files else None
        while follow and writer is not None:
            done = writer.done.is_set()  # before the read: then that read has everything
            if current is not None:
                yield from current.entries()
                if not _rotated(path, current.fd):
                    if done:
                        return
                else:
                    yield from current.entries()  # written before the rename we saw
                    current = None
            if current is None:
                fd = _open(path)
                if fd is not None:
                    current = _Cursor(fd, timestamps, after)
                    files.append(current)
                    continue
                if done:
                    return
            with writer.changed:
                if not writer.done.is_set():
                    writer.changed.wait(0.1)
    finally:
        for cursor in files:
            os.close(cursor.fd)


class _Cursor:
    """One open log file read record by record from where the last read stopped."""

    def __init__(self, fd: int, timestamps: bool, after: Optional[str]) -> None:
        self.fd, self._timestamps, self._after = fd, timestamps, after
        self._rest = b""  # a record being written: completed by a later read

    def entries(self) -> Iterator[Tuple[str, bytes]]:
        if os.lseek(self.fd, 0, os.SEEK_CUR) > os.fstat(self.fd).st_size:  # truncated (log_max_files=1)
            os.lseek(self.fd, 0, os.SEEK_SET)
            self._rest = b""
        while True:
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return
            lines = (self._rest + chunk).split(b"\n")
            self._rest = lines.pop()
            for line in lines:
                entry = self._entry(line) if line else None
                if entry is not None:
                    yield entry

    def _entry(self, line: bytes) -> Optional[Tuple[str, bytes]]:
        record = json.loads(line)
        stamp = record["time"]
        if self._after is not None and stamp < self._after:
            return None
        data = record["log"].encode("utf-8", "surrogateescape")
        if self._timestamps:
            data = stamp.encode() + b" " + data
        return record["stream"], data


def _open(path: str) -> Optional[int]:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _open_all(path: str, max_files: int, writer: Optional[LogWriter]) -> List[int]:
    """The log's files, oldest first, opened at one moment (no rotation meanwhile)."""
    names = [f"{path}.{n}" for n in range(max_files - 1, 0, -1)] + [path]
    lock = writer.file.lock if writer is not None else threading.Lock()
    with lock:
        opened = [_open(name) for name in names]
    return [fd for fd in opened if fd is not None]


def _rotated(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True
