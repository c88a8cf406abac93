"""Dask (``distributed``): tasks whose calls run in warm sandboxes on the worker that executes them.

    from sandboxlib.dask import SandboxPlugin, sandboxed

    client.register_plugin(SandboxPlugin(memory="512M", timeout=10, preload=["json"]))
    futures = client.map(sandboxed(grade), submissions)

``SandboxPlugin`` keeps a :class:`sandboxlib.Pool` on each worker: made at
the plugin's set-up (when it is registered, and on every worker that joins
later, a restarted one too), closed at its teardown (unregistered, or the
worker closing).  Its options are ``Pool``'s, passed through as they are.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Dict, Optional

from distributed import WorkerPlugin, get_worker

from .errors import ConfigError
from .pool import Pool, check_pool_options

__all__ = ["SandboxPlugin", "sandboxed", "DEFAULT_NAME"]

DEFAULT_NAME = "sandboxlib"  #: the plugin's name unless told otherwise; ``sandboxed`` looks it up


class SandboxPlugin(WorkerPlugin):
    """A warm :class:`sandboxlib.Pool` on every worker; ``sandboxed`` calls run in it.

    ``pool_options`` are ``Pool``'s (``memory``, ``timeout``, ``network``,
    ``rootfs``, ``preload``, ``mounts``, ``env``, ``limits``,
    ``trust_result``, ``max_uses``, ``size``); ``size`` defaults to the
    worker's number of threads, so that every task it runs at once has a
    sandbox.  Set-up starts the pool and waits for a first call through it,
    so ``client.register_plugin`` raises what a bad option or a sandbox that
    cannot start raises on the workers.  A sandbox whose call crashed or
    timed out is replaced by the pool; the worker goes on.  Plugins with
    different ``name`` coexist (``sandboxed(fn, plugin=name)`` picks one);
    registering one under a name already used replaces the older.
    """

    def __init__(self, *, name: str = DEFAULT_NAME, **pool_options: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        self.name = name
        self.pool_options = check_pool_options(pool_options)
        self.pool: Optional[Pool] = None  # on the worker, between set-up and teardown

    def __getstate__(self) -> Dict[str, Any]:
        return {"name": self.name, "pool_options": self.pool_options, "pool": None}

    async def setup(self, worker: Any) -> None:
        pool = Pool(**{"size": worker.state.nthreads, **self.pool_options})
        try:
            await asyncio.to_thread(pool.submit(int).result)  # a sandbox started and answering
        except BaseException:
            await asyncio.to_thread(pool.shutdown)
            raise
        self.pool = pool

    async def teardown(self, worker: Any) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:  # not on the event loop: closing waits for running calls
            await asyncio.to_thread(pool.shutdown)


class _Sandboxed:
    """What ``sandboxed`` returns: pickled to the workers with the function it wraps."""

    def __init__(self, fn: Callable, plugin: str) -> None:
        functools.update_wrapper(self, fn)  # dask names the tasks after __name__
        self.fn, self.plugin = fn, plugin

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _pool(self.plugin).submit(self.fn, *args, **kwargs).result()


def sandboxed(fn: Callable, *, plugin: str = DEFAULT_NAME) -> Callable:
    """``fn`` for Dask tasks: each call runs in the warm pool of the
    ``SandboxPlugin`` named ``plugin`` on the worker that executes the task.

    What the call returns or raises is what ``Container.call`` gives (a
    builtin exception rebuilt with its ``remote_traceback``, ``RemoteError``,
    ``CallTimeout``, ``CallCrashed`` with its ``verdict``), and Dask reports
    it as the task's result or error.  Outside a worker, or on a worker
    without that plugin, a call raises ``ConfigError``.
    """
    if not callable(fn):
        raise ConfigError("fn", f"must be callable, got {type(fn).__name__}")
    return _Sandboxed(fn, plugin)


def _pool(name: str) -> Pool:
    """The pool of the plugin ``name`` on the worker running this task."""
    try:
        worker = get_worker()
    except ValueError:
        raise ConfigError("plugin", "a sandboxed task runs on a dask worker (it was called outside one)") from None
    plugin = worker.plugins.get(name)
    if not isinstance(plugin, SandboxPlugin) or plugin.pool is None:
        raise ConfigError(
            "plugin",
            f"worker {worker.address} has no SandboxPlugin named {name!r}: "
            f"client.register_plugin(SandboxPlugin(name={name!r}, ...)) first",
        )
    return plugin.pool
