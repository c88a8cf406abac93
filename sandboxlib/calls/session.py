"""The host side of ``Container.call``: a fork server started once per
container, requests pickled in, outcomes read back without unpickling.

The sandbox is not trusted: everything read from it is parsed by the safe
decoder of ``forkserver`` (values and exception data only); a pickle is
loaded only when the caller passed ``trust_result=True``."""

from __future__ import annotations

import builtins
import codecs
import os
import select
import sys
import threading
import time
from typing import Any, Callable, Dict, Generator, Mapping, Optional, Sequence, Tuple

from ..config import check_timeout
from ..errors import (
    CallCrashed,
    CallTimeout,
    CommandNotFoundError,
    ConfigError,
    ContainerStateError,
    NoPythonError,
    RemoteError,
    UnsafeResultError,
)
from ..results import verdict_of
from ..streams import DEVNULL, PIPE
from . import encoding, forkserver, framing
from .pickling import dumps

__all__ = ["CallServer", "ServerSlot", "Session", "OutputSink", "default_output", "check_modules"]

# After its own deadline passes, the server has this long to report the
# timeout before the host stops trusting it and kills it.
SERVER_GRACE = 2.0
START_TIMEOUT = 60.0  # interpreter start-up plus the preloads
_SOURCE_CACHE: Dict[str, str] = {}

OutputSink = Callable[[int, bytes], None]


def _server_source() -> str:
    """The fork server's program: the safe encoding's source, the framing's, then the server's."""
    if "src" not in _SOURCE_CACHE:
        parts = []
        for module in (encoding, framing, forkserver):
            with open(module.__file__, encoding="utf-8") as f:
                parts.append(f.read())
        _SOURCE_CACHE["src"] = "\n".join(parts)
    return _SOURCE_CACHE["src"]


def check_modules(modules: Sequence[str], field: str = "preload") -> Tuple[str, ...]:
    if isinstance(modules, str):
        raise ConfigError(field, "expected a list of module names, e.g. ['json']")
    names = tuple(modules)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{field}[{i}]", f"{name!r} is not a module name")
    return names


# -- what comes out ------------------------------------------------------------------
def default_output(which: int, data: bytes, decoders: Dict[int, Any]) -> None:
    """Write a chunk of the call's output to our sys.stdout / sys.stderr (so
    pytest's capture and a notebook's streams see it)."""
    decoder = decoders.setdefault(which, codecs.getincrementaldecoder("utf-8")("replace"))
    stream = sys.stdout if which == 1 else sys.stderr
    text = decoder.decode(data)
    if text and stream is not None:
        stream.write(text)
        stream.flush()


def rebuild_exception(payload: bytes, trust: bool) -> BaseException:
    """The remote exception: unpickled if trusted, the same builtin type when it
    can be rebuilt from its args, else RemoteError.  The traceback text is attached."""
    module, qualname, args, message, text, pickled = encoding.decode(payload)
    if not all(isinstance(x, str) for x in (module, qualname, message, text)):
        raise ValueError("malformed exception record")
    error: Optional[BaseException] = None
    if trust and pickled is not None:
        import pickle

        try:
            error = pickle.loads(pickled)
        except Exception:  # noqa: BLE001 - fall back to the safe reconstruction
            error = None
    if error is None:
        cls = getattr(builtins, qualname, None) if module == "builtins" else None
        if isinstance(cls, type) and issubclass(cls, Exception) and isinstance(args, tuple):
            try:
                error = cls(*args)
            except Exception:  # noqa: BLE001 - not rebuildable from its args
                error = None
    if error is None:
        return RemoteError(f"{module}.{qualname}", str(message), str(text))
    error.remote_traceback = text
    notes = list(getattr(error, "__notes__", []))
    error.__notes__ = notes + ["--- traceback in the sandbox ---\n" + text.rstrip()]
    return error


