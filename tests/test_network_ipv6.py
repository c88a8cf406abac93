"""IPv6 on named networks as root (issue 19): an address from the IPAM (at
the IPv4 lease's offset), the default route, NAT66 to the outside, AAAA
answers for container names, ports published on ::1, isolation between
networks, allow-lists with IPv6 networks and names with AAAA records; bad
subnets refused before anything is made; nothing left after removal.  In
the namespaces of tests/netlab.py (the "world" has IPv6 addresses too)."""

import pytest

from .netlab import HOST6, WORLD6, WORLD6_SECOND, WORLD_ADDRESS, Lab

PY = "/usr/bin/python3"
SERVE = (
    "import socket\n"
    "tcp = socket.create_server(('::', 80), family=socket.AF_INET6, dualstack_ipv6=True)\n"
    "udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); udp.bind(('::', 53))\n"
    "print('up', flush=True)\n"
    "for _ in range(2):\n"
    "    c, peer = tcp.accept(); c.sendall(('pong ' + peer[0]).encode()); c.close()\n"
    "data, peer = udp.recvfrom(100); udp.sendto(data.upper(), peer)\n"
)
CONNECT6 = (
    "import socket, sys\n"
    "try:\n"
    "    where = socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET6, socket.SOCK_STREAM)[0][4]\n"
    "    s = socket.create_connection(where[:2], timeout=3); print(s.recv(100).decode())\n"
    "except OSError as e: print(type(e).__name__)\n"
)
FETCH = (
    "import sys, time, urllib.request\n"
    "start = time.monotonic()\n"
    "try: print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
    "except OSError as e: print(type(getattr(e, 'reason', e)).__name__, round(time.monotonic() - start, 2))\n"
)


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


def ip6_tables(lab) -> list:
    return [line for line in lab.in_host("nft", "list", "tables").splitlines() if line.startswith("table ip6 ")]


def test_ipv6_network(lab):
    out = lab.run(
        f"""
        import socket
        net = sb.Network.create("six", subnet="10.96.0.0/24", subnet6="fd00:96::/64")
        other = sb.Network.create("other6", ipv6=True)
        ports = {{"[::1]:0": 80, "[::1]:0/udp": 53}}
        with sb.Container(network=net, name="db", ports=ports) as db, sb.Container(network=net) as app, \\
                sb.Container(network=other) as stranger:
            srv = db.spawn(["{PY}", "-c", {SERVE!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            show = ["ip", "-o", "-6", "addr", "show", "eth0", "scope", "global"]
            db_address = text(db.run(show, stdout=sb.PIPE)).split()[3]
            found = {{
                "listed": [(n.name, n.subnet6) for n in sb.Network.list()],
                "address": db_address,
                "address4": eth0(db),
                "route": text(app.run(["ip", "-6", "route", "show", "default"], stdout=sb.PIPE)),
                "fetched": text(app.run(["{PY}", "-c", {FETCH!r}, "http://[{WORLD6}]/"], stdout=sb.PIPE)),
                "by_aaaa": text(app.run(["{PY}", "-c", {FETCH!r}, "http://six.internal/"], stdout=sb.PIPE)),
                "resolved": text(app.run(["getent", "ahostsv6", "db"], stdout=sb.PIPE)).split()[:1],
                "by_name": text(app.run(["{PY}", "-c", {CONNECT6!r}, "db"], stdout=sb.PIPE)),
                "cross": text(stranger.run(["{PY}", "-c", {CONNECT6!r}, db_address.split("/")[0]], stdout=sb.PIPE)),
                "ports": db.ports,
            }}
            with socket.create_connection(db.ports["80/tcp"], timeout=5) as s:
                found["published"] = s.recv(100).decode()
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.sendto(b"ping", db.ports["53/udp"])
            found["udp"] = u.recv(100).decode()
            srv.wait()
        net.remove(); other.remove()
        import os
        kept = os.listdir(os.environ["SANDBOXLIB_RUN"] + "/net/files")
        found["files_left"] = [n for n in kept if net.bridge in n or other.bridge in n]
        print(json.dumps(found))
        """
    )
    assert out["files_left"] == []  # the networks' kept files directories went with them
    assert out["listed"][1] == ["six", "fd00:96::/64"]
    assert (
        out["listed"][0][0] == "other6"
        and out["listed"][0][1].startswith("fd")
        and out["listed"][0][1].endswith("::/64")
    )
    offset = out["address4"].split("/")[0].split(".")[-1]
    assert out["address"] == f"fd00:96::{int(offset):x}/64"  # at the IPv4 lease's offset
    assert out["route"].startswith("default via fd00:96::1 dev eth0")
    assert out["fetched"] == f"hello from {HOST6}"  # NAT66: masqueraded behind the host's address
    assert out["by_aaaa"] == f"hello from {HOST6}"  # an AAAA-only name, forwarded by the resolver
    assert out["resolved"] == [out["address"].split("/")[0]]  # AAAA for a container's name
    assert out["by_name"].startswith("pong fd00:96::")  # over IPv6, from the app's own address
    assert out["cross"] in ("PermissionError", "ConnectionRefusedError", "OSError", "TimeoutError"), out["cross"]
    assert out["ports"]["80/tcp"][0] == "::1" and out["ports"]["53/udp"][0] == "::1"
    assert out["published"].startswith("pong ") and out["udp"] == "PING"
    assert ip6_tables(lab) == []  # both networks' ip6 tables went with them


