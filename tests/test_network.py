"""Bridge networks as root (issue 19): NAT egress, DNS, published ports,
names, isolation, cleanup.  Everything runs in the namespaces of
tests/netlab.py: no traffic leaves the machine, the machine's own network
is never changed."""

import json
import shutil
import signal
import subprocess
import time

import pytest

import sandboxlib as sb

from .conftest import BUSYBOX
from .netlab import HOST_ADDRESS, WORLD_ADDRESS, Lab

PY = "/usr/bin/python3"  # the host's, in the host view of a container


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


def veths(lab) -> list:
    return [name for name in lab.links() if name.startswith("vsbx")]


def settled(lab, seconds: float = 10.0) -> list:
    """The veths left once the kernel has torn the dead namespaces down (asynchronously)."""
    deadline = time.monotonic() + seconds
    while veths(lab) and time.monotonic() < deadline:
        time.sleep(0.05)
    return veths(lab)


def test_nat_egress_and_resolver_forwarding(lab):
    out = lab.run(
        f"""
        r = sb.run(["{PY}", "-c", "import urllib.request as u; print(u.urlopen('http://example.internal/').read().decode())"],
                   network="bridge", stdout=sb.PIPE, stderr=sb.PIPE)
        print(json.dumps({{"code": r.exit_code, "out": r.stdout.decode(), "err": r.stderr.decode()}}))
        """
    )
    assert out["code"] == 0, out["err"]
    assert out["out"].strip() == f"hello from {HOST_ADDRESS}"  # masqueraded behind the host's address
    assert settled(lab) == []


def test_generated_files_and_interfaces(lab):
    out = lab.run(
        """
        with sb.Container(network="bridge", name="web", hostname="box", extra_hosts={"db.local": "10.0.0.5"}) as c:
            r = c.run(["sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; ip -o -4 addr; ip route"],
                      stdout=sb.PIPE)
        print(json.dumps(r.stdout.decode().split("---\\n")))
        """
    )
    resolv, hosts, ip = out
    assert resolv.splitlines()[0] == "nameserver 172.17.0.1"
    assert any(line.split()[1:] == ["box", "web"] for line in hosts.splitlines() if line.startswith("172."))
    assert "10.0.0.5\tdb.local" in hosts.splitlines()
    assert "eth0" in ip and "default via 172.17.0.1" in ip


TCP_QUERY = r"""
import socket, struct, sys
def ask(name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = bytes.fromhex("beef01000001000000000000") + labels + b"\0\1\0\1"
    with socket.create_connection((sys.argv[1], 53), timeout=5) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", s.recv(2))[0]
        answer = b""
        while len(answer) < size:
            answer += s.recv(size - len(answer))
    return ".".join(str(b) for b in answer[-4:]), answer[3] & 15  # the last A record, the rcode
print(ask("db"), ask("web.internal"))
"""


def test_dns_over_tcp(lab):
    out = lab.run(
        f"""
        with sb.Container(network="bridge", name="db") as db, sb.Container(network="bridge") as app:
            r = app.run(["{PY}", "-c", {TCP_QUERY!r}, "172.17.0.1"], stdout=sb.PIPE, stderr=sb.PIPE)
            print(json.dumps({{"out": text(r), "err": r.stderr.decode(), "db": eth0(db).split("/")[0]}}))
        """
    )
    assert out["out"] == f"('{out['db']}', 0) ('{WORLD_ADDRESS}', 0)", out["err"]


def test_unknown_name_fails_fast(lab):
    out = lab.run(
        f"""
        r = sb.run(["{PY}", "-c", "import socket; socket.gethostbyname('nothing.example')"],
                   network="bridge", stdout=sb.PIPE, stderr=sb.PIPE)
        print(json.dumps({{"code": r.exit_code, "err": r.stderr.decode()}}))
        """
    )
    assert out["code"] != 0 and "gaierror" in out["err"]


ECHO = (
    "import socket, threading\n"
    "u = socket.socket(type=socket.SOCK_DGRAM); u.bind(('0.0.0.0', 53))\n"
    "def udp():\n"
    "    while True:\n"
    "        data, peer = u.recvfrom(100); u.sendto(b'udp:' + data, peer)\n"
    "def tcp(t):\n"
    "    while True:\n"
    "        c, _ = t.accept(); c.sendall(b'tcp:' + c.recv(100)); c.close()\n"
    "listeners = [socket.create_server(('0.0.0.0', port)) for port in (80, 81)]\n"
    "threading.Thread(target=udp, daemon=True).start()\n"
    "threading.Thread(target=tcp, args=(listeners[1],), daemon=True).start()\n"
    "print('listening', flush=True)\n"
    "tcp(listeners[0])\n"
)