def decode_outcome(payload: bytes, trust: bool, timeout: Optional[float]) -> Tuple[Any, Optional[BaseException]]:
    """(value, None), or (None, the exception the call raised).  Raises
    CallCrashed when the sandbox broke the protocol."""
    kind, body = payload[:1], payload[1:]
    try:
        if kind == b"V":
            return encoding.decode(body), None
        if kind == b"P" and trust:
            import pickle

            return pickle.loads(body), None
        if kind == b"X":
            return None, rebuild_exception(body, trust)
        if kind == b"T":
            return None, CallTimeout(timeout)
        if kind == b"U":
            return None, UnsafeResultError(str(encoding.decode(body)))
        if kind == b"K":
            code, sig = encoding.decode(body)
            how = f"killed by signal {sig}" if sig else "it exited without returning a result"
            return None, CallCrashed(f"the call's process ended: {how}", exit_code=code, signal=sig)
    except (ValueError, TypeError) as err:
        raise CallCrashed(f"the sandbox broke the call protocol (malformed outcome: {err})") from None
    raise CallCrashed(f"the sandbox broke the call protocol (outcome {kind!r})")


# -- the server ----------------------------------------------------------------------
class SpareLost(CallCrashed):
    """The server's process for the next call died before it took the request:
    nothing of the call ran, so it is retried once on a new server."""


