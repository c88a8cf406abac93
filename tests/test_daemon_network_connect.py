"""Several networks per container through the daemon, as root: ``docker run
--network a`` then ``docker network connect b`` on the running container
(an ``eth1`` on b, its aliases resolving there, inspect's
``NetworkSettings.Networks`` with both), ``disconnect``, a stop and a
restart (the connection kept), docker-py's ``Network.connect``; nothing left
after a daemon's stop or SIGKILL.  The daemons run in tests/netlab.py's
"host" namespace, as in tests/test_daemon_network.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import docker
import pytest

from .conftest import wait_until
from .daemonkit import Daemon, busybox_store, rootless_home
from .netlab import Lab

HTTPD = ["sh", "-c", "echo served-by-$(hostname) > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]


class LabDaemon(Daemon):
    """A daemon in the lab's "host" namespace, its directory ``lab.tmp/NAME``."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        top = os.path.join(lab.tmp, name)
        os.makedirs(top)
        shell = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        prefix = [*lab._enter(lab.host, "unshare", "--mount", "sh", "-c", shell, lab.resolv)]
        env = {**os.environ, "SANDBOXLIB_RUN": lab.state}
        super().__init__(
            top, busybox_store(os.path.join(top, "store")), None, "--default-network", "bridge", prefix=prefix, env=env
        )


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


@pytest.fixture(scope="module")
def daemon(lab):
    served = LabDaemon(lab, "daemon")
    yield served
    assert served.close() == 0
    assert _joined_links(lab) == []


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _joined_links(lab: Lab) -> list:
    return [name for name in lab.links() if name.startswith("vj")]


def _networks(daemon: Daemon, container: str) -> dict:
    return json.loads(_ok(daemon.docker("inspect", container)))[0]["NetworkSettings"]["Networks"]


def _fetch(daemon: Daemon, container: str, name: str) -> subprocess.CompletedProcess:
    return daemon.docker("exec", container, "wget", "-qO-", f"http://{name}/", timeout=30)


def test_connect_and_disconnect_a_running_container(daemon, lab):
    _ok(daemon.docker("network", "create", "--subnet", "10.94.0.0/24", "na"))
    _ok(daemon.docker("network", "create", "--subnet", "10.95.0.0/24", "nb"))
    try:
        _ok(daemon.docker("run", "-d", "--name", "xc", "--hostname", "xhost", "--network", "na", "busybox", *HTTPD))
        _ok(daemon.docker("run", "-d", "--name", "yc", "--hostname", "yhost", "--network", "nb", "busybox", *HTTPD))
        assert _fetch(daemon, "yc", "xc").returncode != 0  # not on y's network yet
        _ok(daemon.docker("network", "connect", "--alias", "xalias", "nb", "xc"))
        networks = _networks(daemon, "xc")
        assert sorted(networks) == ["na", "nb"]
        assert networks["na"]["IPAddress"].startswith("10.94.0.") and networks["nb"]["IPAddress"].startswith("10.95.0.")
        assert "xalias" in networks["nb"]["Aliases"] and networks["nb"]["Gateway"] == "10.95.0.1"
        eth1 = _ok(daemon.docker("exec", "xc", "ip", "-o", "-4", "addr", "show", "eth1"))
        assert networks["nb"]["IPAddress"] + "/24" in eth1
        # names on each network, both ways: y finds x by its alias and name, x finds y
        assert _ok(_fetch(daemon, "yc", "xalias")) == "served-by-xhost\n"
        assert _ok(_fetch(daemon, "yc", "xc")) == "served-by-xhost\n"
        assert _ok(_fetch(daemon, "xc", "yc")) == "served-by-yhost\n"
        members = json.loads(_ok(daemon.docker("network", "inspect", "nb")))[0]["Containers"]
        assert sorted(m["Name"] for m in members.values()) == ["xc", "yc"]
        assert len(_joined_links(lab)) == 1
        refused = daemon.docker("network", "connect", "nb", "xc")
        assert refused.returncode != 0 and b"already exists" in refused.stderr
        refused = daemon.docker("network", "rm", "nb")
        assert refused.returncode != 0 and b"active endpoints" in refused.stderr

        _ok(daemon.docker("network", "disconnect", "nb", "xc"))
        assert sorted(_networks(daemon, "xc")) == ["na"]
        assert daemon.docker("exec", "xc", "ip", "link", "show", "eth1").returncode != 0
        assert _fetch(daemon, "yc", "xalias").returncode != 0
        assert _joined_links(lab) == []

        # connected again: kept across a stop and a start, gone while stopped
        _ok(daemon.docker("network", "connect", "nb", "xc"))
        _ok(daemon.docker("stop", "-t", "1", "xc"))
        assert _joined_links(lab) == []
        members = json.loads(_ok(daemon.docker("network", "inspect", "nb")))[0]["Containers"]
        assert [m["Name"] for m in members.values()] == ["yc"]
        _ok(daemon.docker("start", "xc"))
        assert _networks(daemon, "xc")["nb"]["IPAddress"].startswith("10.95.0.")
        assert _ok(_fetch(daemon, "xc", "yc")) == "served-by-yhost\n"
    finally:
        daemon.docker("rm", "-f", "xc", "yc")
    assert _joined_links(lab) == []
    _ok(daemon.docker("network", "rm", "na", "nb"))


