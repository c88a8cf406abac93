"""One-shot ``run()``: a fresh container for one command."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import attrs

from .calls.session import check_modules
from .config import (
    Limits,
    Mount,
    Network,
    check_timeout,
    config_of,
    network_option,
    parse_size,
    takes_container_options,
)
from .errors import ConfigError
from .results import Result
from .runtime.container import Container
from .streams import PIPE, StdioSpec

__all__ = ["run", "sandboxed", "with_memory"]


@takes_container_options
def run(
    argv: Optional[Sequence[str]],
    *,
    input: Union[bytes, str, None] = None,
    timeout: Optional[float] = None,
    stdin: StdioSpec = None,
    stdout: StdioSpec = PIPE,
    stderr: StdioSpec = PIPE,
    container: Optional[Container] = None,
    check: bool = False,
    text: bool = False,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    tty: Union[bool, Tuple[int, int]] = False,
    **options: Any,
) -> Result:
    """Run ``argv`` as the main process of a fresh, fully isolated container.

    The container ends with the command: whatever it left running is
    killed.  On ``timeout`` everything in the container is killed and the
    result says ``timed_out``.  Output is captured unless told otherwise.
    ``seccomp`` is the syscall filter: Docker's default policy unless given a
    :class:`~sandboxlib.Seccomp` or None (no filter).  With ``image``, the
    command is the image's Entrypoint followed by ``argv``, or by its Cmd when
    ``argv`` is None or empty (``docker run``); its writes go to a writable
    layer on disk in the store (``writable_layer="tmpfs"``: in memory, with
    ``writable_layer_size`` as its limit), removed when the container ends.
    The options are those of :class:`~sandboxlib.ContainerConfig`.

    ``input`` (bytes, or a str: UTF-8) is fed to stdin.  ``timeout`` is None
    or a positive number of seconds.  As ``subprocess.run``: ``text=True`` (or
    an ``encoding``/``errors``) decodes the output to str; ``check=True``
    raises :class:`~sandboxlib.CommandFailed` (a ``CalledProcessError`` too)
    unless the command exited with 0 in time.  ``container``: run in this
    :class:`~sandboxlib.Container`, not yet started (its options are its own:
    giving options too is a ``ConfigError``); it is closed when the command ends.
    ``tty=True`` (or a ``(rows, cols)`` size): the command runs on a
    pseudo-terminal of the container's own (``Container.run``'s ``tty``).
    """
    timeout = check_timeout(timeout)
    if container is not None and options:
        raise ConfigError(
            sorted(options)[0],
            "give either container= or container options, not both (the container has its options already)",
        )
    for name in ("command", "log"):
        if options.get(name) not in (None, False) or (container is not None and getattr(container.config, name)):
            raise ConfigError(
                name,
                "run() runs argv as the main command of its container, whose output it "
                f"returns: {name}= is for a lasting Container (Container(command=..., log=...))",
            )
    box = container or Container(config_of(None, options))
    try:
        return box._run(
            argv,
            input=input,
            timeout=timeout,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=None,
            cwd=None,
            user=None,
            main=True,
            check=check,
            text=text,
            encoding=encoding,
            errors=errors,
            tty=tty,
        )
    finally:
        box.close()


def with_memory(limits: Optional[Limits], memory: Union[int, str, None], field: str = "memory") -> Limits:
    """``limits`` with a memory limit (a cgroup limit: ``Limits.memory``)."""
    limits = limits or Limits()
    if memory is None:
        return limits
    return attrs.evolve(limits, memory=parse_size(memory, field))


def sandboxed(
    fn: Optional[Callable] = None,
    *,
    timeout: Optional[float] = None,
    memory: Union[int, str, None] = None,
    network: Union[Network, str, bool] = Network.NONE,
    trust_result: bool = False,
    preload: Sequence[str] = (),
    rootfs: Union[str, os.PathLike, None] = None,
    mounts: Sequence[Mount] = (),
    env: Optional[Mapping[str, str]] = None,
    limits: Optional[Limits] = None,
) -> Any:
    """Decorator: every call of the function runs in a sandbox (see ``Container.invoke``).

    One container per decorated function, started by the first call and
    closed with ``f.close()`` or when the function is collected; each call
    runs in a fresh process forked from its warm server (``/tmp`` is the
    container's, shared between calls).  ``network`` is ``Container``'s
    (``Network.NONE``/``"none"``, ``Network.HOST``/``"host"``; True and False
    are aliases of ``"host"`` and ``"none"``); ``timeout`` is None or a
    positive number of seconds; ``memory`` needs cgroup limits (``Limits.memory``).

        @sb.sandboxed(timeout=5)
        def parse(text: str) -> dict: ...
    """
    timeout = check_timeout(timeout)
    if isinstance(network, bool):  # the documented alias
        network = Network.HOST if network else Network.NONE
    config = {
        "rootfs": rootfs,
        "mounts": mounts,
        "env": env,
        "limits": with_memory(limits, memory),
        "network": network_option(network),
    }
    preload = check_modules(preload)
    if fn is None:
        return functools.partial(_Sandboxed, config=config, preload=preload, timeout=timeout, trust_result=trust_result)
    return _Sandboxed(fn, config=config, preload=preload, timeout=timeout, trust_result=trust_result)


class _Sandboxed:
    """The function ``sandboxed`` returns."""

    def __init__(
        self, fn: Callable, *, config: dict, preload: tuple, timeout: Optional[float], trust_result: bool
    ) -> None:
        functools.update_wrapper(self, fn)
        self._fn, self._config, self._preload = fn, config, preload
        self._options: Dict[str, Any] = {"timeout": timeout, "trust_result": trust_result}
        self._box: Optional[Container] = None
        self._lock = threading.Lock()
        self._finalizer: Optional[weakref.finalize] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._container().invoke(self._fn, args, kwargs, **self._options)

    def _container(self) -> Container:
        with self._lock:
            if self._box is None or not self._box.running:
                self.close()
                box = Container(**self._config).start()
                self._finalizer = weakref.finalize(self, box.close)
                box.preload(self._preload)
                self._box = box
            return self._box

    def close(self) -> None:
        """Close the function's container (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._box = self._finalizer = None
