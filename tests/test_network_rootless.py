"""network="bridge" rootless, through pasta (issue 19): NAT egress and DNS,
a published port, the /dev/net/tun check, no pasta left after close or the
owner's SIGKILL.  In the namespaces of tests/netlab.py, as the unprivileged
user of tests/rootless.py (whose /dev/net/tun is the lab's own node of
mode 0666, the distributions' mode: this machine's is 0600)."""

import os
import signal
import subprocess
import time

import pytest

from .netlab import HOST_ADDRESS, Lab
from .rootless import USERS, ensure_user

PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def user():
    return ensure_user("sbxtest", USERS["sbxtest"])


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    try:
        yield made
    finally:
        made.close()


def pastas(user) -> list:
    """pasta processes of the test user."""
    out = subprocess.run(
        ["pgrep", "-u", str(user.pw_uid), "-f", "pasta --config-net"], capture_output=True, text=True
    ).stdout
    return out.split()


def gone(user, seconds=5.0) -> bool:
    deadline = time.monotonic() + seconds
    while pastas(user) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pastas(user)


@pytest.mark.parametrize("helper", ["pasta", "slirp4netns"])
def test_rootless_egress_dns_and_published_port(lab, user, helper):
    out = lab.run(
        f"""
        import socket
        fetch = ["{PY}", "-c", "import urllib.request as u; print(u.urlopen('http://example.internal/').read().decode())"]
        r = sb.run(fetch, network="bridge", stdout=sb.PIPE, stderr=sb.PIPE)
        serve = (
            "import socket; s = socket.create_server(('', 80)); print('up', flush=True)\\n"
            "c, _ = s.accept(); c.sendall(b'pong')"
        )
        with sb.Container(network="bridge", ports={{0: 80}}) as c:
            srv = c.spawn(["{PY}", "-c", serve], stdout=sb.PIPE)
            srv.stdout.readline()
            address, port = c.ports["80/tcp"]
            with socket.create_connection((address, port), timeout=5) as s:
                answer = s.recv(10).decode()
            srv.wait()
        print(json.dumps({{"code": r.exit_code, "out": text(r), "err": r.stderr.decode(), "answer": answer,
                           "where": address}}))
        """,
        user=user,
        env={"SANDBOXLIB_ROOTLESS_NETWORK": helper},
    )
    assert out["code"] == 0, out["err"]
    assert out["out"] == f"hello from {HOST_ADDRESS}"
    assert out["answer"] == "pong" and out["where"] == "127.0.0.1"
    assert gone(user)


def test_rootless_sigkill_of_the_owner_is_swept(lab, user):
    owner = lab.library_as(
        user,
        """
        c = sb.Container(network="bridge").start()
        print("started", flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    assert owner.stdout.readline() == "started\n", owner.stderr.read()
    assert len(pastas(user)) == 1
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    for stream in (owner.stdin, owner.stdout, owner.stderr):
        stream.close()
    out = lab.run('sb.run(["true"], network="bridge"); print(json.dumps("ok"))', user=user)
    assert out == "ok"
    assert gone(user)  # the next start's sweep killed the dead owner's pasta


def test_tun_mode_is_checked(lab, user):
    os.chmod(lab.tun, 0o600)
    try:
        out = lab.run(
            """
            try:
                sb.run(["true"], network="bridge")
                print(json.dumps("no error"))
            except sb.UnsupportedError as err:
                print(json.dumps(str(err)))
            """,
            user=user,
        )
    finally:
        os.chmod(lab.tun, 0o666)
    assert "chmod 0666 /dev/net/tun" in out


def test_slirp4netns_ends_with_its_owner(lab, user):
    def slirps():
        found = subprocess.run(["pgrep", "-u", str(user.pw_uid), "-x", "slirp4netns"], capture_output=True, text=True)
        return found.stdout.split()

    owner = lab.library_as(
        user,
        """
        c = sb.Container(network="bridge").start()
        print("started", flush=True)
        sys.stdin.read()
        """,
        env={"SANDBOXLIB_ROOTLESS_NETWORK": "slirp4netns"},
        stdin=subprocess.PIPE,
    )
    assert owner.stdout.readline() == "started\n", owner.stderr.read()
    assert len(slirps()) == 1
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    for stream in (owner.stdin, owner.stdout, owner.stderr):
        stream.close()
    deadline = time.monotonic() + 5
    while slirps() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slirps() == []  # its exit fd reached EOF with the owner's death