def test_connected_before_its_start_a_container_joins_at_each_start(daemon, lab):
    _ok(daemon.docker("network", "create", "--subnet", "10.99.0.0/24", "first"))
    _ok(daemon.docker("network", "create", "--subnet", "10.100.0.0/24", "second"))
    try:
        _ok(daemon.docker("create", "--name", "early", "--network", "first", "busybox", "sleep", "600"))
        _ok(daemon.docker("network", "connect", "--alias", "early2", "second", "early"))
        assert sorted(_networks(daemon, "early")) == ["first", "second"]  # (no address before the start)
        _ok(daemon.docker("start", "early"))
        networks = _networks(daemon, "early")
        assert networks["first"]["IPAddress"].startswith("10.99.0.")
        assert networks["second"]["IPAddress"].startswith("10.100.0.")
        assert "early2" in networks["second"]["Aliases"]
        _ok(daemon.docker("restart", "-t", "1", "early"))
        assert _networks(daemon, "early")["second"]["IPAddress"].startswith("10.100.0.")
        assert len(_joined_links(lab)) == 1
        _ok(daemon.docker("network", "prune", "-f"))  # (a joined network is in use: kept)
        assert "second" in _ok(daemon.docker("network", "ls", "--format", "{{.Name}}")).split()
    finally:
        daemon.docker("rm", "-f", "early")
    assert _joined_links(lab) == []
    _ok(daemon.docker("network", "rm", "first", "second"))


def test_a_running_container_of_no_network_joins_one(daemon, lab):
    """``--network none`` (the daemon's default without --default-network, as dockerd's
    with ``--bridge none``): connect gives it an interface and an address, disconnect takes them."""
    _ok(daemon.docker("network", "create", "--subnet", "10.101.0.0/24", "lonely"))
    try:
        _ok(daemon.docker("run", "-d", "--name", "alone", "--network", "none", "busybox", "sleep", "600"))
        _ok(daemon.docker("network", "connect", "--alias", "found", "--ip", "10.101.0.77", "lonely", "alone"))
        shown = _networks(daemon, "alone")["lonely"]
        assert shown["IPAddress"] == "10.101.0.77" and "found" in shown["Aliases"]
        assert shown["IPAddress"] in _ok(daemon.docker("exec", "alone", "ip", "-o", "-4", "addr"))
        members = json.loads(_ok(daemon.docker("network", "inspect", "lonely")))[0]["Containers"]
        assert [m["Name"] for m in members.values()] == ["alone"]
        _ok(daemon.docker("network", "disconnect", "lonely", "alone"))
        assert "10.101.0." not in _ok(daemon.docker("exec", "alone", "ip", "-o", "-4", "addr"))
        assert list(_networks(daemon, "alone")) == ["none"]
    finally:
        daemon.docker("rm", "-f", "alone")
    assert _joined_links(lab) == []
    _ok(daemon.docker("network", "rm", "lonely"))