def test_ipv6_egress_allow_list(lab):
    out = lab.run(
        f"""
        net = sb.Network.create("sixe", subnet6="fd00:97::/64")
        def probe(rules, *urls):
            allow = sb.Network.bridge(egress=rules, network=net)
            with sb.Container(network=allow) as c:
                return [text(c.run(["{PY}", "-c", {FETCH!r}, url], stdout=sb.PIPE)) for url in urls]
        found = {{
            "by_net": probe(["[{WORLD6}]:80"], "http://[{WORLD6}]/", "http://[{WORLD6_SECOND}]/", "http://{WORLD_ADDRESS}/"),
            "by_name": probe(["six.internal:80"], "http://six.internal/", "http://six-second.internal/",
                             "http://[{WORLD6_SECOND}]/"),
        }}
        net.remove()
        print(json.dumps(found))
        """
    )
    listed, other6, other4 = out["by_net"]
    assert listed == f"hello from {HOST6}"
    for refused in (other6, other4):  # at once: a TCP reset
        assert refused.split()[0] == "ConnectionRefusedError" and float(refused.split()[1]) < 1, refused
    allowed, unlisted_name, unlisted_address = out["by_name"]
    assert allowed == f"hello from {HOST6}"  # its AAAA answer was allowed for its TTL
    assert unlisted_name.split()[0] == "gaierror"
    assert unlisted_address.split()[0] == "ConnectionRefusedError"
    assert ip6_tables(lab) == []


@pytest.mark.parametrize(
    "options, field",
    [
        ({"subnet6": "10.1.0.0/24"}, "subnet6"),
        ({"subnet6": "fd00:98::1/64"}, "subnet6"),  # host bits set
        ({"subnet": "10.98.0.0/24", "subnet6": "fd00:98::/124"}, "subnet6"),  # smaller than the IPv4 subnet
        ({"subnet6": "2001:db8:5100::/80"}, "subnet6"),  # overlaps the host's route
    ],
)
def test_bad_ipv6_subnets_are_config_errors_before_anything(lab, options, field):
    out = lab.run(
        f"""
        try:
            sb.Network.create("bad6", **{options!r})
            found = ["no error"]
        except sb.ConfigError as err:
            found = [err.field, str(err)]
        found.append([n.name for n in sb.Network.list()])
        print(json.dumps(found))
        """
    )
    assert out[0] == field, out
    assert out[2] == []
    assert ip6_tables(lab) == [] and not [n for n in lab.links() if n.startswith("sbx")]


def test_ipv6_subnets_of_two_networks_do_not_overlap(lab):
    out = lab.run(
        """
        first = sb.Network.create("six-a", subnet6="fd00:99::/64")
        try:
            sb.Network.create("six-b", subnet6="fd00:99::/48")
            found = "no error"
        except sb.ConfigError as err:
            found = [err.field, str(err)]
        first.remove()
        print(json.dumps(found))
        """
    )
    assert out[0] == "subnet6" and "overlaps" in out[1]


def test_cli_ipv6_network_and_egress(lab):
    out = lab.run(
        f"""
        import subprocess
        def cli(*args):
            done = subprocess.run([sys.executable, "-m", "sandboxlib", *args], capture_output=True, text=True)
            return [done.returncode, done.stdout, done.stderr]
        fetch = ["{PY}", "-c", {FETCH!r}]
        found = {{
            "create": cli("network", "create", "web6", "--ipv6", "--subnet", "10.92.0.0/24",
                          "--subnet", "fd00:92::/64"),
            "ls": cli("network", "ls"),
            "aaaa": cli("run", "--network", "web6", "--name", "x", "--", "getent", "ahostsv6", "x"),
            "allowed": cli("run", "--network", "web6", "--egress", "[{WORLD6}]:80", "--", *fetch, "http://[{WORLD6}]/"),
            "refused": cli("run", "--network", "web6", "--egress", "[{WORLD6}]:80", "--", *fetch, "http://{WORLD_ADDRESS}/"),
            "rm": cli("network", "rm", "web6"),
        }}
        print(json.dumps(found))
        """
    )
    assert out["create"][0] == 0, out["create"][2]
    assert "fd00:92::/64" in out["ls"][1] and "10.92.0.0/24" in out["ls"][1]
    assert out["aaaa"][0] == 0 and out["aaaa"][1].startswith("fd00:92::2 "), out["aaaa"]
    assert out["allowed"][1].strip() == f"hello from {HOST6}", out["allowed"]
    assert out["refused"][1].startswith("ConnectionRefusedError"), out["refused"]
    assert out["rm"][0] == 0
    assert ip6_tables(lab) == []
