"""The IPython extension: ``%load_ext sandboxlib``, ``%%sandbox``/``%sandbox``
in a real ``InteractiveShell``, and in a real Jupyter kernel (ipykernel)
driven through ``jupyter_client``, reading the streamed output.

Root and rootless (``runner``)."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

STREAM_CELL = "%%sandbox --timeout 30\nimport time\nfor i in range(3):\n    print('line', i)\n    time.sleep(0.3)\n"


class _Recorder:
    """A stdout that notes when each write came."""

    def __init__(self) -> None:
        self.writes = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.writes)


def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history database (an open fd)
    return InteractiveShell(config=config)


def _run(shell, cell: str):
    """(result, error, printed) of one cell."""
    saved, sys.stdout = sys.stdout, _Recorder()
    try:
        result = shell.run_cell(cell)
        return result, sys.stdout
    finally:
        sys.stdout = saved


def check_shell():
    from IPython.core.error import UsageError

    shell = _shell()
    assert shell.run_cell("%load_ext sandboxlib").success
    try:
        seen = {}
        result, out = _run(shell, "%%sandbox\nimport os\nx = 41\nprint('pid', os.getpid(), os.uname().nodename)\nx + 1")
        words = out.text.split()
        seen["first"] = (
            repr(result.result),
            words[0] == "pid" and int(words[1]) < 100,  # its own pid ns
            words[2] != os.uname().nodename,
        )
        seen["kept"] = repr(_run(shell, "%sandbox x")[0].result)
        result, out = _run(shell, STREAM_CELL)
        ended = time.monotonic()
        seen["streamed"] = (out.text, ended - out.writes[0][0] >= 0.5)
        seen["error"] = type(_run(shell, "%sandbox 1/0")[0].error_in_exec).__name__
        seen["usage"] = type(_run(shell, "%sandbox --bogus 1 x")[0].error_in_exec).__name__
        result, out = _run(shell, "%%sandbox\ndef f(d):\n    return d['k']\nf({})")
        seen["cell_traceback"] = (type(result.error_in_exec).__name__, out.text)
        result, out = _run(shell, "%%sandbox --timeout 0.5\nimport time; time.sleep(30)")
        seen["timeout"] = type(result.error_in_exec).__name__
        seen["timeout_says"] = out.text
        seen["after_timeout"] = repr(_run(shell, "%sandbox 'x' in globals()")[0].result)
        _run(shell, "%sandbox y = 1")
        shell.run_cell("%sandbox_reset")
        seen["reset"] = repr(_run(shell, "%sandbox 'y' in globals()")[0].result)
        seen["options_differ"] = isinstance(_run(shell, "%sandbox --network 1")[0].error_in_exec, UsageError)
        shell.run_cell("%sandbox_reset")
        with_memory = _run(shell, "%sandbox --memory 64M 1")[0].error_in_exec
        seen["memory"] = type(with_memory).__name__ if with_memory else "accepted"
        if not with_memory:
            result, out = _run(shell, "%%sandbox\nb = bytearray(300 << 20)")
            seen["oom"] = (type(result.error_in_exec).__name__, out.text)
        shell.run_cell("%sandbox_reset")
        seen["preload"] = str(_run(shell, "%%sandbox --preload json,nosuchmod\n1")[0].error_in_exec)
        return seen
    finally:
        shell.run_cell("%unload_ext sandboxlib")
        shell.cleanup()


def test_interactive_shell(runner):
    seen = runner(check_shell)
    assert seen["first"] == ("42", True, True)
    assert seen["kept"] == "41"
    assert seen["streamed"] == ("line 0\nline 1\nline 2\n", True)
    assert seen["error"] == "ZeroDivisionError" and seen["usage"] == "UsageError"
    assert seen["timeout"] == "CallTimeout" and seen["after_timeout"] == "False"
    # a failing cell shows its own traceback (with its lines), not the magic's or the session's frames
    kind, text = seen["cell_traceback"]
    assert kind == "KeyError" and text.startswith('Traceback (most recent call last):\n  File "<cell '), text
    assert "    return d['k']\n" in text and text.rstrip().endswith("KeyError: 'k'")
    assert "magic.py" not in text and "session.py" not in text and "traceback in the sandbox" not in text
    assert seen["timeout_says"].startswith(
        "CallTimeout: the cell ran longer than its timeout (0.5 s) and was "
        "killed; the sandbox session ended with it: its variables are gone"
    )
    assert seen["preload"] == (
        "--preload: cannot preload 'nosuchmod' in the sandbox: ModuleNotFoundError: No module named 'nosuchmod'"
    )
    if not runner.rootless:
        kind, text = seen["oom"]
        assert kind == "CallCrashed" and text.count("out of memory") == 1 and "OOM" not in text, text
        assert text.startswith(
            "CallCrashed: the cell ran out of memory (--memory 64M); the sandbox session "
            "ended with it: its variables are gone"
        ), text
    assert seen["reset"] == "False" and seen["options_differ"]
    # a memory limit needs a cgroup: root has one; the rootless test user has
    # no delegated cgroup, so the limit is refused, never silently dropped
    assert seen["memory"] == ("UnsupportedError" if runner.rootless else "accepted")


@pytest.mark.parametrize("line", ["--timeout", "--timeout x", "--timeout -1", "--network=yes x", "--preload a-b x"])
def test_bad_options(line):
    from IPython.core.error import UsageError

    shell = _shell()
    shell.run_cell("%load_ext sandboxlib")
    try:
        error = shell.run_cell(f"%sandbox {line}").error_in_exec
        assert isinstance(error, (UsageError, ValueError)), error
    finally:
        shell.run_cell("%unload_ext sandboxlib")
        shell.cleanup()


def test_import_sandboxlib_does_not_import_ipython():
    import subprocess

    code = "import sys, sandboxlib; print('IPython' in sys.modules, callable(sandboxlib.load_ipython_extension))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


# -- a real Jupyter kernel -------------------------------------------------------------------------
def _execute(client, code: str, timeout: float = 60) -> tuple:
    """Run a cell; returns (status, [(arrival time, stream text)], results, error name)."""
    msg_id = client.execute(code)
    streams, results, error = [], [], None
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            streams.append((time.monotonic(), content["text"]))
        elif kind == "execute_result":
            results.append(content["data"]["text/plain"])
        elif kind == "error":
            error = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return reply["content"]["status"], streams, results, error


def _close_event_loop() -> None:
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop_policy().get_event_loop()
    loop.close()
    asyncio.set_event_loop(None)


def check_kernel():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=120)
    kernel = psutil.Process(manager.provisioner.process.pid)
    try:
        assert _execute(client, "%load_ext sandboxlib")[0] == "ok"
        status, _, results, _ = _execute(client, "%%sandbox\nimport os\nvalue = os.getpid()\nvalue < 100")
        started = time.monotonic()
        _, streams, _, _ = _execute(client, STREAM_CELL.replace("%%sandbox", "%%sandbox --timeout 30"))
        ended = time.monotonic()
        kept = _execute(client, "%sandbox value * 2")[2]
        inits = [p.pid for p in kernel.children(recursive=True) if p.name() == "sbx-init"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)  # a clean shutdown: the extension closes its sandbox
        manager.cleanup_resources()
        for context in {id(c): c for c in (client.context, manager.context)}.values():
            context.destroy(linger=0)  # its sockets and threads are fds here
        _close_event_loop()  # jupyter_client ran its coroutines on a loop it left open
    gone = psutil.wait_procs([psutil.Process(pid) for pid in inits if psutil.pid_exists(pid)], timeout=20)[1] == []
    text = "".join(t for _, t in streams)
    first_line_early = streams and ended - streams[0][0] >= 0.5 and streams[0][0] >= started
    return status, results, text, bool(first_line_early), kept, len(inits), gone


def test_jupyter_kernel(runner):
    status, results, text, streamed, kept, inits, gone = runner(check_kernel)
    assert status == "ok" and results == ["True"] and kept and int(kept[0]) < 200
    assert text == "line 0\nline 1\nline 2\n" and streamed
    assert inits == 1 and gone
