"""Egress allow-lists (issue 19, as root): a listed name and a listed
network are reachable, an unlisted address, an unlisted name and DNS to a
foreign resolver are refused at once; nothing is left in nft after close.
In the namespaces of tests/netlab.py (no traffic leaves the machine)."""

import pytest

from .netlab import HOST_ADDRESS, WORLD_ADDRESS, WORLD_SECOND, Lab

PY = "/usr/bin/python3"
PROBE = r"""
import json, socket, sys, time, urllib.request
def fetch(url):
    start = time.monotonic()
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode(), round(time.monotonic() - start, 2)
    except OSError as err:
        reason = getattr(err, "reason", err)
        return type(reason).__name__, round(time.monotonic() - start, 2)
def foreign_dns(server):
    s = socket.socket(type=socket.SOCK_DGRAM); s.settimeout(3)
    query = bytes.fromhex("abcd01000001000000000000") + b"\x03web\x08internal\x00\x00\x01\x00\x01"
    try:
        s.connect((server, 53)); s.send(query); s.recv(512); return "answered"
    except OSError as err:
        return type(err).__name__
print(json.dumps({
    "listed_name": fetch("http://web.internal/"),
    "unlisted_address": fetch("http://%s/" % sys.argv[1]),
    "unlisted_name": fetch("http://second.internal/"),
    "foreign_dns": foreign_dns(sys.argv[2]),
}))
"""


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


def test_egress_allow_list(lab):
    out = lab.run(
        f"""
        import sandboxlib.network as net
        by_name = sb.Network.bridge(egress=["web.internal:80/tcp"])
        r = sb.run(["{PY}", "-c", {PROBE!r}, "{WORLD_SECOND}", "{WORLD_ADDRESS}"], network=by_name, stdout=sb.PIPE)
        by_net = sb.Network.bridge(egress=["{WORLD_SECOND}/32:80"])
        fetch = "import urllib.request as u; print(u.urlopen('http://{WORLD_SECOND}/', timeout=5).read().decode())"
        r2 = sb.run(["{PY}", "-c", fetch], network=by_net, stdout=sb.PIPE)
        import subprocess
        left = subprocess.run(["nft", "list", "table", "ip", "sandboxlib-sbx0"], capture_output=True, text=True).stdout
        print(json.dumps({{"probe": json.loads(text(r)), "cidr": text(r2), "left": left}}))
        """
    )
    probe = out["probe"]
    assert probe["listed_name"][0] == f"hello from {HOST_ADDRESS}"
    assert probe["unlisted_address"][0] == "ConnectionRefusedError" and probe["unlisted_address"][1] < 1
    assert probe["unlisted_name"][0] == "gaierror" and probe["unlisted_name"][1] < 1
    assert probe["foreign_dns"] in ("ConnectionRefusedError", "OSError") or "Unreachable" in probe["foreign_dns"]
    assert out["cidr"] == f"hello from {HOST_ADDRESS}"
    assert "dyn_" not in out["left"] and "egress_" not in out["left"]  # the containers' objects went with them


def test_egress_rules_are_checked():
    import sandboxlib as sb

    for bad in (["not a name!"], ["10.0.0.0/8:99999"], "pypi.org", ["x.org:53/icmp"]):
        with pytest.raises(sb.ConfigError) as err:
            sb.Network.bridge(egress=bad)
        assert err.value.field.startswith("egress")


def test_a_dead_owners_egress_objects_are_removed_with_its_lease(lab):
    import signal
    import subprocess

    owner = lab.library(
        """
        c = sb.Container(network=sb.Network.bridge(egress=["web.internal"])).start()
        print(c.id[:12], flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    short = owner.stdout.readline().strip()
    assert short, owner.stderr.read()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    for stream in (owner.stdin, owner.stdout, owner.stderr):
        stream.close()
    out = lab.run(
        """
        import subprocess
        def table():
            listed = subprocess.run(["nft", "list", "table", "ip", "sandboxlib-sbx0"], capture_output=True, text=True)
            return listed.stdout
        before = table()
        with sb.Container(network="bridge") as c:  # the next start reaps the dead owner's lease
            address = eth0(c)
        print(json.dumps({"before": before, "after": table(), "address": address}))
        """
    )
    assert f"egress_{short}" in out["before"]
    assert out["address"] == "172.17.0.2/16"
    assert f"egress_{short}" not in out["after"] and f"dyn_{short}" not in out["after"]