def test_published_ports(lab):
    out = lab.run(
        f"""
        import socket
        def tcp(address, port):
            try:
                with socket.create_connection((address, port), timeout=5) as s:
                    s.sendall(b"hi"); return s.recv(100).decode()
            except OSError as err:
                return type(err).__name__
        def udp(address, port):
            with socket.socket(type=socket.SOCK_DGRAM) as s:
                s.settimeout(5); s.sendto(b"hi", (address, port)); return s.recv(100).decode()
        CLIENT = (
            "import socket, sys\\ns = socket.socket(); s.settimeout(3)\\ntry:\\n"
            " s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'c'); print(s.recv(9).decode())\\n"
            "except OSError as e: print(type(e).__name__)"
        )
        def client(box, port):
            return text(box.run(["{PY}", "-c", CLIENT, "172.17.0.1", str(port)], stdout=sb.PIPE))
        def other(port):
            return text(sb.run(["{PY}", "-c", CLIENT, "172.17.0.1", str(port)], network="bridge", stdout=sb.PIPE))
        with sb.Container(network="bridge", ports={{0: 80, "0/udp": 53, "0.0.0.0:0": 81}}) as c:
            server = c.spawn(["{PY}", "-c", {ECHO!r}], stdout=sb.PIPE)
            server.stdout.readline()
            local_tcp, local_udp = c.ports["80/tcp"], c.ports["53/udp"]
            wide = c.ports["81/tcp"]
            found = {{
                "keys": sorted(c.ports), "tcp": tcp(*local_tcp), "udp": udp(*local_udp),
                "loopback_host": local_tcp[0],
                # the container itself (hairpin) and another container, through the host's bridge address:
                "hairpin": client(c, wide[1]),
                "other": other(wide[1]),
                # a port published on 127.0.0.1 is the host's alone:
                "other_local": other(local_tcp[1]),
            }}
            server.kill(); server.wait()
        print(json.dumps(found))
        """
    )
    assert out["keys"] == ["53/udp", "80/tcp", "81/tcp"]
    assert out["loopback_host"] == "127.0.0.1"
    assert out["tcp"] == "tcp:hi" and out["udp"] == "udp:hi"
    assert out["hairpin"] == "tcp:c" and out["other"] == "tcp:c"
    assert out["other_local"] == "ConnectionRefusedError"


def test_port_in_use_is_a_config_error_before_anything(lab):
    out = lab.run(
        """
        import os, socket
        busy = socket.socket(); busy.bind(("127.0.0.1", 0)); busy.listen()
        port = busy.getsockname()[1]
        try:
            sb.Container(network="bridge", ports={port: 80}).start()
        except sb.ConfigError as err:
            print(json.dumps({"field": err.field, "text": str(err)}))
        """
    )
    assert out["field"] == "ports" and "in use" in out["text"]


def test_names_resolve_on_the_network(lab):
    out = lab.run(
        """
        with sb.Container(network="bridge", name="db") as db, sb.Container(network="bridge") as app:
            r = app.run(["getent", "hosts", "db"], stdout=sb.PIPE, stderr=sb.PIPE)
            own = eth0(db).split("/")[0]
        print(json.dumps({"resolved": text(r).split()[0], "err": r.stderr.decode(), "own": own}))
        """
    )
    assert out["resolved"] == out["own"], out["err"]


def test_leases_are_released_and_reused(lab):
    out = lab.run(
        """
        addresses = []
        for _ in range(3):
            with sb.Container(network="bridge") as c:
                addresses.append(eth0(c))
        print(json.dumps(addresses))
        """
    )
    assert len(set(out)) == 1


