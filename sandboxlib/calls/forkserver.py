"""The sandbox side of ``call()``: a fork server, and the wire format both sides share.

This file, ``encoding`` and ``framing`` use the standard library only: the host
sends their source to the sandboxed interpreter (``python -I -c``), so it works
whether or not sandboxlib itself is importable inside (a rootfs image needs
only a compatible Python, plus cloudpickle for functions pickled by value).

Frames (``framing``), both ways: one kind byte, a 4-byte big-endian length, the payload.
Host -> server: ``C`` a call (a pickle, the sandbox trusts its host), ``Q`` quit;
they are read by the spare, a process forked ahead of time (see ``Spare``).
Server -> host: ``H`` hello (after preloading), ``1``/``2`` output chunks as
they come, ``R`` the outcome of a call, ``E`` a fatal error of the server,
``L`` the process forked for the next call died before it took a request
(the server ends; nothing of the call ran, the host may retry it), ``M`` a
module to preload failed to import (the server ends).
Nothing the host reads from the sandbox is unpickled unless the caller opted
in: values and exceptions come back in the safe encoding (``_safe_encoding``).
"""

import itertools
import os
import select
import signal
import sys
import threading
import traceback

_THIS_FILE = sys._getframe().f_code.co_filename
try:  # in the host; in the sandbox the encoding's and the framing's sources come first in the program
    from .encoding import _LEN, MAX_DEPTH, UnsafeValue, decode, encode  # noqa: F401
    from .framing import (
        HEADER,
        _complete,
        _kinds,
        _read_request,
        _send,
        _split_message,
        read_frame,
        request,
        split_request,
        write_frame,
    )
except ImportError:
    pass


# -- outcomes: what a call sends back --------------------------------------------
def outcome_of(run, trust):
    """``V`` + safe value, ``P`` + pickle (trusted callers only), ``X`` + the
    exception, or ``U`` + why the value is not safe to send."""
    try:
        value = run()
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the host
        return exception_outcome(err, trust)
    try:
        if trust:
            return b"P" + _pickle(value)
        return b"V" + encode(value)
    except UnsafeValue as err:
        return b"U" + encode(str(err))  # the host raises UnsafeResultError
    except BaseException as err:  # noqa: BLE001
        return exception_outcome(err, trust)


def _pickle(value):
    try:
        import cloudpickle

        return cloudpickle.dumps(value)
    except ImportError:
        import pickle

        return pickle.dumps(value)


def exception_outcome(err, trust):
    """(module, qualname, args or None if not safe, str, traceback text, pickle or None), safe-encoded."""
    kind = type(err)
    args = err.args
    try:
        encode(args)
    except UnsafeValue:
        args = None
    try:
        message = str(err)
    except BaseException:  # noqa: BLE001 - a broken __str__
        message = repr(args)
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _THIS_FILE:
        tb = tb.tb_next  # the server's own frames say nothing to the caller
    text = "".join(traceback.format_exception(kind, err, tb))
    pickled = None
    if trust:
        try:
            pickled = _pickle(err)
        except BaseException:  # noqa: BLE001 - then it comes back rebuilt or as RemoteError
            pickled = None
    return b"X" + encode((kind.__module__, kind.__qualname__, args, message, text, pickled))


# -- the server -------------------------------------------------------------------
class SpareLost(Exception):
    """The spare died before it took a request: nothing of a call ran."""


class Spare:
    """A process forked ahead of time from the clean server: it reads its one
    request straight from the host's channel, so a call costs no fork() and
    no relay through the server."""

    def __init__(self, pid, pidfd, res_r, outputs):
        self.pid, self.pidfd, self.res_r, self.outputs = pid, pidfd, res_r, outputs

    def fds(self):
        return [fd for fd in (self.pidfd, self.res_r, *self.outputs) if fd is not None]