def test_a_running_container_leaves_the_network_it_started_on(daemon, lab):
    """``network disconnect`` of the network it started on: its eth0 and address go, the
    network's members and its names forget it; connected again (``--ip``), it is back."""
    _ok(daemon.docker("network", "create", "--subnet", "10.102.0.0/24", "origin"))
    try:
        _ok(daemon.docker("run", "-d", "--name", "leaver", "--network", "origin", "busybox", *HTTPD))
        assert _networks(daemon, "leaver")["origin"]["IPAddress"].startswith("10.102.0.")
        _ok(daemon.docker("network", "disconnect", "origin", "leaver"))
        assert "eth0" not in _ok(daemon.docker("exec", "leaver", "ip", "-o", "link"))
        assert json.loads(_ok(daemon.docker("network", "inspect", "origin")))[0]["Containers"] == {}
        assert _networks(daemon, "leaver") == {"none": _networks(daemon, "leaver")["none"]}
        from_origin = ["run", "--rm", "--network", "origin", "busybox", "wget", "-qO-", "http://leaver/"]
        assert daemon.docker(*from_origin).returncode != 0
        _ok(daemon.docker("network", "connect", "--ip", "10.102.0.9", "origin", "leaver"))
        shown = _networks(daemon, "leaver")["origin"]
        assert shown["IPAddress"] == "10.102.0.9" and shown["IPAMConfig"] == {"IPv4Address": "10.102.0.9"}
        assert wait_until(lambda: daemon.docker(*from_origin).returncode == 0)
        _ok(daemon.docker("restart", "-t", "0", "leaver"))  # (joined again at its start, at that address)
        assert _networks(daemon, "leaver")["origin"]["IPAddress"] == "10.102.0.9"
    finally:
        daemon.docker("rm", "-f", "leaver")
    assert _joined_links(lab) == []
    _ok(daemon.docker("network", "rm", "origin"))


def test_docker_py_connects_a_running_container(daemon, lab):
    client = docker.DockerClient(base_url=daemon.host, timeout=60)
    try:
        network = client.networks.create("pynet", ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet="10.96.0.0/24")]))  # fmt: skip
        container = client.containers.run("busybox", ["sleep", "600"], detach=True, name="pyc")
        try:
            network.connect(container, aliases=["pyalias"])
            container.reload()
            networks = container.attrs["NetworkSettings"]["Networks"]
            assert sorted(networks) == ["bridge", "pynet"]
            assert networks["pynet"]["IPAddress"].startswith("10.96.0.")
            assert networks["bridge"]["IPAddress"] == container.attrs["NetworkSettings"]["IPAddress"]
            network.reload()
            assert [c.name for c in network.containers] == ["pyc"]
            network.disconnect(container)
            container.reload()
            assert sorted(container.attrs["NetworkSettings"]["Networks"]) == ["bridge"]
            network.connect(container)  # left connected: the daemon's stop cleans up (below)
        finally:
            container.remove(force=True)
        network.remove()
    finally:
        client.close()


