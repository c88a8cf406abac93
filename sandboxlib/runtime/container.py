"""``Container``: the public container, a :class:`BareContainer` with files,
copy in and out, commit, Python calls and resource use."""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence

import attrs

from ..calls.session import ServerSlot, Session, check_call_kwargs, check_modules
from ..cgroups.stats import ProcessInfo, Stats, list_processes, read_stats
from ..config import ContainerConfig, Limits, check_timeout, config_of, takes_container_options
from ..errors import ConfigError, UnsupportedError
from .commands import DEFAULT_PATH, BareContainer
from .files import FileAccess
from .joins import NetworkJoins
from .subids import ImageStore

__all__ = ["Container", "DEFAULT_PATH", "HELPER_NAMES"]

# The init's helper processes, by the names they give themselves (csrc/launcher.c):
# a launcher, a forker in a kept command cgroup.  Runtime, as the init is; ``top()`` lists them.
HELPER_NAMES = frozenset({"sbx-launcher", "sbx-forker"})

_CGROUP_LIMITS = ("memory", "memory_swap", "cpus", "cpu_shares", "pids", "cpuset_cpus")


class Container(BareContainer, FileAccess, NetworkJoins):
    """A long-lived container whose PID 1 is sandboxlib's init.

    ``with Container(...) as c:`` starts it; ``c.run``/``c.spawn`` start
    commands in it; leaving the block kills everything in it and releases
    every resource.  Options are those of :class:`ContainerConfig`.

    Threads: ``start`` once, from one thread; everything else (``run``,
    ``spawn``, ``call``, files, ``stats``, ``stop``, ``close``) from any
    thread, also concurrently.  ``stop``/``close`` may come at any time: during
    ``start`` they wait for it to end, then close; a command started
    meanwhile raises :class:`ContainerStateError`, one that was running ends
    as killed (``run`` returns its Result, ``SIGNALED`` by SIGKILL, or raises
    ``ContainerStateError`` if it had not started yet); never a raw ``OSError``.

    Processes: a container belongs to the process that made it.  In a
    ``fork()``ed child every operation raises ``ContainerStateError`` naming
    the fork, and ``close``/``__exit__``/garbage collection do nothing to it.

    Ctrl-C: a ``KeyboardInterrupt`` at any point of ``start``/``run``/``close``
    leaks nothing (SIGINT is deferred in the main thread over the few windows
    between acquiring a resource and registering its release: ``interrupts.py``).
    """

    @takes_container_options
    def __init__(self, config: Optional[ContainerConfig] = None, **options: Any) -> None:
        """A container, not started yet: its options, or a whole ``config`` (a
        :class:`ContainerConfig`) instead of them."""
        super().__init__(config_of(config, options))

    _slot: Optional[ServerSlot] = None

    @property
    def _calls(self) -> ServerSlot:
        """The fork server of call(), started by the first call.  The slot is
        made then too: it refers back to its container, a cycle that only
        the garbage collector would free (each sb.run's whole container, ~5%
        of its CPU time)."""
        if self._slot is None:
            with self._lock:
                if self._slot is None:
                    self._slot = ServerSlot(self)
        return self._slot

    def _image_store(self) -> ImageStore:
        return ImageStore(self.config.image_store)  # with the sandbox that works on sub-ids' files

    def stats(self) -> Stats:
        """CPU time, memory (now and peak), pids (now and peak) and block I/O of
        the whole container, from its cgroup (psutil over its processes where
        it has none: rootless without a delegated cgroup)."""
        self._check_running()
        assert self._init_pid is not None  # running
        return read_stats(self._cgroup, self._init_pid)

    def top(self) -> List[ProcessInfo]:
        """Every process of the container (:class:`ProcessInfo`), its init first, and
        the init's helpers (named in ``HELPER_NAMES``) among them."""
        self._check_running()
        assert self._init_pid is not None  # running
        return list_processes(self._init_pid)

    def pause(self) -> None:
        """Freeze every process of the container (``docker pause``) with the cgroup
        freezer, until :meth:`unpause`.  Raises UnsupportedError without a cgroup
        (rootless without a delegated one)."""
        self._freeze(True)

    def unpause(self) -> None:
        """Let the processes frozen by :meth:`pause` run again."""
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        self._check_running()
        if self._cgroup is None or not self._cgroup.freeze(frozen):
            raise UnsupportedError(
                "a cgroup freezer for pause", "as root, or rootless with a delegated cgroup v2 (the container has none)"
            )

    def update_limits(self, limits: Limits) -> None:
        """Change the running container's cgroup limits (``docker update``) to
        those of ``limits``: memory, memory_swap, cpus, cpu_shares, pids,
        cpuset_cpus.  Its rlimits are its processes' own and stay (ConfigError
        if ``limits`` changes one).  Raises UnsupportedError for a limit removed,
        a kind of limit the container was started without (its cgroup has no
        such controller), or no cgroup at all (rootless without a delegated one);
        SetupError when the kernel refuses a value (e.g. memory below what is in
        use).  ``config`` stays as the container was made."""
        self._check_running()
        kept = attrs.evolve(limits, **{k: getattr(self.config.limits, k) for k in _CGROUP_LIMITS})
        if kept != self.config.limits:
            raise ConfigError("limits", "only cgroup limits change on a running container, not rlimits")
        if self._cgroup is None:
            raise UnsupportedError("limits of a container without a cgroup", "give it a limit when it is made")
        with self._lock:  # (a close meanwhile removes the cgroup; two updates at once: one set of limits)
            self._check_running()
            self._cgroup.update(limits.cgroup())

    def call(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a fresh process of the container's Python
        and return its value (or raise what it raised).  See :meth:`invoke`.

        The keywords ``timeout`` and ``trust_result`` are refused
        (``ConfigError``): they are :meth:`invoke`'s options, and a call that
        meant them would run without them."""
        check_call_kwargs(kwargs)
        return self.invoke(fn, args, kwargs)

    def invoke(
        self,
        fn: Callable,
        args: Sequence[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        trust_result: bool = False,
    ) -> Any:
        """``call`` with options; each call runs in a process forked from a warm server.

        The value comes back only if it is a safe type (None, bool, int, float,
        complex, str, bytes, and list/tuple/dict/set/frozenset of them) unless
        ``trust_result=True`` (then it is unpickled: the sandbox can run code in
        this process).  ``timeout``: None or a positive number of seconds.
        Raises the remote exception (a builtin type rebuilt, else
        ``RemoteError``; ``remote_traceback`` attached), ``CallTimeout`` or ``CallCrashed``.
        """
        timeout = check_timeout(timeout)
        self._check_running()
        return self._calls.invoke(fn, tuple(args), dict(kwargs or {}), timeout=timeout, trust_result=trust_result)

    def preload(self, modules: Sequence[str]) -> None:
        """(Re)start the fork server of ``call`` with ``modules`` imported."""
        self._check_running()
        self._calls.get(check_modules(modules))

    def session(self, *, preload: Sequence[str] = ()) -> Session:
        """A persistent interpreter in this container: state stays between calls."""
        self._check_running()
        session = Session(self, preload=preload)
        self._on_close(session.close)
        return session