class Server:
    """Serves calls on the channel; output of calls goes to the host as frames."""

    def __init__(self, chan_in, chan_out, persistent):
        self.chan_in, self.chan_out = chan_in, chan_out
        self.persistent = persistent
        self.pid = os.getpid()
        self.lock = threading.Lock()  # one writer on the channel at a time
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.outputs = {}
        self.warm_request = None  # a no-op request each spare runs first (see child)

    def serve(self):
        if self.persistent:
            return self.serve_persistent()
        while True:
            spare = self.fork_spare()
            try:
                outcome = self.supervise(spare)
                if spare.pid is not None:
                    _kill_group(spare.pid)  # nothing the call started outlives it
                if outcome is None:
                    return  # the host closed the channel
                with self.lock:
                    self.drain()
                    write_frame(self.chan_out, b"R", outcome)
            finally:
                # Reaped before the next fork, not after: while the killed
                # process lives, the pages it shares with the server are
                # copied, not reused, when the server writes to them.
                self.reap(spare)

    # -- a fresh forked process per call
    def fork_spare(self):
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (res_r, res_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        if pid == 0:
            self.child(res_w, out_w, err_w)
        for fd in (res_w, out_w, err_w):
            os.close(fd)
        for fd in (res_r, out_r, err_r):
            os.set_blocking(fd, False)
        spare = Spare(pid, os.pidfd_open(pid), res_r, {out_r: b"1", err_r: b"2"})
        self.outputs = spare.outputs
        return spare

    def child(self, res_w, out_w, err_w):
        """The spare: set up, rehearse a no-op call (its copy-on-write page
        faults and first-use costs are paid now, not during the call), then
        take the next request from the channel.  It tells the server ``S``
        (taken, with the timeout: the server starts the clock) before running
        it and ``R`` with the outcome."""
        try:
            os.setpgid(0, 0)  # its own group: a timeout or its end kills what it started
            if _PRCTL is not None:
                _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: dies with the server
            if os.getppid() != self.pid:
                return  # the server died before the line above
            null = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((null, 0), (out_w, 1), (err_w, 2)):
                os.dup2(fd, target)
            low, high = sorted((self.chan_in, res_w))
            os.closerange(3, low)
            os.closerange(low + 1, high)
            os.closerange(high + 1, 1 << 16)
            if self.warm_request is not None and not select.select([self.chan_in], [], [], 0)[0]:
                self.run_request(self.warm_request)  # unless the request is there already
            try:
                kind, payload = _read_request(self.chan_in)
            except EOFError:
                kind = b"Q"
            os.close(self.chan_in)  # the call cannot read the host's next requests
            if kind != b"C":
                _send(res_w, b"Q")
                return
            _send(res_w, b"S" + encode(split_request(payload)[0][1]))  # taken; the timeout
            outcome = self.run_request(payload)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - the user may have closed it
                    pass
            _send(res_w, b"R" + outcome)
            while True:  # the server kills it: an exit now (unmapping the
                signal.pause()  # interpreter) would hold the CPU the server wakes on
        finally:
            os._exit(0)

    def run_request(self, payload):
        (what, _timeout, trust), body = split_request(payload)
        return outcome_of(lambda: self.job(what, body), trust)

    def job(self, what, body):
        import pickle

        if what == "exec":
            return run_cell(pickle.loads(body), self.namespace)
        fn, args, kwargs = pickle.loads(body)
        return fn(*args, **kwargs)

    def supervise(self, spare):
        """Forward output until the spare's outcome is complete, it ended, or
        the call's timeout passed.  Returns the R payload, None if the host
        closed the channel."""
        messages = bytearray()
        poller = select.poll()
        for fd in (spare.res_r, spare.pidfd, *spare.outputs):
            poller.register(fd, select.POLLIN)
        deadline = taken = None
        while True:
            while _complete(messages):
                message, messages = _split_message(messages)
                if message[:1] == b"S":
                    if not taken:  # the first only: the call itself could write more
                        taken, timeout = True, decode(message[1:])
                        deadline = None if timeout is None else _now() + timeout
                else:
                    return message[1:] if message[:1] == b"R" else None
            wait = None if deadline is None else max(0, deadline - _now()) * 1000
            events = poller.poll(wait)
            if not events:
                return b"T"
            for fd, _ in events:
                if fd == spare.res_r:
                    chunk = os.read(fd, 1 << 16)
                    messages += chunk
                    if not chunk:
                        poller.unregister(fd)
                elif fd == spare.pidfd:
                    messages += _read_rest(spare.res_r)
                    kinds = _kinds(messages)
                    if not kinds & {b"R", b"Q"}:
                        return self.ended(spare, taken or b"S" in kinds)
                    poller.unregister(fd)
                else:
                    self.forward(fd, poller)

    def ended(self, spare, taken):
        """The spare ended without an outcome: ``K`` with its wait status if it
        had taken a request; before that nobody knows what it read of the
        channel, so the server gives up (the host starts a new one)."""
        _kill_group(spare.pid)
        _, status = os.waitpid(spare.pid, 0)
        spare.pid = None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if not taken:
            how = f"killed by signal {sig}" if sig else f"exit code {code}"
            raise SpareLost(f"the process forked for the next call ended before it began ({how})")
        return b"K" + encode((code, sig))

    def reap(self, spare):
        """Reap the call's process (killed already), release its fds.  Idempotent."""
        if spare.pid is not None:
            os.waitpid(spare.pid, 0)
            spare.pid = None
        for fd in spare.fds():
            try:
                os.close(fd)
            except OSError:
                pass
        spare.pidfd = spare.res_r = None
        spare.outputs = {}

    def forward(self, fd, poller=None):
        """Forward one chunk of output; False at EOF."""
        with self.lock:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True  # drained by the main thread meanwhile
            if chunk:
                write_frame(self.chan_out, self.outputs[fd], chunk)
            elif poller is not None:
                poller.unregister(fd)
            return bool(chunk)

    def drain(self):
        """Forward what is left in the output pipes (the caller holds the lock)."""
        for fd, which in self.outputs.items():
            chunk = _read_rest(fd)
            if chunk:
                write_frame(self.chan_out, which, chunk)

    # -- one long-lived process (a session): state stays between calls
    def serve_persistent(self):
        for target, which in ((1, b"1"), (2, b"2")):
            r, w = os.pipe()
            os.dup2(w, target)
            os.close(w)
            os.set_blocking(r, False)
            self.outputs[r] = which
        threading.Thread(target=self.pump, daemon=True).start()
        while True:
            try:
                kind, payload = read_frame(self.chan_in)
            except EOFError:
                return
            if kind != b"C":
                return
            outcome = self.run_request(payload)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            with self.lock:
                self.drain()
                write_frame(self.chan_out, b"R", outcome)

    def pump(self):
        poller = select.poll()
        for fd in self.outputs:
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                self.forward(fd)


_CELL_NUMBERS = itertools.count(1)


def run_cell(source, namespace):
    """Run a notebook cell; the repr of a final expression is its value (as
    IPython shows it).  Each cell's source is kept under its own name
    (``<cell 3>``): tracebacks, now or from its functions later, show its lines."""
    import ast
    import linecache

    name = f"<cell {next(_CELL_NUMBERS)}>"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    tree = ast.parse(source, name, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, name, "eval"), namespace)
        if value is not None:
            namespace["_"] = value
            return repr(value)
    return None


