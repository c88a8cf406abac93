"""``Pool``: warm sandboxes for many short calls, as a ``concurrent.futures.Executor``."""

from __future__ import annotations

import queue
import threading
import weakref
from concurrent import futures
from typing import Any, Callable, Optional

from .calls.poolconfig import RECYCLE_ON, PoolConfig, check_pool_options, takes_pool_options
from .runtime.container import Container

__all__ = ["Pool", "check_pool_options"]


class _Work:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: futures.Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs


class Pool(futures.Executor):
    """``size`` sandboxes, each a container with a warm fork server; every call
    runs in a fresh process forked from one of them.

    A sandbox is replaced after ``max_uses`` calls, and after a call that
    crashed or timed out.  ``shutdown()`` (or leaving ``with``) closes every
    container.  Calls follow ``Container.invoke``: safe result types unless
    ``trust_result``; ``timeout`` per call (None or positive seconds);
    ``network`` as ``Container``'s (``"none"``, ``"host"`` or a ``Network``);
    ``memory`` needs cgroup limits.  The options are
    :class:`~sandboxlib.calls.poolconfig.PoolConfig`'s (``sandboxlib.aio.Pool``
    takes the same).

        with sb.Pool(size=4, preload=["json"]) as pool:
            results = list(pool.map(fn, items))
    """

    @takes_pool_options
    def __init__(self, size: int = 2, **options: Any) -> None:
        settings = PoolConfig(size=size, **options)
        self._config = settings.container_options()
        self._preload = settings.preload
        self._options = settings.call_options()
        self._max_uses = settings.max_uses
        self._queue: queue.SimpleQueue[Optional[_Work]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._threads = [
            threading.Thread(
                target=_worker, args=(weakref.ref(self), self._queue), name=f"sandboxlib-pool-{i}", daemon=True
            )
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()
        # An unreferenced pool stops its workers (each closes its sandbox).
        self._finalizer = weakref.finalize(self, _stop, self._queue, size)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> futures.Future:
        """Schedule ``fn(*args, **kwargs)`` in a sandbox; returns a Future."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            future: futures.Future = futures.Future()
            self._queue.put(_Work(future, fn, args, kwargs))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; with ``cancel_futures`` pending calls are cancelled;
        with ``wait`` returns once every sandbox is closed."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending()
            self._finalizer()
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_pending(self) -> None:
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                return
            if work is not None:
                work.future.cancel()

    def _new_sandbox(self) -> Container:
        box = Container(**self._config).start()
        try:
            box.preload(self._preload)
        except BaseException:
            box.close()
            raise
        return box

    def _run(self, box: Container, work: _Work) -> None:
        value = box.invoke(work.fn, work.args, work.kwargs, **self._options)
        work.future.set_result(value)


def _stop(work_queue: queue.SimpleQueue, size: int) -> None:
    for _ in range(size):
        work_queue.put(None)


def _worker(pool_ref: weakref.ref[Pool], work_queue: queue.SimpleQueue) -> None:
    """One sandbox: start it, serve calls, replace it when worn out or suspect."""
    box: Optional[Container] = None
    uses = 0
    try:
        box = _warm(pool_ref)
        while True:
            work = work_queue.get()
            pool = pool_ref()
            if work is None or pool is None:
                return
            if not work.future.set_running_or_notify_cancel():
                continue
            try:
                if box is None:
                    box, uses = pool._new_sandbox(), 0
                uses += 1
                pool._run(box, work)
            except RECYCLE_ON as err:
                work.future.set_exception(err)
                _close(box)
                box = None
            except BaseException as err:  # noqa: BLE001 - the caller gets it through the future
                work.future.set_exception(err)
            if box is not None and uses >= pool._max_uses:
                _close(box)
                box = None
            del pool, work
    finally:
        _close(box)


def _warm(pool_ref: weakref.ref[Pool]) -> Optional[Container]:
    """A sandbox ready before the first call (a failure is reported by that call)."""
    pool = pool_ref()
    try:
        return pool._new_sandbox() if pool is not None and not pool._shutdown else None
    except Exception:  # noqa: BLE001 - retried, and then raised, for the first call
        return None


def _close(box: Optional[Container]) -> None:
    if box is not None:
        box.close()
