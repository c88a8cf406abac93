"""Rootless named networks and egress allow-lists (issue 19): the per-user
network namespace with its bridges, pasta to the outside; names resolve
inside a network, nothing crosses between two, NAT reaches the outside
world, an allow-list lets a listed name and network through and refuses the
rest at once; nothing left after the last network's removal nor after the
owner's SIGKILL.  In the namespaces of
tests/netlab.py, as the unprivileged user of tests/rootless.py
(whose /dev/net/tun is the lab's own node of mode 0666, the distributions')."""

import json
import os
import signal
import subprocess
import time

import pytest

from .netlab import HOST6, HOST_ADDRESS, WORLD6, WORLD6_SECOND, WORLD_ADDRESS, WORLD_SECOND, Lab
from .rootless import USERS, ensure_user
from .test_network_egress import PROBE

PY = "/usr/bin/python3"
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], 80), timeout=3).close(); print('connected')\n"
    "except OSError as e: print(type(e).__name__)\n"
)
SERVE_ONCE = (
    "import socket; s = socket.create_server(('', 80)); print('up', flush=True)\nc, _ = s.accept(); c.sendall(b'pong')"
)
SERVE_UDP = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 53)); print('up', flush=True)\n"
    "data, peer = s.recvfrom(100); s.sendto(data.upper(), peer)"
)
SERVE6 = (  # answers two connections with the peer's address
    "import socket; s = socket.create_server(('::', 80), family=socket.AF_INET6, dualstack_ipv6=True)\n"
    "print('up', flush=True)\nfor _ in range(2):\n    c, p = s.accept(); c.sendall(p[0].encode()); c.close()"
)
CONNECT6 = (
    "import socket, sys; a = socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET6)[0][4][:2]\n"
    "print(socket.create_connection(a, timeout=5).recv(100).decode())"
)
FETCH = "import urllib.request as u; print(u.urlopen('http://example.internal/', timeout=5).read().decode())"


@pytest.fixture(scope="module")
def user():
    return ensure_user("sbxtest", USERS["sbxtest"])


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    try:
        yield made
    finally:
        for row in processes(made, ensure_user("sbxtest", USERS["sbxtest"])):  # a failed test's (asserted otherwise)
            os.kill(int(row.split()[0]), signal.SIGKILL)
        made.close()


