"""``sandboxlib run -it``: a real terminal (pexpect's pseudo-terminal)
around ``python -m sandboxlib run -it -- sh`` in the host view, as root and
as the unprivileged user sbxtest: the prompt appears, ``stty size``
follows a resize, ^C interrupts ``sleep 100`` and the shell lives on,
``exit 3`` is the status, and the caller's terminal mode is restored."""

from __future__ import annotations

import shlex
import sys
import time

import pexpect
import pytest

from . import rootless

PROMPT = "sbx-prompt\\$ "


def _spawn(mode: str, script: str) -> pexpect.spawn:
    argv = ["sh", "-c", script]
    if mode == "rootless":
        argv = rootless.launcher(rootless.ensure_user("sbxtest", True), argv)
    return pexpect.spawn(argv[0], argv[1:], dimensions=(30, 90), timeout=30, cwd="/")


@pytest.fixture
def terminals():
    """pexpect children, closed (killed if need be) after the test."""
    children = []
    yield children
    for child in children:
        child.close(force=True)


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_run_it_shell(mode, shared_dir, terminals):
    # The outer sh shows the terminal's mode before and after, and the status.
    cli = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "sandboxlib", "run", "-it", "--", "sh"])
    child = _spawn(mode, f"stty -g; {cli}; echo status=$?; stty -g")
    terminals.append(child)
    child.expect(r"([0-9a-f:]+)\r\n")
    before = child.match.group(1)
    child.sendline("PS1='sbx-prompt$ '")
    child.expect(PROMPT)
    child.sendline("stty size; tty")
    child.expect(r"30 90\r\n/dev/pts/0\r\n")
    child.expect(PROMPT)
    child.setwinsize(40, 120)
    child.sendline("stty size")
    child.expect(r"40 120\r\n")
    child.expect(PROMPT)
    child.sendline("sleep 100")
    child.expect(r"sleep 100\r\n")  # echoed: sleep runs
    time.sleep(0.5)
    child.sendintr()
    child.expect(PROMPT, timeout=10)  # SIGINT ended sleep, not the shell
    child.sendline("echo alive $?")
    child.expect(r"alive 130\r\n")
    child.sendline("exit 3")
    child.expect(r"status=3\r\n")
    child.expect(r"([0-9a-f:]+)\r\n")
    after = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert after == before  # raw mode undone
    assert child.exitstatus == 0


def test_run_t_needs_a_terminal():
    child = pexpect.spawn(
        "sh",
        ["-c", f"{shlex.quote(sys.executable)} -m sandboxlib run -it -- true < /dev/null; echo status=$?"],
        timeout=30,
        cwd="/",
    )
    child.expect(r"not a terminal")
    child.expect(r"status=125")
    child.expect(pexpect.EOF)


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_run_it_restores_on_sigterm(mode, shared_dir, terminals):
    """A SIGTERM to the CLI ends it (128 + 15) with the terminal's mode restored."""
    cli = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "sandboxlib", "run", "-it", "--", "sh"])
    child = _spawn(mode, f"stty -g; {cli} </dev/tty & pid=$!; sleep 3; kill $pid; wait $pid; echo status=$?; stty -g")
    terminals.append(child)
    child.expect(r"([0-9a-f:]+)\r\n")
    before = child.match.group(1)
    child.expect(r"status=143\r\n")
    child.expect(r"([0-9a-f:]+)\r\n")
    assert child.match.group(1) == before
    child.expect(pexpect.EOF)
