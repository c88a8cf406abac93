"""The daemon's networks: the default bridge (as root), published ports
(``-p``, ``-P``, testcontainers' exposed ports, docker-py's ``ports=``),
Docker's ``NetworkSettings`` in inspect, named networks (``docker network
create/ls/inspect/connect/rm``).  A bridge changes the network namespace it
is made in: the daemon runs in tests/netlab.py's "host" namespace, its
clients reach it over its UNIX socket and its published ports from inside
that namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import wait_until
from .daemonkit import Daemon, busybox_store, rootless_home
from .netlab import WORLD_ADDRESS, Lab

HTTPD = ["sh", "-c", "echo served-by-$(hostname) > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]


class NetDaemon(Daemon):
    """A daemon in the lab's "host" namespace (its own state root, /etc/resolv.conf the lab's)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        top = os.path.join(lab.tmp, "daemon")
        os.makedirs(top)
        shell = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        prefix = [*lab._enter(lab.host, "unshare", "--mount", "sh", "-c", shell, lab.resolv)]
        env = {**os.environ, "SANDBOXLIB_RUN": lab.state}
        super().__init__(
            top, busybox_store(os.path.join(top, "store")), None, "--default-network", "bridge", prefix=prefix, env=env
        )

    def fetch(self, url: str) -> str:
        """GET ``url`` from inside the daemon's namespace."""
        code = (  # (no proxy: the tests' environment names one)
            "import urllib.request as r; opener = r.build_opener(r.ProxyHandler({}))\n"
            f"print(opener.open({url!r}, timeout=5).read().decode(), end='')"
        )
        return self.lab.in_host(sys.executable, "-c", code)


