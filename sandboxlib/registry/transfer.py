"""Downloads that survive a flaky registry and cannot be abused by a lying one.

- **Retries**: a ``GET`` or ``HEAD`` answered 429, 502, 503 or 504, or
  broken by a connection reset, is sent again after a back-off (0.1 s,
  doubling, at most 5 s; a ``Retry-After`` of up to 10 s is honoured), at
  most :data:`MAX_FAILURES` times in a row without progress.
- **Resume**: a blob whose transfer breaks off is asked for again with a
  closed ``Range`` (``bytes=DONE-LAST``); the answer's ``Content-Range``
  must be exactly that range.  A ``200`` answer (a registry or CDN that
  ignores ``Range``) restarts the transfer: the whole blob comes again and
  the bytes already consumed are skipped; the digest over what was
  consumed still decides.
- **Bounded**: a blob is read up to the size its descriptor declares, never
  more: a ``Content-Length`` that disagrees, or a byte past the size, is a
  :class:`~sandboxlib.errors.RegistryDataError` (a registry that sends
  forever cannot fill the disk).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from typing import Callable, Optional, Union

import httpx

from ..errors import RegistryDataError

__all__ = ["Retries", "BlobDownload", "RETRY_STATUSES", "MAX_FAILURES", "Cancelled"]

RETRY_STATUSES = (429, 502, 503, 504)
MAX_FAILURES = 5  # in a row, without a byte of progress between them
BACKOFF = 0.1  # seconds before the first retry; doubles
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 10.0


class Cancelled(Exception):
    """Another download of the same pull failed: this one stops."""


class Retries:
    """The retry budget of one request or download: ``again(reason)`` waits and
    says True while the budget lasts; ``progress()`` refills it."""

    def __init__(self, limit: int = MAX_FAILURES, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit, self.failures, self.sleep = limit, 0, sleep

    def again(self, reason: Union[httpx.Response, Exception, None] = None) -> bool:
        if self.failures >= self.limit:
            return False
        wait = min(BACKOFF_CAP, BACKOFF * 2**self.failures)
        if isinstance(reason, httpx.Response):
            after = reason.headers.get("Retry-After", "")
            if after.isdigit():
                wait = min(float(after), RETRY_AFTER_CAP)
        self.failures += 1
        self.sleep(wait)
        return True

    def progress(self) -> None:
        self.failures = 0


class BlobDownload(io.RawIOBase):
    """A blob of ``size`` bytes read like a file, resumed after breaks (see the
    module).  ``on_read(done)`` is called after each read; setting ``cancel``
    makes the next read raise :class:`Cancelled`."""

    def __init__(self, repository, digest: str, size: int, cancel: Optional[threading.Event] = None) -> None:
        self.repository, self.digest, self.size = repository, digest, size
        self.cancel = cancel or threading.Event()
        self.on_read: Callable[[int], None] = lambda done: None
        self.done = 0
        self.requests = 0
        self._pending = b""
        self._skip = 0
        self._chunks = None
        self._open_response = contextlib.ExitStack()
        self._retries = Retries()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._open_response.close()
        super().close()

    def read(self, size: int = -1) -> bytes:
        if self.cancel.is_set():
            raise Cancelled(self.digest)
        while not self._pending:
            if self.done >= self.size:
                self._check_end()
                return b""
            self._pending = self._next_chunk()
        cut = len(self._pending) if size is None or size < 0 else size
        data, self._pending = self._pending[:cut], self._pending[cut:]
        self.done += len(data)
        self.on_read(self.done)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    # -- the transfer ------------------------------------------------------------------
    def _lie(self, detail: str) -> RegistryDataError:
        return self.repository.error(200, f"blob {self.digest}: {detail}", RegistryDataError)

    def _next_chunk(self) -> bytes:
        """The next bytes past ``done`` (and past what is pending), resuming as needed."""
        received = self.done  # nothing is pending here
        while True:
            if self._chunks is None:
                self._open(received)
            try:
                data = next(self._chunks)
            except StopIteration:
                failure: Exception = EOFError("the answer ended early")
            except httpx.TransportError as err:
                failure = err
            else:
                if self._skip:
                    dropped = min(self._skip, len(data))
                    data, self._skip = data[dropped:], self._skip - dropped
                if not data:
                    continue
                if received + len(data) > self.size:
                    raise self._lie(f"the registry sends more than the {self.size} bytes its descriptor declares")
                self._retries.progress()
                return data
            self._drop()
            if not self._retries.again(failure):
                raise self._lie(
                    f"the transfer broke off after {received} of {self.size} bytes "
                    f"({type(failure).__name__}: {failure}), {self.requests} attempts"
                )

    def _open(self, start: int) -> None:
        headers = {"Accept-Encoding": "identity"}  # Range counts bytes of the blob itself
        if start:
            headers["Range"] = f"bytes={start}-{self.size - 1}"
        self.requests += 1
        response = self._open_response.enter_context(
            self.repository.request(
                "GET",
                f"{self.repository.base}/blobs/{self.digest}",
                f"blob {self.digest}",
                ok=(200, 206),
                headers=headers,
            )
        )
        if response.status_code == 206:
            expected = f"bytes {start}-{self.size - 1}/"
            answered = response.headers.get("Content-Range", "")
            if not start or not answered.startswith(expected) or answered[len(expected) :] not in (str(self.size), "*"):
                raise self._lie(f"asked for bytes {start}-{self.size - 1}, the answer's Content-Range is {answered!r}")
        else:
            self._skip = start  # the whole blob again: its first bytes were consumed already
        length = response.headers.get("Content-Length")
        expected_length = self.size - start if response.status_code == 206 else self.size
        if length is not None and length.strip() != str(expected_length):
            raise self._lie(
                f"Content-Length {length}, its descriptor declares {self.size} bytes"
                + (f" ({expected_length} from byte {start})" if response.status_code == 206 else "")
            )
        self._chunks = response.iter_raw()

    def _drop(self) -> None:
        self._chunks = None
        self._open_response.close()
        self._open_response = contextlib.ExitStack()

    def _check_end(self) -> None:
        """All declared bytes are in: the answer must end here."""
        if self._chunks is None:
            return
        try:
            extra = next(self._chunks, b"")
        except httpx.TransportError:
            extra = b""  # a broken connection after the last byte costs nothing
        if extra[self._skip :]:
            raise self._lie(f"the registry sends more than the {self.size} bytes its descriptor declares")
        self._drop()
