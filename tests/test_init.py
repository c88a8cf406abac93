"""The container's init (csrc/init.c) as seen from inside: what it leaves a
command of the host's (the session keyring), and how locked down PID 1
itself is once the container is set up.  Root and rootless."""

from __future__ import annotations

import ctypes
import errno
import json
import secrets
import sys
import threading

import pytest

import sandboxlib as sb
from sandboxlib.security.capabilities import DEFAULT_CAPABILITIES, capability_mask

# x86_64 syscall numbers and <linux/keyctl.h>.
SYS_ADD_KEY, SYS_KEYCTL = 248, 250
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_READ = 1, 11
KEY_SPEC_SESSION_KEYRING = -3

# In the container: read key argv[1] by its id; prints the secret or the errno.
READ_KEY = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(256)
n = libc.syscall(ctypes.c_long(250), ctypes.c_long(11), ctypes.c_long(int(sys.argv[1])), buf, ctypes.c_long(256))
print(buf.raw[:n].decode() if n >= 0 else "errno %d" % ctypes.get_errno())
"""


def _syscall(*args) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    n = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if n < 0:
        raise OSError(ctypes.get_errno(), "keyctl")
    return n


def _in_fresh_session_keyring(func):
    """func(secret, key_id) in a thread that joined a fresh session keyring
    holding a key with that secret.  Credentials are per thread: the host's
    own keyrings, and the other threads of this process, are never touched."""
    outcome = {}

    def body():
        try:
            _syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
            secret = secrets.token_hex(8)
            key = _syscall(
                SYS_ADD_KEY, b"user", b"sbx-test-secret", secret.encode(), len(secret), KEY_SPEC_SESSION_KEYRING
            )
            outcome["value"] = func(secret, key)
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def check_host_keyring(seccomp):
    def attempt(secret, key):
        r = sb.run([sys.executable, "-c", READ_KEY, str(key)], seccomp=seccomp, stdin=sb.DEVNULL)
        return secret, r.exit_code, r.stdout.decode().strip(), r.stderr.decode()

    return _in_fresh_session_keyring(attempt)


def check_reader_reads_own_key():
    """The reader is sound: run on the host, in the keyring's thread, it prints the secret."""
    import subprocess

    def attempt(secret, key):
        return secret, subprocess.run(
            [sys.executable, "-c", READ_KEY, str(key)], capture_output=True, text=True
        ).stdout.strip()

    return _in_fresh_session_keyring(attempt)


# A custom policy: Docker's default, which refuses keyctl, with keyctl allowed.
WITH_KEYCTL = sb.Seccomp.default().allow("keyctl", "add_key", "request_key")


@pytest.mark.parametrize("seccomp", [None, "custom"])
def test_host_session_keyring_unreadable(runner, seccomp):
    secret, code, printed, err = runner(check_host_keyring, WITH_KEYCTL if seccomp else None)
    assert code == 0, err
    assert secret not in printed and printed.startswith("errno "), printed


def test_key_reader_works_outside(runner):
    secret, printed = runner(check_reader_reads_own_key)
    assert printed == secret


# -- the init's lock-down ---------------------------------------------------------
def _caps(*names: str) -> int:
    return capability_mask(names)


# The init's effective set: kill() (KILL), the bounding-set drop (SETPCAP);
# never SYS_ADMIN (a command's child announces its own pid to the host).
# Its permitted set: those, SETUID and SETGID, and the container's
# capabilities (SYS_ADMIN only when the container has it).
INIT_EFFECTIVE = _caps("KILL", "SETPCAP")
INIT_RUNTIME = _caps("KILL", "SETPCAP", "SETUID", "SETGID")


def _status(text: str) -> dict:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def check_init_status(options):
    with sb.Container(**options) as c:
        r = c.run(["cat", "/proc/1/status"], stdin=sb.DEVNULL)
        assert r.exit_code == 0, r
        status = _status(r.stdout.decode())
        works = c.run(["sh", "-c", "id -u"], user="1000", stdin=sb.DEVNULL)  # SETUID/SETGID still there
        assert works.exit_code == 0 and works.stdout == b"1000\n", works
    return status


@pytest.mark.parametrize(
    "options, commands",
    [
        ({}, DEFAULT_CAPABILITIES),
        ({"cap_drop": ["ALL"]}, ()),
        ({"cap_add": ["NET_ADMIN"], "seccomp": None}, DEFAULT_CAPABILITIES | {"NET_ADMIN"}),
        ({"cap_add": ["SYS_ADMIN"]}, DEFAULT_CAPABILITIES | {"SYS_ADMIN"}),
    ],
)
def test_init_locked_down(runner, options, commands):
    status = runner(check_init_status, options)
    assert int(status["CapEff"], 16) == INIT_EFFECTIVE, status["CapEff"]
    assert int(status["CapPrm"], 16) == INIT_RUNTIME | capability_mask(commands), status["CapPrm"]
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2" and status["Seccomp_filters"] == "1"


# As the container's root, with no filter of the container's: PID 1's
# environment, fds and memory are out of reach, and so is ptrace.
PEEK_AT_INIT = r"""
import ctypes, json, os
out = {}
for path in ("/proc/1/environ", "/proc/1/mem", "/proc/1/fd/3"):
    try:
        open(path, "rb").close()
        out[path] = "opened"
    except OSError as err:
        out[path] = err.errno
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(ctypes.c_long(16), ctypes.c_long(1), None, None)  # PTRACE_ATTACH
out["ptrace"] = ctypes.get_errno() if r < 0 else "attached"
print(json.dumps(out))
"""


def check_init_unreachable():
    r = sb.run([sys.executable, "-c", PEEK_AT_INIT], seccomp=None, stdin=sb.DEVNULL)
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def test_init_not_dumpable(runner):
    seen = runner(check_init_unreachable)
    assert seen == {
        "/proc/1/environ": errno.EACCES,
        "/proc/1/mem": errno.EACCES,
        "/proc/1/fd/3": errno.EACCES,
        "ptrace": errno.EPERM,
    }, seen


def check_cwd_searchable_only_by_user():
    """A cwd only its user may search (0700), in a container without
    DAC_OVERRIDE: the init may not enter it as root, the command may."""
    with sb.Container(mounts=[sb.Mount.tmpfs("/w")], cap_drop=["DAC_OVERRIDE", "DAC_READ_SEARCH"]) as c:
        made = c.run(["sh", "-c", "mkdir /w/home && chown 1000:1000 /w/home && chmod 700 /w/home"], stdin=sb.DEVNULL)
        assert made.exit_code == 0, made
        r = c.run(["pwd"], user="1000", cwd="/w/home", stdin=sb.DEVNULL)
    return r.exit_code, r.stdout, r.stderr


def test_cwd_of_the_user_without_dac_override(runner):
    assert runner(check_cwd_searchable_only_by_user) == (0, b"/w/home\n", b"")