class CallServer:
    """One fork server (or one persistent session process) in a container.

    Calls are serialized (one at a time per server); ``alive`` is False once
    it died or was killed, and the owner starts a new one."""

    def __init__(self, container, *, preload: Sequence[str] = (), persistent: bool = False) -> None:
        self._counters = container._counters  # OOM kills, forks refused: the verdict of a crash
        self.persistent = persistent
        self.preload = check_modules(preload)
        own_root = container.config.rootfs is not None or container.config.image is not None
        python = "python3" if own_root else sys.executable  # the host view shows this interpreter
        argv = [python, "-I", "-c", _server_source(), "1" if persistent else "0", *self.preload]
        self._lock = threading.Lock()
        try:
            self._proc = container.spawn(argv, stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
        except CommandNotFoundError as err:
            raise NoPythonError(
                f"call() needs a Python interpreter in the container: {python!r} is not there ({err})"
            ) from None
        self._in, self._out = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        self._buffer = bytearray()
        self._poller = select.poll()
        self._poller.register(self._out, select.POLLIN)
        self.alive = True
        try:
            kind, payload = self._drive(self._read_frame(time.monotonic() + START_TIMEOUT, None))
            if kind != b"H":
                raise CallCrashed(f"the fork server sent {kind!r} instead of its greeting")
            self.version, self.pid = encoding.decode(payload)
        except BaseException:
            self.close()
            raise

    def invoke(
        self,
        fn: Callable,
        args: tuple,
        kwargs: dict,
        *,
        timeout: Optional[float],
        trust_result: bool,
        on_output: Optional[OutputSink] = None,
        what: str = "call",
    ) -> Any:
        steps = self.steps(fn, args, kwargs, timeout=timeout, trust_result=trust_result, on_output=on_output, what=what)
        with self._lock:
            return self._drive(steps)

    def steps(
        self,
        fn: Callable,
        args: tuple,
        kwargs: dict,
        *,
        timeout: Optional[float],
        trust_result: bool,
        on_output: Optional[OutputSink] = None,
        what: str = "call",
    ) -> Generator[Optional[float], None, Any]:
        """One call as steps: a generator that yields (a deadline, or None)
        each time it needs the server's output readable, and returns the
        value (or raises).  A driver waits, then sends None, or throws
        CallTimeout(0) at the deadline (or whatever ended its wait): the
        sync front polls (``_drive``), the asyncio front awaits.  The
        driver holds the server (one call at a time)."""
        body = dumps(fn if what == "exec" else (fn, args, kwargs))
        request = framing.request(what, timeout, trust_result, body)
        decoders: Dict[int, Any] = {}
        sink = on_output or (lambda which, data: default_output(which, data, decoders))
        return self._exchange(request, sink, timeout, trust_result)

    def _exchange(
        self, request: bytes, sink: OutputSink, timeout: Optional[float], trust_result: bool
    ) -> Generator[Optional[float], None, Any]:
        if not self.alive:
            raise ContainerStateError("the fork server is gone")
        grace = 0.0 if self.persistent else SERVER_GRACE
        deadline = None if timeout is None else time.monotonic() + timeout + grace
        before = self._counters()
        try:
            try:
                framing.write_frame(self._in, b"C", request)
            except BrokenPipeError:
                pass  # the server ended: its last word (L, E) or its end is read below
            payload = yield from self._read_outcome(deadline, sink)
            value, error = decode_outcome(payload, trust_result, timeout)
        except CallTimeout:
            self.close()
            raise CallTimeout(timeout) from None
        except CallCrashed as crash:
            self.close()
            raise self._with_verdict(crash, before) from None
        except BaseException:
            self.close()  # a half-read channel (or a lying server) is not used again
            raise
        if isinstance(error, CallCrashed):
            raise self._with_verdict(error, before)
        if error is not None:
            raise error
        return value

    @property
    def output_fd(self) -> int:
        """What ``steps`` waits to be readable."""
        return self._out

    def _drive(self, steps: Generator[Optional[float], None, Any]) -> Any:
        """Run ``steps`` here: poll until each deadline (None: a blocking read)."""
        try:
            deadline = next(steps)
            while True:
                if deadline is not None and not self._poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    deadline = steps.throw(CallTimeout(0))
                else:
                    deadline = steps.send(None)
        except StopIteration as done:
            return done.value

    def _with_verdict(self, crash: CallCrashed, before: Tuple[int, int]) -> CallCrashed:
        """The crash with why the sandbox ended it (OOM, pids limit, a signal), as for commands."""
        if crash.exit_code is None and crash.signal is None:
            return crash  # a protocol breach, not an ending
        after = self._counters()
        verdict = verdict_of(
            exit_code=crash.exit_code if crash.exit_code is not None else 128 + crash.signal,
            sig=crash.signal,
            timed_out=False,
            oom_killed=after[0] > before[0],
            pids_limit_hit=after[1] > before[1],
        )
        return CallCrashed(crash.detail, exit_code=crash.exit_code, signal=crash.signal, verdict=verdict)

    def _read_outcome(self, deadline: Optional[float], sink: OutputSink) -> Generator[Optional[float], None, bytes]:
        while True:
            kind, payload = yield from self._read_frame(deadline, sink)
            if kind == b"R":
                return payload
            if kind in (b"1", b"2"):
                sink(int(kind), payload)
            else:
                raise CallCrashed(f"the sandbox broke the call protocol (frame {kind!r})")

    def _read_frame(self, deadline: Optional[float], sink) -> Generator[Optional[float], None, Tuple[bytes, bytes]]:
        header = yield from self._read_exact(framing.HEADER.size, deadline)
        kind, size = framing.HEADER.unpack(header)
        payload = yield from self._read_exact(size, deadline)
        if kind == b"M":
            self.close()
            name, why = encoding.decode(payload)
            raise ConfigError("preload", f"cannot preload {str(name)!r} in the sandbox: {str(why)}")
        if kind in (b"E", b"L"):
            self.close()
            text = str(encoding.decode(payload))
            raise SpareLost(text) if kind == b"L" else CallCrashed("the fork server failed:\n" + text)
        return kind, payload

    def _read_exact(self, size: int, deadline: Optional[float]) -> Generator[Optional[float], None, bytes]:
        """``size`` bytes from the server, read ahead into a buffer (a frame's
        header and payload usually come in one read); yields ``deadline``
        whenever it needs more (the driver returns once there is some)."""
        buffer = self._buffer
        while len(buffer) < size:
            yield deadline
            chunk = os.read(self._out, max(size - len(buffer), 1 << 16))
            if not chunk:
                raise self._died()
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _died(self) -> CallCrashed:
        code = self._proc.wait(timeout=5)
        self.close()
        sig = -code if code < 0 else None
        return CallCrashed("the sandboxed interpreter ended", exit_code=None if sig else code, signal=sig)

    def close(self) -> None:
        """Kill the server and everything it started; release the pipes.  Idempotent."""
        self.alive = False
        proc = self._proc
        if proc.returncode is None and not proc._forked():  # a forked child only closes its copies
            proc.kill_tree()
            try:
                proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - the container's close reaps it anyway
                pass
        proc.close()


class ServerSlot:
    """A container's fork server: started by the first call, replaced when it died."""

    def __init__(self, container) -> None:
        self._container = container
        self._lock = threading.Lock()
        self.server: Optional[CallServer] = None

    @property
    def pid(self) -> Optional[int]:
        """The server's pid inside the container."""
        return self.server.pid if self.server is not None else None

    def running(self) -> Optional[CallServer]:
        """The running server, if there is one (the asyncio front starts one with ``get`` in a thread)."""
        server = self.server
        return server if server is not None and server.alive else None

    def get(self, preload: Optional[Tuple[str, ...]] = None) -> CallServer:
        """The running server; a new one if it is gone or ``preload`` is given."""
        with self._lock:
            old = self.server
            if old is not None and old.alive and preload is None:
                return old
            if old is not None:
                old.close()
                self.server = None
            server = CallServer(self._container, preload=preload or (old.preload if old else ()))
            self._container._on_close(server.close)
            self.server = server
            return server

    def invoke(self, fn: Callable, args: tuple, kwargs: dict, *, timeout: Optional[float], trust_result: bool) -> Any:
        """A call on the running server; on a new one if it lost the process
        that was to run it (a process killed while it waited)."""
        try:
            return self.get().invoke(fn, args, kwargs, timeout=timeout, trust_result=trust_result)
        except SpareLost:
            return self.get().invoke(fn, args, kwargs, timeout=timeout, trust_result=trust_result)


INVOKE_OPTIONS = ("timeout", "trust_result")


def check_call_kwargs(kwargs: Mapping[str, Any]) -> None:
    """``call(fn, **kwargs)`` passes every keyword to ``fn``: refuse those
    that look like ``invoke``'s options, whichever was meant."""
    clash = [k for k in INVOKE_OPTIONS if k in kwargs]
    if clash:
        raise ConfigError(
            clash[0],
            f"call() passes its keywords to the function; for the call's "
            f"{clash[0]}, use invoke(fn, args, kwargs, {clash[0]}=...); to pass "
            f"{clash[0]}= to the function, use invoke(fn, args, {{{clash[0]!r}: ...}})",
        )


class Session:
    """A long-lived interpreter in a container: state (globals, imports) stays
    between calls.  ``exec(code)`` runs source as a notebook cell does."""

    def __init__(self, container, *, preload: Sequence[str] = ()) -> None:
        self._server = CallServer(container, preload=preload, persistent=True)

    @property
    def alive(self) -> bool:
        return self._server.alive

    def call(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the session's interpreter (``timeout`` and
        ``trust_result`` are refused: they are :meth:`invoke`'s options)."""
        check_call_kwargs(kwargs)
        return self.invoke(fn, args, kwargs)

    def invoke(
        self,
        fn: Callable,
        args: tuple = (),
        kwargs: Optional[dict] = None,
        *,
        timeout: Optional[float] = None,
        trust_result: bool = False,
    ) -> Any:
        """As ``call``, with options.  A timeout kills the session (its state is lost)."""
        timeout = check_timeout(timeout)
        return self._server.invoke(fn, tuple(args), dict(kwargs or {}), timeout=timeout, trust_result=trust_result)

    def exec(
        self, source: str, *, timeout: Optional[float] = None, on_output: Optional[OutputSink] = None
    ) -> Optional[str]:
        """Run ``source`` in the session's namespace; returns the repr of a final
        expression (or None).  Output is streamed to ``on_output`` or our stdout/stderr."""
        if not isinstance(source, str):
            raise ConfigError("source", f"expected a string, got {type(source).__name__}")
        timeout = check_timeout(timeout)
        return self._server.invoke(
            source, (), {}, timeout=timeout, trust_result=False, on_output=on_output, what="exec"
        )

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