def processes(lab, user) -> list:
    """The test user's holder and pasta processes of this lab (their command lines name its state)."""
    out = subprocess.run(["pgrep", "-a", "-u", str(user.pw_uid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if ("usernetd" in line or "pasta" in line) and lab.tmp in line]


def listening(lab, port) -> bool:
    """Whether a TCP socket listens on ``port`` in the host namespace."""
    return f":{port} " in lab.in_host("ss", "-Hltn")


def no_processes(lab, user, seconds=5.0) -> bool:
    deadline = time.monotonic() + seconds
    while processes(lab, user) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not processes(lab, user)


def test_rootless_named_networks(lab, user):
    host_links = lab.links()
    out = lab.run(
        f"""
        a = sb.Network.create("alpha", subnet="10.89.0.0/24")
        b = sb.Network.create("beta")
        listed = [(n.name, n.subnet) for n in sb.Network.list()]
        serve = "import socket; s = socket.create_server(('', 80)); print('up', flush=True); s.accept()"
        with sb.Container(network=a, name="db") as db, sb.Container(network="alpha") as app, \\
                sb.Container(network=b, name="stranger") as other:
            srv = db.spawn(["{PY}", "-c", {SERVE6!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            address = eth0(db).split("/")[0]
            fetched = app.run(["{PY}", "-c", {FETCH!r}], stdout=sb.PIPE, stderr=sb.PIPE)
            found = {{
                "listed": listed,
                "address": address,
                "resolved": text(app.run(["getent", "hosts", "db"], stdout=sb.PIPE)).split(),
                "connect": text(app.run(["{PY}", "-c", {CONNECT!r}, "db"], stdout=sb.PIPE)),
                "fetched": text(fetched) + fetched.stderr.decode(),
                "cross_name": app.run(["getent", "hosts", "stranger"], stdout=sb.PIPE).exit_code,
                "cross_address": text(other.run(["{PY}", "-c", {CONNECT!r}, address], stdout=sb.PIPE)),
                "other_net": eth0(other),
            }}
            try:
                a.remove()
            except sb.ContainerStateError as err:
                found["in_use"] = str(err)
            srv.kill(); srv.wait()
        a.remove(); b.remove()
        found["after"] = [n.name for n in sb.Network.list()]
        print(json.dumps(found))
        """,
        user=user,
    )
    assert out["listed"][0] == ["alpha", "10.89.0.0/24"] and out["listed"][1][0] == "beta"
    assert out["address"].startswith("10.89.0.")
    assert out["resolved"][0] == out["address"]
    assert out["connect"] == "connected"
    assert out["fetched"] == f"hello from {HOST_ADDRESS}"  # NAT through pasta, from the host's address
    assert out["cross_name"] != 0
    assert out["cross_address"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert not out["other_net"].startswith("10.89.0.")
    assert "db" in out["in_use"]
    assert out["after"] == []
    assert no_processes(lab, user)  # the last network took the holder and pasta with it
    assert lab.links() == host_links  # nothing was made in the host's namespace


def test_rootless_named_network_after_the_owners_sigkill(lab, user):
    owner = lab.library_as(
        user,
        """
        net = sb.Network.create("gamma")
        c = sb.Container(network=net, name="first").start()
        print("started", flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    assert owner.stdout.readline() == "started\n", owner.stderr.read()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    for stream in (owner.stdin, owner.stdout, owner.stderr):
        stream.close()
    out = lab.run(
        """
        net = sb.Network.get("gamma")
        with sb.Container(network=net, name="first") as c:  # the dead owner's lease and name are free
            resolved = text(c.run(["getent", "hosts", "first"], stdout=sb.PIPE)).split()
        net.remove()
        print(json.dumps(resolved))
        """,
        user=user,
    )
    assert out and out[0].startswith(tuple("0123456789"))
    assert no_processes(lab, user)


def test_rootless_holder_killed_is_swept(lab, user):
    out = lab.run('sb.Network.create("delta"); print(json.dumps("ok"))', user=user)
    assert out == "ok" and len(processes(lab, user)) == 2
    holder = next(line.split()[0] for line in processes(lab, user) if "usernetd" in line)
    os.kill(int(holder), signal.SIGKILL)
    out = lab.run(
        """
        net = sb.Network.get("delta")
        r = sb.run(["getent", "hosts", "x"], network=net, name="x", stdout=sb.PIPE)
        net.remove()
        print(json.dumps(r.exit_code))
        """,
        user=user,
    )
    assert out == 0
    assert no_processes(lab, user)  # the dead holder's pasta was killed by the next start


def test_rootless_egress_allow_list(lab, user):
    out = lab.run(
        f"""
        by_name = sb.Network.bridge(egress=["web.internal:80/tcp"])
        r = sb.run(["{PY}", "-c", {PROBE!r}, "{WORLD_SECOND}", "{WORLD_ADDRESS}"], network=by_name, stdout=sb.PIPE)
        by_net = sb.Network.bridge(egress=["{WORLD_SECOND}/32:80"])
        fetch = "import urllib.request as u; print(u.urlopen('http://{WORLD_SECOND}/', timeout=5).read().decode())"
        r2 = sb.run(["{PY}", "-c", fetch], network=by_net, stdout=sb.PIPE)
        import socket
        with sb.Container(network=by_name, ports={{0: 80}}) as c:  # published, with an allow-list
            srv = c.spawn(["{PY}", "-c", {SERVE_ONCE!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            with socket.create_connection(c.ports["80/tcp"], timeout=5) as s:
                answer = s.recv(10).decode()
            srv.wait()
        print(json.dumps({{"probe": json.loads(text(r)), "cidr": text(r2), "ports": answer}}))
        """,
        user=user,
    )
    probe = out["probe"]
    assert probe["listed_name"][0] == f"hello from {HOST_ADDRESS}"
    assert probe["unlisted_address"][0] == "ConnectionRefusedError" and probe["unlisted_address"][1] < 1
    assert probe["unlisted_name"][0] == "gaierror" and probe["unlisted_name"][1] < 1
    assert probe["foreign_dns"] in ("ConnectionRefusedError", "OSError") or "Unreachable" in probe["foreign_dns"]
    assert out["cidr"] == f"hello from {HOST_ADDRESS}"
    assert out["ports"] == "pong"
    assert no_processes(lab, user)  # no network recorded, nothing attached: the holder and pasta ended (nft with them)


def test_rootless_subnets_do_not_overlap(lab, user):
    out = lab.run(
        """
        first = sb.Network.create("eps")  # before the user's sbx0 exists
        with sb.Container(network=sb.Network.bridge(egress=["10.1.2.0/24"])) as c:
            default = eth0(c)
            second = sb.Network.create("zeta")  # while it exists
        found = {"eps": first.subnet, "sbx0": default, "zeta": second.subnet}
        first.remove(); second.remove()
        print(json.dumps(found))
        """,
        user=user,
    )
    import ipaddress

    networks = [ipaddress.ip_network(out["eps"]), ipaddress.ip_interface(out["sbx0"]).network]
    networks.append(ipaddress.ip_network(out["zeta"]))
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :]), out
    assert no_processes(lab, user)


def _in_user_namespace(holder_pid: str, *argv: str) -> str:
    return subprocess.run(
        ["nsenter", "-t", holder_pid, "-n", *argv],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_rootless_nothing_left_after_errors_and_the_owners_sigkill(lab, user):
    owner = lab.library_as(
        user,
        """
        import socket
        net = sb.Network.create("omega")
        errors = []
        taken = socket.create_server(("127.0.0.1", 0))
        for bad in (lambda: sb.run(["true"], network=net, ports={taken.getsockname()[1]: 80}),
                    lambda: sb.run(["/no/such/program"], network=sb.Network.bridge(egress=["10.1.2.0/24"]))):
            try:
                bad()
            except sb.SandboxError as err:
                errors.append(type(err).__name__)
        a = sb.Container(network=sb.Network.bridge(egress=["10.1.2.0/24"])).start()
        b = sb.Container(network=net, ports={0: 80}).start()
        print(json.dumps([errors, b.ports["80/tcp"]]), flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    try:
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        errors, published = json.loads(line)
        assert errors == ["ConfigError", "CommandNotFoundError"], errors
        holder = next(row.split()[0] for row in processes(lab, user) if "usernetd" in row)
        made = _in_user_namespace(holder, "nft", "list", "ruleset") + _in_user_namespace(holder, "ip", "-o", "link")
        assert "egress_" in made and made.count("vsbx") == 2
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        for stream in (owner.stdin, owner.stdout, owner.stderr):
            stream.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the holder saw the connections end
        left = _in_user_namespace(holder, "nft", "list", "ruleset") + _in_user_namespace(holder, "ip", "-o", "link")
        if "egress_" not in left and "vsbx" not in left:
            break
        time.sleep(0.05)
    assert "egress_" not in left and "vsbx" not in left, left
    assert not listening(lab, published[1])  # the holder's proxy closed the published port
    assert "sandboxlib-sbx" in left  # the network stays, as it should
    assert lab.run('sb.Network.get("omega").remove(); print(json.dumps("ok"))', user=user) == "ok"
    assert no_processes(lab, user)


def test_rootless_named_network_checks_tun(lab, user):
    os.chmod(lab.tun, 0o600)
    try:
        out = lab.run(
            """
            try:
                sb.Network.create("theta")
                found = "no error"
            except sb.UnsupportedError as err:
                found = str(err)
            print(json.dumps([found, [n.name for n in sb.Network.list()]]))
            """,
            user=user,
        )
    finally:
        os.chmod(lab.tun, 0o666)
    assert "chmod 0666 /dev/net/tun" in out[0] and out[1] == []  # the record went with the failure
    assert no_processes(lab, user)


def test_rootless_named_network_published_ports(lab, user):
    out = lab.run(
        f"""
        import socket
        net = sb.Network.create("ports")
        taken = socket.create_server(("127.0.0.1", 0))
        try:
            sb.Container(network=net, ports={{taken.getsockname()[1]: 80}}).start()
            in_use = "no error"
        except sb.ConfigError as err:
            in_use = [err.field, str(err), [n.name for n in sb.Network.list()]]
        ports = {{0: 80, "0/udp": 53}}
        with sb.Container(network=net, ports=ports) as c:
            tcp = c.spawn(["{PY}", "-c", {SERVE_ONCE!r}], stdout=sb.PIPE)
            udp = c.spawn(["{PY}", "-c", {SERVE_UDP!r}], stdout=sb.PIPE)
            tcp.stdout.readline(); udp.stdout.readline()
            with socket.create_connection(c.ports["80/tcp"], timeout=5) as s:
                answer = s.recv(10).decode()
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.sendto(b"ping", c.ports["53/udp"])
            udp_answer = u.recv(10).decode()
            tcp.wait(); udp.wait()
            found = {{"ports": c.ports, "tcp": answer, "udp": udp_answer, "in_use": in_use}}
        net.remove()
        print(json.dumps(found))
        """,
        user=user,
    )
    assert out["in_use"][0] == "ports" and "in use" in out["in_use"][1] and out["in_use"][2] == ["ports"]
    assert out["tcp"] == "pong" and out["udp"] == "PING"
    assert out["ports"]["80/tcp"][0] == "127.0.0.1" and out["ports"]["53/udp"][0] == "127.0.0.1"
    assert out["ports"]["80/tcp"][1] != 0
    assert no_processes(lab, user)


def test_rootless_published_port_on_a_given_address(lab, user):
    owner = lab.library_as(
        user,
        f"""
        net = sb.Network.create("given")
        c = sb.Container(network=net, ports={{"{HOST_ADDRESS}:0": 80}}).start()
        c.spawn(["{PY}", "-c", {SERVE_ONCE!r}], stdout=sb.PIPE).stdout.readline()
        print(json.dumps(c.ports["80/tcp"]), flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    try:
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        address, port = json.loads(line)
        assert address == HOST_ADDRESS
        # from the world namespace, through the host's interface
        fetch = (
            f"import socket; print(socket.create_connection(('{HOST_ADDRESS}', {port}), timeout=5).recv(10).decode())"
        )
        assert lab.in_world(PY, "-c", fetch).strip() == "pong"
        assert listening(lab, port)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        for stream in (owner.stdin, owner.stdout, owner.stderr):
            stream.close()
    deadline = time.monotonic() + 5
    while listening(lab, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not listening(lab, port)  # the owner's death ended the link: the holder closed the port
    assert lab.run('sb.Network.get("given").remove(); print(json.dumps("ok"))', user=user) == "ok"
    assert no_processes(lab, user)


def test_rootless_ipv6_named_network(lab, user):
    out = lab.run(
        f"""
        import socket
        net = sb.Network.create("six", subnet6="fd00:96::/64")
        fetch = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"
        allow = sb.Network.bridge(egress=["[{WORLD6}]:80"], network=net)
        with sb.Container(network=net, name="db", ports={{"[::1]:0": 80}}) as db, sb.Container(network=allow) as app:
            srv = db.spawn(["{PY}", "-c", {SERVE6!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            show = ["ip", "-o", "-6", "addr", "show", "eth0", "scope", "global"]
            found = {{
                "address": text(db.run(show, stdout=sb.PIPE)).split()[3],
                "fetched": text(app.run(["{PY}", "-c", fetch, "http://[{WORLD6}]/"], stdout=sb.PIPE)),
                "refused": app.run(["{PY}", "-c", fetch, "http://[{WORLD6_SECOND}]/"], stderr=sb.PIPE).stderr.decode(),
                "by_name": text(app.run(["{PY}", "-c", {CONNECT6!r}, "db"], stdout=sb.PIPE)),
                "ports": db.ports,
            }}
            with socket.create_connection(db.ports["80/tcp"], timeout=5) as s:
                found["published"] = s.recv(100).decode()
            srv.wait()
        net.remove()
        print(json.dumps(found))
        """,
        user=user,
    )
    assert out["address"].startswith("fd00:96::") and out["address"].endswith("/64")
    assert out["fetched"] == f"hello from {HOST6}"  # the world sees pasta's connection, from the host's address
    assert "Connection refused" in out["refused"]  # the allow-list's IPv6 side
    assert out["by_name"].startswith("fd00:96::")  # AAAA for the name, reached over IPv6 (from app's address)
    assert out["ports"]["80/tcp"][0] == "::1" and out["published"]  # the holder's proxy, over its IPv4 address
    assert no_processes(lab, user)


def test_rootless_holder_of_a_removed_state_root_ends(lab, user):
    """A state root removed while a network is recorded (a test session's end):
    nobody can reach or sweep the holder, so it ends by itself, pasta first."""
    assert lab.run('sb.Network.create("orphan"); print(json.dumps("ok"))', user=user) == "ok"
    assert len(processes(lab, user)) == 2
    subprocess.run(["rm", "-rf", os.path.join(lab.tmp, f"run-{user.pw_name}", "net")], check=True)
    assert no_processes(lab, user, seconds=10)


def test_rootless_links(lab, user):
    from .test_network_named import LINKS, check_links

    host_links = lab.links()
    check_links(lab.run(LINKS, user=user))
    assert no_processes(lab, user)
    assert lab.links() == host_links
