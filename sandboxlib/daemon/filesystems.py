"""A container's file system for the file endpoints (archive, commit,
export, changes): the running container's, or for a stopped one an idle
container on its image and kept writable layer (``kept_layer.py``), as
dockerd mounts a stopped container's root for them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from .. import aio
from ..config import Limits
from ..errors import SandboxError
from .apierrors import ApiError, library_error
from .registry_of_containers import ContainerRecord
from .threads import in_thread

__all__ = ["files_of"]


@contextlib.asynccontextmanager
async def files_of(record: ContainerRecord) -> AsyncIterator[aio.Container]:
    """The running container, or for a stopped one an idle container on its image and
    kept layer (no network, no limits: nothing runs in it but our file work), closed after.
    A start meanwhile waits for it; it waits for a start in progress, and for another's
    idle container (one overlay at a time on the kept layer: the kernel's rule)."""
    while True:
        await record.wait_for(lambda: not record.starting or record.removed)
        if record.removed or record.removing:
            raise ApiError(409, f"container {record.id} is marked for removal")
        if record.running and record.box is not None and record.box.sync.running:
            yield record.box
            return
        if not record.running and record.files_open == 0:
            break  # (nothing awaited from here to the count that holds a start back)
        if not record.running:
            await record.wait_for(lambda: record.files_open == 0 or record.running or record.removed)
            continue
        await record.wait_for(lambda: not record.running or record.removed)  # a run that is ending
    # (nothing runs in it: no network, no limits, no host namespaces)
    options = {**record.request.options, "network": "none", "ports": (), "limits": Limits(), "pid_namespace": "private"}
    if record.layer is not None:
        options["writable_dir"] = record.layer.path
    record.files_open += 1
    box = aio.Container(**options)
    try:
        try:
            await box.start()
        except SandboxError as err:
            raise library_error(err) from None
        yield box
    finally:
        # shielded: a handler cancelled here (its client gone once the answer was read)
        # still lets the count fall once the box is closed, or the container's remove
        # and start would wait for it for good
        await asyncio.shield(asyncio.ensure_future(_closed(box, record)))


async def _closed(box: aio.Container, record: ContainerRecord) -> None:
    try:
        await in_thread(box.close)
    finally:
        record.files_open -= 1
        await record.notify()