@pytest.fixture(scope="module")
def daemon():
    lab = Lab()
    try:
        served = NetDaemon(lab)
        yield served
        assert served.close() == 0
    finally:
        lab.close()


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_default_bridge_published_port_and_inspect(daemon):
    cid = _ok(daemon.docker("run", "-d", "--name", "web", "-p", "8080:80", "busybox", *HTTPD)).strip()
    try:
        info = json.loads(_ok(daemon.docker("inspect", "web")))[0]
        settings = info["NetworkSettings"]
        assert settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
        bridge = settings["Networks"]["bridge"]
        assert bridge["IPAddress"] == settings["IPAddress"] and bridge["IPAddress"].startswith("172.")
        assert bridge["Gateway"] == settings["Gateway"] and bridge["IPPrefixLen"] == 16
        assert info["HostConfig"]["NetworkMode"] == "bridge"
        assert wait_until(lambda: "served" in _fetch_or_empty(daemon, "http://127.0.0.1:8080/"))
        assert daemon.fetch("http://127.0.0.1:8080/") == f"served-by-{cid[:12]}\n"
        assert _ok(daemon.docker("port", "web")) == "80/tcp -> 0.0.0.0:8080\n"
        assert "0.0.0.0:8080->80/tcp" in _ok(daemon.docker("ps", "--format", "{{.Ports}}"))
        bridge_shown = json.loads(_ok(daemon.docker("network", "inspect", "bridge")))[0]
        assert bridge_shown["Containers"][cid]["IPv4Address"] == f"{bridge['IPAddress']}/16"
        out = _ok(daemon.docker("run", "--rm", "busybox", "wget", "-qO-", f"http://{bridge['IPAddress']}/"))
        assert out == f"served-by-{cid[:12]}\n"  # containers of the bridge reach each other
    finally:
        _ok(daemon.docker("rm", "-f", "web"))
    assert json.loads(_ok(daemon.docker("network", "inspect", "bridge")))[0]["Containers"] == {}
    cid = _ok(daemon.docker("run", "-d", "-P", "--expose", "80", "busybox", *HTTPD)).strip()
    try:
        port = json.loads(_ok(daemon.docker("inspect", cid)))[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        assert int(port) > 0
        assert wait_until(lambda: "served" in _fetch_or_empty(daemon, f"http://127.0.0.1:{port}/"))
    finally:
        _ok(daemon.docker("rm", "-f", cid))
    failed = daemon.docker("run", "--rm", "-p", "8080-8090:80", "busybox", "true")
    assert failed.returncode != 0 and b"ranges are not supported" in failed.stderr
    assert _ok(daemon.docker("ps", "-aq")) == ""


def _fetch_or_empty(daemon: NetDaemon, url: str) -> str:
    try:
        return daemon.fetch(url)
    except subprocess.CalledProcessError:
        return ""


def test_named_networks(daemon):
    _ok(daemon.docker("network", "create", "--subnet", "10.89.0.0/24", "--label", "team=db", "backend"))
    assert "backend" in _ok(daemon.docker("network", "ls", "--format", "{{.Name}}")).split()
    shown = json.loads(_ok(daemon.docker("network", "inspect", "backend")))[0]
    assert shown["IPAM"]["Config"] == [{"Subnet": "10.89.0.0/24", "Gateway": "10.89.0.1"}]
    assert shown["Labels"] == {"team": "db"} and shown["Driver"] == "bridge" and shown["Created"].startswith("20")
    again = daemon.docker("network", "create", "backend")
    assert again.returncode != 0 and b"already exists" in again.stderr
    _ok(daemon.docker("run", "-d", "--name", "db", "--network", "backend", "busybox", *HTTPD))
    try:
        info = json.loads(_ok(daemon.docker("inspect", "db")))[0]["NetworkSettings"]
        assert info["Networks"]["backend"]["IPAddress"].startswith("10.89.0.") and info["IPAddress"] == ""
        fetch = ["wget", "-qO-", "http://db/"]
        assert wait_until(
            lambda: daemon.docker("run", "--rm", "--network", "backend", "busybox", *fetch).returncode == 0
        )
        assert _ok(daemon.docker("run", "--rm", "--network", "backend", "busybox", *fetch)).startswith("served-by-")
        other = daemon.docker("run", "--rm", "busybox", "wget", "-T", "2", "-qO-", "http://db/")
        assert other.returncode != 0  # the default bridge knows no "db"
        alias = ["--network", "backend", "--network-alias", "cache", "busybox", *HTTPD]
        _ok(daemon.docker("run", "-d", "--name", "aliased", *alias))
        shown = json.loads(_ok(daemon.docker("inspect", "aliased")))[0]["NetworkSettings"]["Networks"]["backend"]
        assert shown["Aliases"][0] == "cache"
        fetch_cache = ["run", "--rm", "--network", "backend", "busybox", "wget", "-qO-", "http://cache/"]
        assert wait_until(lambda: daemon.docker(*fetch_cache).returncode == 0)
        _ok(daemon.docker("rm", "-f", "aliased"))
        _ok(daemon.docker("create", "--name", "late", "busybox", "wget", "-qO-", "http://db/"))
        _ok(daemon.docker("network", "connect", "backend", "late"))  # before its start
        assert _ok(daemon.docker("start", "-a", "late")).startswith("served-by-")
        _ok(daemon.docker("rm", "late"))
        busy = daemon.docker("network", "rm", "backend")
        assert busy.returncode != 0 and b"active endpoints" in busy.stderr
    finally:
        _ok(daemon.docker("rm", "-f", "db"))
    _ok(daemon.docker("network", "rm", "backend"))
    assert "backend" not in _ok(daemon.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert not [link for link in daemon.lab.links() if link.startswith("sbx") and link != "sbx0"]
    for name in ("host", "bridge"):
        refused = daemon.docker("network", "rm", name)
        assert refused.returncode != 0 and b"pre-defined network" in refused.stderr


def test_ipv6_network(daemon):
    create = ["network", "create", "--ipv6", "--subnet", "10.93.0.0/24", "--subnet", "fd00:93::/64", "six"]
    _ok(daemon.docker(*create))
    try:
        shown = json.loads(_ok(daemon.docker("network", "inspect", "six")))[0]
        assert shown["EnableIPv6"] is True
        assert {"Subnet": "fd00:93::/64", "Gateway": "fd00:93::1"} in shown["IPAM"]["Config"]
        route = _ok(daemon.docker("run", "--rm", "--network", "six", "busybox", "ip", "-6", "route", "show", "default"))
        assert route.startswith("default via fd00:93::1 dev eth0"), route
        refused = daemon.docker("network", "create", "--subnet", "fd00:94::/64", "nosix")  # no --ipv6
        assert refused.returncode != 0 and b"EnableIPv6" in refused.stderr
    finally:
        _ok(daemon.docker("network", "rm", "six"))


CLIENTS = """
import json, time, urllib.request
import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

HTTPD = {httpd!r}
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))  # (the tests' environment names a proxy)
found = {{}}
with DockerContainer("busybox").with_command(HTTPD).with_exposed_ports(80) as web:
    host, port = web.get_container_host_ip(), int(web.get_exposed_port(80))
    for _ in range(100):
        try:
            found["testcontainers"] = DIRECT.open(f"http://{{host}}:{{port}}/", timeout=5).read().decode()
            break
        except OSError:
            time.sleep(0.05)
    found["host"] = host
with Network() as net:
    served = DockerContainer("busybox").with_command(HTTPD).with_network(net).with_network_aliases("svc")
    asking = DockerContainer("busybox").with_command(["sleep", "60"]).with_network(net)
    with served, asking:
        for _ in range(100):
            code, out = asking.exec(["wget", "-qO-", "http://svc/"])
            if code == 0:
                found["by_alias"] = out.decode()
                break
            time.sleep(0.05)
client = docker.from_env()
c = client.containers.run("busybox", HTTPD, detach=True, ports={{"80/tcp": ("127.0.0.1", None)}})
try:
    c.reload()
    found["docker_py"] = c.ports
    found["address"] = c.attrs["NetworkSettings"]["IPAddress"]
finally:
    c.remove(force=True)
net = client.networks.create("frontend")
found["networks"] = sorted(n.name for n in client.networks.list())
net.remove()
print(json.dumps(found))
"""


def test_internal_network_has_no_way_out(daemon):
    """``--internal``: shown so, its containers reach each other and nothing else; a
    network that is not internal reaches the world (through NAT)."""
    _ok(daemon.docker("network", "create", "--internal", "--subnet", "10.91.0.0/24", "closed"))
    _ok(daemon.docker("network", "create", "--subnet", "10.92.0.0/24", "open"))
    try:
        shown = {n: json.loads(_ok(daemon.docker("network", "inspect", n)))[0]["Internal"] for n in ("closed", "open")}
        assert shown == {"closed": True, "open": False}
        get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {WORLD_ADDRESS} 80"
        world = ["busybox", "sh", "-c", get]
        assert "hello from" in _ok(daemon.docker("run", "--rm", "--network", "open", *world))
        out = daemon.docker("run", "--rm", "--network", "closed", *world)
        assert out.returncode != 0 and not out.stdout
        _ok(daemon.docker("run", "-d", "--name", "insider", "--network", "closed", "busybox", *HTTPD))
        fetch = ["run", "--rm", "--network", "closed", "busybox", "wget", "-qO-", "http://insider/"]
        assert wait_until(lambda: daemon.docker(*fetch).returncode == 0)
        assert _ok(daemon.docker(*fetch)).startswith("served-by-")
    finally:
        daemon.docker("rm", "-f", "insider")
        _ok(daemon.docker("network", "rm", "closed", "open"))


def test_endpoint_config_aliases_and_driver_options(daemon):
    """EndpointsConfig: every alias and the driver options shown (aliases and the short id
    while it runs, the aliases asked for once it stopped); two networks' entries refused;
    ``--ip`` (IPAMConfig.IPv4Address) on a named network: that address, not another's."""
    _ok(daemon.docker("network", "create", "--subnet", "10.93.0.0/24", "ends"))
    try:
        body = {
            "Image": "busybox",
            "Cmd": ["sleep", "60"],
            "HostConfig": {"NetworkMode": "ends"},
            "NetworkingConfig": {"EndpointsConfig": {"ends": {"Aliases": ["one", "two"], "DriverOpts": {"k": "v"}}}},
        }
        status, _, created = daemon.request("POST", "/containers/create?name=ended", body)
        assert status == 201, created
        cid = json.loads(created)["Id"]
        _ok(daemon.docker("start", "ended"))
        shown = json.loads(_ok(daemon.docker("inspect", "ended")))[0]["NetworkSettings"]["Networks"]["ends"]
        assert shown["Aliases"] == ["one", "two", cid[:12]] and shown["DriverOpts"] == {"k": "v"}
        found = _ok(daemon.docker("run", "--rm", "--network", "ends", "busybox", "nslookup", "one"))
        assert shown["IPAddress"] in found  # (the first alias is its name on the network)
        _ok(daemon.docker("stop", "-t", "0", "ended"))
        shown = json.loads(_ok(daemon.docker("inspect", "ended")))[0]["NetworkSettings"]["Networks"]["ends"]
        assert shown["Aliases"] == ["one", "two"]
        both = {**body, "NetworkingConfig": {"EndpointsConfig": {"ends": {}, "bridge": {}}}}
        status, _, refused = daemon.request("POST", "/containers/create", both)
        assert status == 400 and b"cannot be connected to network endpoints" in refused
        other = {**body, "NetworkingConfig": {"EndpointsConfig": {"elsewhere": {"Aliases": ["x"]}}}}
        status, _, created = daemon.request("POST", "/containers/create?name=other", other)
        assert status == 201  # (as dockerd: one entry of another network is ignored)
        assert (
            json.loads(_ok(daemon.docker("inspect", "other")))[0]["NetworkSettings"]["Networks"]["ends"]["Aliases"]
            is None
        )
        _ok(
            daemon.docker(
                "run", "-d", "--name", "fixed", "--network", "ends", "--ip", "10.93.0.50", "busybox", "sleep", "60"
            )
        )
        shown = json.loads(_ok(daemon.docker("inspect", "fixed")))[0]["NetworkSettings"]["Networks"]["ends"]
        assert shown["IPAddress"] == "10.93.0.50" and shown["IPAMConfig"] == {"IPv4Address": "10.93.0.50"}
        assert "10.93.0.50/24" in _ok(daemon.docker("exec", "fixed", "ip", "-o", "-4", "addr", "show", "eth0"))
        taken = daemon.docker("run", "--rm", "--network", "ends", "--ip", "10.93.0.50", "busybox", "true")
        assert taken.returncode != 0 and b"10.93.0.50 is in use" in taken.stderr
        outside = daemon.docker("run", "--rm", "--network", "ends", "--ip", "10.94.0.5", "busybox", "true")
        assert outside.returncode != 0 and b"not a free host address of 10.93.0.0/24" in outside.stderr
        default = daemon.docker("create", "--ip", "172.17.0.9", "busybox", "true")
        assert default.returncode != 0 and b"user defined networks only" in default.stderr
    finally:
        daemon.docker("rm", "-f", "ended", "other", "fixed")
        _ok(daemon.docker("network", "rm", "ends"))


def test_testcontainers_and_docker_py_with_published_ports(daemon):
    script = os.path.join(daemon.lab.tmp, "clients.py")
    with open(script, "w") as file:
        file.write(textwrap.dedent(CLIENTS.format(httpd=HTTPD)))
    env = {**daemon.env, "TESTCONTAINERS_RYUK_DISABLED": "true"}
    proc = subprocess.run(
        daemon.lab._enter(daemon.lab.host, sys.executable, script), capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["testcontainers"].startswith("served-by-") and found["by_alias"].startswith("served-by-")
    # (where this machine is itself a container (/.dockerenv), testcontainers goes through the gateway)
    assert found["host"] in ("localhost", "127.0.0.1", "172.17.0.1")
    [binding] = found["docker_py"]["80/tcp"]
    assert binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) > 0
    assert found["address"].startswith("172.")
    assert "frontend" in found["networks"] and {"bridge", "host", "none"} <= set(found["networks"])
    assert _ok(daemon.docker("ps", "-aq")) == ""


def _processes_of(user, word: str) -> list:
    found = subprocess.run(["pgrep", "-u", str(user.pw_uid), "-f", word], capture_output=True, text=True)
    return found.stdout.split()


def test_rootless_daemon_publishes_through_pasta(workers, shared_dir):
    """A rootless daemon's bridge is pasta's (its /dev/net/tun the lab's node of mode 0666, as distributions have it);
    its named networks live in the per-user network namespace."""
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-net-rootless-")
    lab = Lab()
    try:
        served = Daemon(top, store, user, "--default-network", "bridge", prefix=lab._enter(lab.host), tun=lab.tun)
        try:
            _ok(served.docker("run", "-d", "--name", "web", "-p", "8081:80", "busybox", *HTTPD))
            ports = json.loads(_ok(served.docker("inspect", "web")))[0]["NetworkSettings"]["Ports"]
            assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}
            fetch = ["wget", "-qO-", "http://127.0.0.1:8081/"]
            assert wait_until(lambda: subprocess.run(lab._enter(lab.host, *fetch), capture_output=True).returncode == 0)
            assert subprocess.run(lab._enter(lab.host, *fetch), capture_output=True).stdout.startswith(b"served-by-")
            _ok(served.docker("rm", "-f", "web"))
            _ok(served.docker("network", "create", "mine"))  # a rootless named network: in the per-user namespace
            assert json.loads(_ok(served.docker("network", "inspect", "mine")))[0]["Name"] == "mine"
            _ok(served.docker("network", "rm", "mine"))  # the last one: its holder and pasta end
            assert wait_until(lambda: not _processes_of(user, "usernetd"))
        finally:
            assert served.close() == 0, served.log()
    finally:
        lab.close()
        shutil.rmtree(top, ignore_errors=True)


def test_ipam_config_and_a_containers_addresses(daemon):
    """``docker network create --ip-range --gateway --aux-address`` (IPv6's too), ``docker run
    --ip6 --mac-address --link-local-ip``; inspect's IPAM.Config and the endpoint's IPv6 address,
    IPv6 gateway and MAC address (Docker's 02:42 + IPv4 when none was asked for)."""
    create = ["network", "create", "--subnet", "10.94.0.0/16", "--ip-range", "10.94.5.0/24"]
    create += ["--gateway", "10.94.5.254", "--aux-address", "a=10.94.5.0", "--aux-address", "b=10.94.5.1"]
    create += ["--ipv6", "--subnet", "fd00:94::/64", "--gateway", "fd00:94::ffff", "ipam"]
    _ok(daemon.docker(*create))
    try:
        shown = json.loads(_ok(daemon.docker("network", "inspect", "ipam")))[0]
        assert shown["IPAM"]["Config"] == [
            {
                "Subnet": "10.94.0.0/16",
                "IPRange": "10.94.5.0/24",
                "Gateway": "10.94.5.254",
                "AuxiliaryAddresses": {"a": "10.94.5.0", "b": "10.94.5.1"},
            },
            {"Subnet": "fd00:94::/64", "Gateway": "fd00:94::ffff"},
        ]
        fixed = ["run", "--rm", "--network", "ipam", "--ip6", "fd00:94::f00d", "--mac-address", "02:42:0a:5e:00:99"]
        fixed += ["--link-local-ip", "169.254.8.8", "busybox", "sh", "-c", "ip -o addr show eth0; ip -o link show eth0"]
        shown_inside = _ok(daemon.docker(*fixed))
        for part in ("inet6 fd00:94::f00d/64", "inet 169.254.8.8/32", "link/ether 02:42:0a:5e:00:99", "10.94.5.2/16"):
            assert part in shown_inside, shown_inside
        _ok(daemon.docker("run", "-d", "--network", "ipam", "--name", "six", "busybox", "sleep", "60"))
        try:
            settings = json.loads(_ok(daemon.docker("inspect", "six")))[0]["NetworkSettings"]["Networks"]["ipam"]
            assert settings["IPAddress"] == "10.94.5.2" and settings["Gateway"] == "10.94.5.254"
            assert settings["GlobalIPv6Address"] == "fd00:94::502" and settings["GlobalIPv6PrefixLen"] == 64
            assert settings["IPv6Gateway"] == "fd00:94::ffff"
            assert settings["MacAddress"] == "02:42:0a:5e:05:02"
            member = next(iter(json.loads(_ok(daemon.docker("network", "inspect", "ipam")))[0]["Containers"].values()))
            assert member["IPv6Address"] == "fd00:94::502/64" and member["MacAddress"] == "02:42:0a:5e:05:02"
        finally:
            _ok(daemon.docker("rm", "-f", "six"))
        bad = daemon.docker("network", "create", "--subnet", "10.95.0.0/24", "--gateway", "10.96.0.1", "bad")
        assert bad.returncode != 0 and b"gateway" in bad.stderr
        on_host = {"Image": "busybox", "Cmd": ["true"], "MacAddress": "02:42:ac:11:00:0a"}
        status, _, body = daemon.request(
            "POST", "/containers/create", {**on_host, "HostConfig": {"NetworkMode": "host"}}
        )
        assert status == 400 and b"conflicting options: mac-address" in body  # (as dockerd; on none: ignored)
    finally:
        _ok(daemon.docker("network", "rm", "ipam"))