def test_sigkill_of_the_owner_leaves_nothing_that_lasts(lab):
    owner = lab.library(
        """
        c = sb.Container(network="bridge", name="victim", ports={0: 80}).start()
        print(json.dumps(c.ports), flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    line = owner.stdout.readline()
    assert line, owner.stderr.read()
    assert len(veths(lab)) == 1
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdin.close(), owner.stdout.close(), owner.stderr.close()
    assert settled(lab) == []  # the veth went with the container's namespace
    out = lab.run(
        """
        import os
        with sb.Container(network="bridge") as c:
            address = eth0(c)
            files = os.listdir(os.environ["SANDBOXLIB_RUN"] + "/net/files")
        print(json.dumps({"address": address, "files": files}))
        """
    )
    assert out["address"] == "172.17.0.2/16"  # the dead owner's lease was taken over
    # its files' directory went to the lease's next holder (others: kept for earlier tests' addresses)
    assert "lease-sbx0-172.17.0.2" in out["files"] and all(n.startswith("lease-") for n in out["files"])
    assert settled(lab) == []


def test_network_none_has_only_lo():
    r = sb.run(["ip", "-o", "link"], stdout=sb.PIPE)
    assert [line.split(":")[1].strip() for line in r.stdout.decode().splitlines()] == ["lo"]


def test_cli_network_bridge_and_publish(lab):
    out = lab.run(
        f"""
        import subprocess
        argv = [sys.executable, "-m", "sandboxlib", "run", "--network", "bridge", "-p", "0:80", "--name", "cli",
                "--", "{PY}", "-c", "import urllib.request as u; print(u.urlopen('http://a.internal/').read().decode())"]
        done = subprocess.run(argv, capture_output=True, text=True)
        bad = subprocess.run(argv[:6] + ["-p", "80"] + argv[8:], capture_output=True, text=True)
        egress = [sys.executable, "-m", "sandboxlib", "run", "--network", "bridge", "--egress", "web.internal:80",
                  "--", "{PY}", "-c", "import urllib.request as u; u.urlopen('http://second.internal/')"]
        refused = subprocess.run(egress, capture_output=True, text=True)
        found = {{"code": done.returncode, "out": done.stdout, "err": done.stderr}}
        print(json.dumps({{**found, "bad": [bad.returncode, bad.stderr], "refused": refused.stderr}}))
        """
    )
    assert out["code"] == 0, out["err"]
    assert out["out"].strip() == f"hello from {HOST_ADDRESS}"
    assert out["bad"][0] != 0 and "publish" in out["bad"][1]
    assert "Name or service not known" in out["refused"] or "gaierror" in out["refused"], out["refused"]


def test_failed_starts_leave_nothing(lab):
    out = lab.run(
        """
        import os
        errors = []
        for make in (
            lambda: sb.run(["/nonexistent"], network="bridge", ports={0: 80}),  # the command: after go
            lambda: sb.run(["true"], network="bridge", mounts=[sb.Mount.bind("/etc", "/etc/passwd/x")]),  # after go
            lambda: sb.run(["true"], network="nosuch"),  # before anything
        ):
            try:
                make()
            except sb.SandboxError as err:
                errors.append(type(err).__name__)
        root = os.environ["SANDBOXLIB_RUN"] + "/net"
        leases = [n for n in os.listdir(root + "/leases-sbx0") if not n.startswith(".")]
        import fcntl
        held = []
        for name in leases:  # a file may stay; none may be held
            fd = os.open(f"{root}/leases-sbx0/{name}", os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(name)
            os.close(fd)
        print(json.dumps({"errors": errors, "held": held, "files": os.listdir(root + "/files"), "leases": leases}))
        """
    )
    assert out["errors"] == ["CommandNotFoundError", "SetupError", "ConfigError"]
    assert out["held"] == []
    # only directories kept for the next holders of the leases (a pasta-style one would be a leak)
    assert all(n.startswith("lease-sbx0-") for n in out["files"]), out["files"]
    assert len(out["files"]) <= len(out["leases"])  # one per address ever leased at once, no more
    assert settled(lab) == []


@pytest.mark.parametrize(
    "options, field",
    [
        ({"network": "bridge", "extra_hosts": {"db": "not-an-ip"}}, "extra_hosts['db']"),
        ({"network": "bridge", "ports": {"1.2.3:80": 80}}, "ports['1.2.3:80']"),
        ({"network": "bridge", "ports": {70000: 80}}, "ports[70000]"),
        ({"network": "bridge", "ports": {8080: "80/sctp"}}, "ports[8080]"),
        ({"network": "host", "ports": {8080: 80}}, "ports"),
        ({"network": "bridge", "name": "no spaces"}, "name"),
        ({"network": "not/a name"}, "network"),  # (spaces are Docker's, a slash is no name)
    ],
)
def test_network_options_are_checked(options, field):
    with pytest.raises(sb.ConfigError) as err:
        sb.ContainerConfig(**options)
    assert err.value.field == field


def test_a_loopback_host_resolver_is_reached_through_the_network_resolver(lab):
    out = lab.run(
        """
        import subprocess, tempfile
        from dnslib import QTYPE, RR, A
        from dnslib.server import BaseResolver, DNSServer

        class Local(BaseResolver):  # as systemd-resolved on 127.0.0.53 of the host
            def resolve(self, request, handler):
                reply = request.reply()
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.53"), ttl=60))
                return reply

        server = DNSServer(Local(), address="127.0.0.53", port=53)
        server.start_thread()
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:  # (this process's own mount namespace)
            conf.write("nameserver 127.0.0.53\\n"); conf.flush()
            subprocess.run(["mount", "--bind", conf.name, "/etc/resolv.conf"], check=True)
            r = sb.run(["getent", "hosts", "anything.example"], network="bridge", stdout=sb.PIPE)
            resolv = sb.run(["cat", "/etc/resolv.conf"], network="bridge", stdout=sb.PIPE)
            subprocess.run(["umount", "/etc/resolv.conf"], check=True)
        server.stop()
        print(json.dumps({"answer": text(r), "resolv": text(resolv)}))
        """
    )
    assert out["answer"].split()[0] == "192.0.2.53"
    assert "127.0.0.53" not in out["resolv"]  # the container is given the network's resolver


def test_addresses_are_distinct_across_processes(lab):
    code = """
        boxes = [sb.Container(network="bridge").start() for _ in range(3)]
        print(json.dumps([eth0(c) for c in boxes]), flush=True)
        sys.stdin.read()
        for c in boxes:
            c.close()
        """
    owners = [lab.library(code, stdin=subprocess.PIPE) for _ in range(3)]
    addresses = []
    for owner in owners:
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        addresses += json.loads(line)
    for owner in owners:
        owner.communicate("")
        assert owner.returncode == 0
    assert len(addresses) == 9 and len(set(addresses)) == 9  # made concurrently, held together
    assert settled(lab) == []


def test_a_rootfs_directory_gets_its_network_files(lab):
    out = lab.run(
        """
        import os, shutil, tempfile
        from tests.conftest import make_busybox_rootfs
        work = tempfile.mkdtemp()
        root = make_busybox_rootfs(work + "/root")  # no /etc/resolv.conf, no /etc/hosts
        r = sb.run(["/bin/sh", "-c", "cat /etc/resolv.conf /etc/hosts"], network="bridge", rootfs=root,
                   name="busy", stdout=sb.PIPE)
        made = [os.path.getsize(f"{root}/etc/{name}") for name in ("resolv.conf", "hosts")]
        shutil.rmtree(work)
        print(json.dumps({"code": r.exit_code, "out": text(r), "made": made}))
        """
    )
    assert out["code"] == 0 and "nameserver 172.17.0.1" in out["out"] and "busy" in out["out"]
    assert out["made"] == [0, 0]  # empty mount points in the directory, as Docker makes them


def test_build_run_with_a_bridge_network(lab, tmp_path):
    """``build(network="bridge")``: RUN reaches the outside through NAT, as
    ``docker build``'s default network does; ``network="none"`` (ours) does not."""
    context = tmp_path / "ctx"
    context.mkdir()
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "wget", "-qO", "/got", "http://example.internal/"]\n'
    )
    store = tmp_path / "store"
    out = lab.run(
        f"""
        store = sb.ImageStore({str(store)!r})
        try:
            store.build({str(context)!r}, tag="offline")
            offline = "built"
        except sb.BuildStepFailed as err:
            offline = err.exit_code
        image = store.build({str(context)!r}, tag="online", network="bridge")
        got = sb.run(["/bin/busybox", "cat", "/got"], image=image.digest, image_store={str(store)!r}, stdout=sb.PIPE)
        print(json.dumps({{"offline": offline, "got": got.stdout.decode()}}))
        """,
        timeout=120,
    )
    assert out["offline"] not in ("built", 0)  # network="none": no route out
    assert out["got"] == f"hello from {HOST_ADDRESS}"
    assert settled(lab) == []