def test_docker_py_connects_with_an_ipv6_address_and_a_mac_address(daemon, lab):
    """``ipv6_address`` and ``mac_address`` of connect: on a running container its
    ``ethN`` has them; on a created one they are shown, then given at its start
    (the joined network's ``IPAMConfig`` kept, as dockerd's)."""
    client = docker.APIClient(base_url=daemon.host, timeout=60)
    pool = docker.types.IPAMPool(subnet="fd00:97::/64", iprange="fd00:97::/96", gateway="fd00:97::ffff")
    client.create_network("six", enable_ipv6=True, ipam=docker.types.IPAMConfig(pool_configs=[pool]))
    running = client.create_container("busybox", ["sleep", "600"], name="running6")
    created = client.create_container("busybox", ["sleep", "600"], name="created6")
    try:
        client.start(running)
        client.connect_container_to_network(running, "six", ipv6_address="fd00:97::f00d")
        client.connect_container_to_network(created, "six", mac_address="02:42:ac:11:00:99")
        settings = client.inspect_container(running)["NetworkSettings"]
        shown = settings["Networks"]["six"]
        top = {k: settings[k] for k in ("IPAddress", "Gateway", "MacAddress", "GlobalIPv6Address")}
        assert top == {k: settings["Networks"]["bridge"][k] for k in top} and top["MacAddress"].startswith("02:42:")
        assert shown["IPAMConfig"]["IPv6Address"] == "fd00:97::f00d" == shown["GlobalIPv6Address"]
        assert shown["IPv6Gateway"] == "fd00:97::ffff"
        inside = client.exec_start(client.exec_create(running, ["ip", "-o", "addr", "show", "eth1"]))
        assert b"inet6 fd00:97::f00d/64" in inside
        assert client.inspect_container(created)["NetworkSettings"]["Networks"]["six"]["MacAddress"] == (
            "02:42:ac:11:00:99"
        )
        client.start(created)
        inside = client.exec_start(client.exec_create(created, ["ip", "-o", "link", "show", "eth0"]))
        assert b"link/ether 02:42:ac:11:00:99" in inside
        third = client.create_container("busybox", ["sleep", "600"], name="third6")
        client.start(third)
        with pytest.raises(docker.errors.APIError, match="fd00:97::f00d is in use"):
            client.connect_container_to_network(third, "six", ipv6_address="fd00:97::f00d")
        client.remove_container(third, force=True)
    finally:
        client.remove_container(running, force=True)
        client.remove_container(created, force=True)
        client.remove_network("six")
        client.close()


@pytest.mark.parametrize("how", ["stop", "sigkill"])
def test_daemon_stop_and_sigkill_leave_no_joined_veth(lab, daemon, how):
    other = LabDaemon(lab, f"daemon-{how}")
    try:
        _ok(other.docker("network", "create", f"left-{how}"))
        _ok(other.docker("run", "-d", "--name", "held", "busybox", "sleep", "600"))
        _ok(other.docker("network", "connect", f"left-{how}", "held"))
        assert len(_joined_links(lab)) == 1
    finally:
        if how == "sigkill":
            other.proc.send_signal(signal.SIGKILL)
            other.proc.wait()
        else:
            assert other.close() == 0
    assert wait_until(lambda: _joined_links(lab) == [])  # (after a SIGKILL: with the init's namespace)
    # the network has no member left: it can be removed (through the other daemon, which shares the state)
    _ok(daemon.docker("network", "rm", f"left-{how}"))


def test_rootless_daemon_connects_a_running_container(workers, shared_dir):
    """A rootless daemon's named networks (the per-user namespace's) and a connect while running."""
    user = workers["sbxtest"].user
    top, store = rootless_home(user, shared_dir, "daemon-connect-rootless-")
    lab = Lab()
    try:
        served = Daemon(top, store, user, prefix=lab._enter(lab.host), tun=lab.tun)
        try:
            _ok(served.docker("network", "create", "--subnet", "10.97.0.0/24", "ra"))
            _ok(served.docker("network", "create", "--subnet", "10.98.0.0/24", "rb"))
            _ok(
                served.docker("run", "-d", "--name", "rx", "--hostname", "rxhost", "--network", "ra", "busybox", *HTTPD)
            )
            _ok(served.docker("run", "-d", "--name", "ry", "--network", "rb", "busybox", *HTTPD))
            _ok(served.docker("network", "connect", "--alias", "rxa", "rb", "rx"))
            networks = _networks(served, "rx")
            assert networks["ra"]["IPAddress"].startswith("10.97.0.") and networks["rb"]["IPAddress"].startswith(
                "10.98.0."
            )
            assert _ok(_fetch(served, "ry", "rxa")) == "served-by-rxhost\n"
            _ok(served.docker("network", "disconnect", "rb", "rx"))
            assert sorted(_networks(served, "rx")) == ["ra"]
            assert _fetch(served, "ry", "rxa").returncode != 0
            _ok(served.docker("rm", "-f", "rx", "ry"))
            _ok(served.docker("network", "rm", "ra", "rb"))
        finally:
            assert served.close() == 0, served.log()
    finally:
        lab.close()
        shutil.rmtree(top, ignore_errors=True)
