"""A container's log records on the loop: ``Container.logs()`` (a blocking
iterator that may wait for the next record) read on a thread of its own,
its records handed over one by one.  When the reader goes away the thread
ends at the next record or at the end of the run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Tuple

from ..errors import SandboxError
from .registry_of_containers import ContainerRecord
from .threads import deliver

__all__ = ["log_records"]

_END = object()


async def log_records(record: ContainerRecord, **options: Any) -> AsyncIterator[Tuple[str, bytes]]:
    """``(stream, data)`` of the record's current (or last) run, as ``Container.logs(**options)``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in record.read_log(**options):
                if stop.is_set() or not deliver(loop, queue.put_nowait, item):
                    return
        except (SandboxError, OSError) as err:
            deliver(loop, queue.put_nowait, err)
        finally:
            deliver(loop, queue.put_nowait, _END)

    threading.Thread(target=pump, name=f"sandboxlib daemon logs {record.id[:12]}", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
