"""The container's init (csrc/init.c) as seen from inside: what it leaves a
command of the host's (the session keyring), and how locked down PID 1
itself is once the container is set up.  Root and rootless."""
from __future__ import annotations

import ctypes
import secrets
import sys
import threading

import pytest

import sandboxlib as sb

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
            key = _syscall(SYS_ADD_KEY, b"user", b"sbx-test-secret", secret.encode(), len(secret),
                           KEY_SPEC_SESSION_KEYRING)
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
        return secret, subprocess.run([sys.executable, "-c", READ_KEY, str(key)], capture_output=True,
                                      text=True).stdout.strip()
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
