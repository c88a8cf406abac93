"""``sandboxlib.aio.Pool``: warm sandboxes served by tasks of the event loop."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Callable, Iterable, List, Optional

from ..calls.poolconfig import RECYCLE_ON, PoolConfig, takes_pool_options
from ..errors import UnsupportedError
from .container import Container
from .loop import asyncio_loop

__all__ = ["Pool"]


class _Work:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: asyncio.Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs


class Pool:
    """``sandboxlib.Pool`` on the event loop: ``size`` sandboxes (containers with
    a warm fork server), each served by a task of the loop, not a thread.

        async with sba.Pool(size=4, preload=["json"]) as pool:
            value = await pool.call(fn, 1, 2)
            values = await pool.map(fn, items)

    ``submit`` returns an ``asyncio.Future``.  The options, and when a
    sandbox is replaced (after ``max_uses`` calls, a crash or a timeout),
    are ``sandboxlib.Pool``'s.  A cancelled call (``task.cancel()``,
    ``asyncio.timeout()``) is killed in its sandbox.  The sandboxes start
    with the first call or ``async with``; ``await aclose()`` (or leaving
    ``async with``) runs what was submitted, then closes them all."""

    @takes_pool_options
    def __init__(self, size: int = 2, **options: Any) -> None:
        self._settings = PoolConfig(size=size, **options)
        self._queue: Optional[asyncio.Queue] = None
        self._workers: List[asyncio.Task] = []
        self._closed = False

    def _started(self) -> asyncio.Queue:
        if self._closed:
            raise RuntimeError("cannot schedule new calls after close")
        if self._queue is None:
            loop = asyncio_loop()
            if loop is None:
                raise UnsupportedError(
                    "sandboxlib.aio.Pool under an event loop other than asyncio's (its submit returns asyncio Futures)",
                    "run it on asyncio; under trio, use sandboxlib.aio.Container's call",
                )
            self._queue = asyncio.Queue()
            self._workers = [
                loop.create_task(_worker(self._settings, self._queue), name=f"sandboxlib-aio-pool-{i}")
                for i in range(self._settings.size)
            ]
            # An unreferenced pool stops its workers (each closes its sandbox).
            weakref.finalize(self, _stop, loop, self._workers)
        return self._queue

    async def __aenter__(self) -> Pool:
        self._started()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose(cancel_futures=exc[0] is not None)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> asyncio.Future:
        """Schedule ``fn(*args, **kwargs)`` in a sandbox; returns a Future of the running loop."""
        queue = self._started()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Work(future, fn, args, kwargs))
        return future

    async def call(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a sandbox, awaited."""
        return await self.submit(fn, *args, **kwargs)

    async def map(self, fn: Callable, *iterables: Iterable[Any]) -> List[Any]:
        """``[fn(*args) for args in zip(*iterables)]``, the calls spread over the sandboxes."""
        futures = [self.submit(fn, *args) for args in zip(*iterables)]
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    async def aclose(self, *, cancel_futures: bool = False) -> None:
        """No new calls; pending ones run (or, with ``cancel_futures``, are
        cancelled); returns once every sandbox is closed."""
        self._closed = True
        queue = self._queue
        if queue is None:
            return
        if cancel_futures:
            _cancel_pending(queue)
        for _ in self._workers:
            queue.put_nowait(None)
        await asyncio.gather(*self._workers, return_exceptions=True)

    def close(self) -> None:
        """Cancel every call and close the sandboxes (as their tasks end, on the loop's next turns)."""
        self._closed = True
        if self._queue is not None:
            _cancel_pending(self._queue)
        for task in self._workers:
            task.cancel()


def _cancel_pending(queue: asyncio.Queue) -> None:
    while not queue.empty():
        work = queue.get_nowait()
        if work is not None:
            work.future.cancel()


def _stop(loop: asyncio.AbstractEventLoop, workers: List[asyncio.Task]) -> None:
    if not loop.is_closed():
        for task in workers:
            loop.call_soon_threadsafe(task.cancel)


async def _new_sandbox(settings: PoolConfig) -> Container:
    box = Container(**settings.container_options())
    await box.start()
    try:
        await box.preload(settings.preload)
    except BaseException:
        box.close()
        raise
    return box


async def _worker(settings: PoolConfig, queue: asyncio.Queue) -> None:
    """One sandbox: start it, serve calls, replace it when worn out or suspect."""
    box: Optional[Container] = None
    uses = 0
    try:
        try:
            box = await _new_sandbox(settings)  # warm before the first call
        except Exception:  # noqa: BLE001 - retried, and then raised, for the first call
            box = None
        while True:
            work = await queue.get()
            if work is None:
                return
            if work.future.done():  # cancelled while it waited
                continue
            try:
                if box is None:
                    box, uses = await _new_sandbox(settings), 0
                uses += 1
                await _serve(box, work, settings)
            except RECYCLE_ON as err:
                _settle(work.future, err)
                if box is not None:
                    box.close()
                box = None
            except asyncio.CancelledError:
                if not work.future.cancelled():  # the worker itself is cancelled: close()
                    work.future.cancel()
                    raise
                # the caller cancelled: the call was killed (the next starts a new fork server)
            except Exception as err:  # noqa: BLE001 - the caller gets it through the future
                _settle(work.future, err)
            if box is not None and uses >= settings.max_uses:
                box.close()
                box = None
            del work
    finally:
        if box is not None:
            box.close()


async def _serve(box: Container, work: _Work, settings: PoolConfig) -> None:
    call = asyncio.ensure_future(box.invoke(work.fn, work.args, work.kwargs, **settings.call_options()))
    work.future.add_done_callback(lambda _f: call.cancel())  # a cancelled caller cancels the call
    value = await call
    if not work.future.done():
        work.future.set_result(value)


def _settle(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
