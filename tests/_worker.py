"""Runs test functions as an unprivileged user (the rootless half of the
suite).  Reads pickled (module, function, args) requests on stdin, answers
with pickled (ok, value, leaks) on stdout.  ``leaks`` lists fds and child
processes a call left behind in this worker."""

import importlib
import os
import pickle
import struct
import sys
import traceback

import psutil


def _snapshot():
    me = psutil.Process()
    return set(os.listdir("/proc/self/fd")), {c.pid for c in me.children(recursive=True)}


def _read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main() -> None:
    from sandboxlib.native import binding

    binding.init_memfd()  # made once per process: not a leak of the first call
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # prints of the tests must not corrupt the channel
    while True:
        try:
            (size,) = struct.unpack("=Q", _read_exact(inp, 8))
        except EOFError:
            return
        module, name, args = pickle.loads(_read_exact(inp, size))
        fds_before, kids_before = _snapshot()
        try:
            value = getattr(importlib.import_module(module), name)(*args)
            answer = (True, value)
        except BaseException as err:  # noqa: BLE001 - everything goes back to the test
            err.__traceback_text__ = traceback.format_exc()
            try:
                pickle.dumps(err)
                answer = (False, err)
            except Exception:
                answer = (False, RuntimeError(traceback.format_exc()))
        fds_after, kids_after = _snapshot()
        leaks = {"fds": sorted(fds_after - fds_before), "children": sorted(kids_after - kids_before)}
        data = pickle.dumps(answer + (leaks,))
        out.write(struct.pack("=Q", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    main()