def _read_rest(fd):
    """Everything readable now from a non-blocking fd."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _warm_request():
    """A call of a no-op function defined here (pickled by value, as the
    host's own functions are) for each spare to rehearse."""
    try:
        import cloudpickle

        pickled = cloudpickle.dumps((lambda: None, (), {}))
    except ImportError:
        import pickle

        pickled = pickle.dumps((int, (), {}))
    return request("call", None, False, pickled)


def _now():
    import time

    return time.monotonic()


_PRCTL = None


def _load_prctl():
    """prctl(), to tie each call's process to the server's life (best effort)."""
    global _PRCTL
    try:
        import ctypes

        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        _PRCTL = None


def main(argv):
    """argv: [persistent 0/1, modules to preload...]."""
    chan_in, chan_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray writes of the server itself never reach the channel
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # output is streamed as it comes, in order
    server = Server(chan_in, chan_out, persistent=argv[0] == "1")
    try:
        _load_prctl()
        try:
            import cloudpickle  # noqa: F401 - loaded once here, not by every call's process
        except ImportError:
            pass  # only functions pickled by value need it
        for name in argv[1:]:
            try:
                __import__(name)
            except Exception as err:  # noqa: BLE001 - the host names the module
                write_frame(chan_out, b"M", encode((name, f"{type(err).__name__}: {err}")))
                raise SystemExit(1) from None
        server.warm_request = None if server.persistent else _warm_request()
        write_frame(chan_out, b"H", encode((sys.version_info[:3], os.getpid())))
        server.serve()
    except SpareLost as err:  # the host retries the call on a new server
        write_frame(chan_out, b"L", encode(str(err)))
        raise SystemExit(1) from None
    except BaseException as err:  # noqa: BLE001 - the host shows why the server died
        try:
            write_frame(chan_out, b"E", encode("".join(traceback.format_exception(type(err), err, err.__traceback__))))
        except OSError:
            pass
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
