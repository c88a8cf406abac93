"""Ray: remote calls whose bodies run in warm sandboxes.

    from sandboxlib.ray import sandboxed_remote

    @sandboxed_remote(memory="512M", timeout=10)
    def grade(src): ...

    ray.get([grade.remote(s) for s in submissions])

Each decorated function gets a Ray actor holding a :class:`sandboxlib.Pool`
(made by the first ``.remote()`` call; ``size`` calls run at once).  Ray
restarts the actor if its process dies; the sandboxes die with that process.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Dict, Mapping, Optional

import ray

from .errors import ConfigError
from .pool import Pool, check_pool_options

__all__ = ["sandboxed_remote", "SandboxedRemote"]


class _SandboxActor:
    """The actor's class: a pool, and the function its calls run.  A pool
    that cannot start (a bad option value, a sandbox that fails) is kept as
    its exception, which ``ready()`` and every call raise: the caller gets
    the ``ConfigError`` itself, not Ray's report of a dead actor."""

    def __init__(self, fn: Callable, pool_options: Dict[str, Any]) -> None:
        self._fn = fn
        self._pool: Optional[Pool] = None
        self._error: Optional[BaseException] = None
        try:
            pool = Pool(**pool_options)
        except Exception as err:  # noqa: BLE001 - raised by ready() and the calls
            self._error = err
            return
        try:
            pool.submit(int).result()  # a sandbox started and answering
        except Exception as err:  # noqa: BLE001 - as above
            pool.shutdown()
            self._error = err
            return
        self._pool = pool

    def ready(self) -> None:
        if self._pool is None:
            raise self._error or RuntimeError("the sandboxes are closed")

    def call(self, args: tuple, kwargs: dict) -> Any:
        self.ready()
        return self._pool.submit(self._fn, *args, **kwargs).result()  # type: ignore[union-attr]

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def __ray_shutdown__(self) -> None:  # Ray calls it when the actor ends gracefully (out of scope)
        self.close()


_Actor = ray.remote(_SandboxActor)


class SandboxedRemote:
    """What ``sandboxed_remote`` returns: ``.remote(*args, **kwargs)`` gives a
    ``ray.ObjectRef`` of the call's result; ``close()`` ends the sandboxes
    (a later ``.remote()`` starts new ones)."""

    def __init__(self, fn: Callable, pool_options: Dict[str, Any], actor_options: Dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self._fn, self._pool_options, self._actor_options = fn, pool_options, actor_options
        self._actor: Optional[Any] = None
        self._lock = threading.Lock()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a sandbox; returns a ``ray.ObjectRef``."""
        return self.actor.call.remote(args, kwargs)

    @property
    def actor(self) -> Any:
        """The actor handle: made now if there is none, and then waited for
        (its sandbox started), so that what prevents it is raised here."""
        with self._lock:
            if self._actor is None:
                actor = _Actor.options(**self._actor_options).remote(self._fn, self._pool_options)
                try:
                    ray.get(actor.ready.remote())
                except BaseException:
                    ray.kill(actor, no_restart=True)
                    raise
                self._actor = actor
            return self._actor

    def close(self) -> None:
        """Close the sandboxes and end the actor."""
        with self._lock:
            actor, self._actor = self._actor, None
        if actor is not None:
            try:
                ray.get(actor.close.remote())
            finally:
                ray.kill(actor, no_restart=True)

    def __getstate__(self) -> Dict[str, Any]:  # passed to other tasks: the same actor (handles pickle)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __enter__(self) -> SandboxedRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = getattr(self._fn, "__name__", "fn")
        raise TypeError(f"a sandboxed remote function is called with {name}.remote(...)")


def sandboxed_remote(
    fn: Optional[Callable] = None, *, ray_options: Optional[Mapping[str, Any]] = None, **pool_options: Any
) -> Any:
    """Decorator: ``fn.remote(...)`` runs ``fn`` in a warm sandbox of a Ray actor.

    ``pool_options`` are :class:`sandboxlib.Pool`'s (``memory``, ``timeout``,
    ``network``, ``rootfs``, ``preload``, ``mounts``, ``env``, ``limits``,
    ``trust_result``, ``max_uses``, ``size``: the calls that run at once);
    ``ray_options`` go to the actor's ``.options()`` (``num_cpus``,
    ``resources``, ``scheduling_strategy``...; by default it is restarted
    whenever its process dies).  ``ray.get`` raises what the call raised, as
    ``Container.call`` gives it (``CallCrashed`` with its ``verdict``,
    ``CallTimeout``, a rebuilt exception with its ``remote_traceback``),
    wrapped by Ray as a ``RayTaskError`` that is also an instance of it.
    """
    options = check_pool_options(pool_options)
    actor_options = {"max_restarts": -1, **dict(ray_options or {})}
    size = options.get("size", inspect.signature(Pool).parameters["size"].default)
    actor_options.setdefault("max_concurrency", size if isinstance(size, int) and size > 0 else 1)

    def wrap(fn: Callable) -> SandboxedRemote:
        if not callable(fn):
            raise ConfigError("fn", f"must be callable, got {type(fn).__name__}")
        return SandboxedRemote(fn, options, actor_options)

    return wrap if fn is None else wrap(fn)
