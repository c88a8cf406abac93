"""A running container on more networks (``Container.connect``/``disconnect``,
as root): an ``ethN`` on the other bridge, names and aliases resolving both
ways, traffic over it; nothing left after a disconnect, the container's end
or a SIGKILL of its owner.  In the namespaces of tests/netlab.py."""

import signal

import pytest

from .conftest import wait_until
from .netlab import Lab
from .rootless import USERS, ensure_user

PY = "/usr/bin/python3"
SERVE = (
    "import socket; s = socket.create_server(('', 80)); print('up', flush=True); c, _ = s.accept(); c.sendall(b'hi')"
)
FETCH = (
    "import socket, sys\n"
    "try:\n"
    "    print(socket.create_connection((sys.argv[1], 80), timeout=3).recv(10).decode())\n"
    "except OSError as e: print(type(e).__name__)\n"
)


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


def _joined_links(lab: Lab) -> list:
    return [name for name in lab.links() if name.startswith("vj")]


CONNECTED = f"""
        a = sb.Network.create("front", subnet="10.91.0.0/24")
        b = sb.Network.create("back", subnet="10.92.0.0/24")
        def names(c, name):
            return c.run(["getent", "hosts", name], stdout=sb.PIPE)
        found = {{}}
        with sb.Container(network=a, name="x") as x, sb.Container(network=b, name="y") as y:
            srv = y.spawn(["{PY}", "-c", {SERVE!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            found["before"] = names(x, "y").exit_code
            found["address"] = x.connect("back", aliases=["xb"])
            found["joined"] = x.joined_networks
            found["eth1"] = text(x.run(["sh", "-c", "ip -o -4 addr show eth1"], stdout=sb.PIPE)).split()[3]
            found["route"] = text(x.run(["ip", "route", "show", "default"], stdout=sb.PIPE))
            found["y_from_x"] = text(names(x, "y")).split()
            found["xb_from_y"] = text(names(y, "xb")).split()
            found["x_from_y"] = text(names(y, "x")).split()
            found["fetch"] = text(x.run(["{PY}", "-c", {FETCH!r}, "y"], stdout=sb.PIPE))
            found["members"] = sorted(m["name"] for m in b.containers())
            for call in (lambda: x.connect("back"), lambda: x.connect("front"), lambda: x.disconnect("other")):
                try:
                    call()
                except sb.ContainerStateError as err:
                    found.setdefault("refused", []).append(str(err))
            try:
                x.connect("nowhere")
            except sb.ConfigError as err:
                found["unknown"] = str(err)
            x.disconnect("back")
            found["after_links"] = text(x.run(["sh", "-c", "ip -o link show | grep -c eth1 || true"], stdout=sb.PIPE))
            found["after_name"] = names(y, "xb").exit_code
            found["after_members"] = sorted(m["name"] for m in b.containers())
            found["after_joined"] = x.joined_networks
            x.connect("back")  # again, then left by the container's end
            found["again"] = sorted(m["name"] for m in b.containers())
            srv.kill(); srv.wait()
        found["closed_members"] = b.containers()
        with sb.Container(network=sb.Network.NONE) as lonely:  # its namespace: the join is its only way out
            found["none"] = lonely.connect("back")
            found["none_shown"] = text(lonely.run(["sh", "-c", "ip -o -4 addr; ip route"], stdout=sb.PIPE))
        a.remove(); b.remove()
        print(json.dumps(found))
        """


@pytest.fixture(scope="module")
def rootless_lab():
    made = Lab()  # (its user's /dev/net/tun is the lab's node of mode 0666: a rootless tap is opened as its owner)
    try:
        yield made
    finally:
        made.close()


def test_connect_a_running_container_to_a_second_network_and_back(lab):
    _check_connected(lab.run(CONNECTED))
    assert _joined_links(lab) == []


def test_rootless_connect_through_the_per_user_namespace(rootless_lab):
    user = ensure_user("sbxtest", USERS["sbxtest"])
    host_links = rootless_lab.links()
    _check_connected(rootless_lab.run(CONNECTED, user=user))
    assert rootless_lab.links() == host_links  # all of it in the per-user namespace, gone with its holder


def _check_connected(out: dict) -> None:
    assert out["before"] != 0  # y is not on x's network yet
    assert out["address"].startswith("10.92.0.") and out["address"] == out["eth1"]
    assert out["joined"] == {"back": out["address"]}
    assert "10.91.0.1" in out["route"]  # the default route stays the first network's
    assert out["y_from_x"][0].startswith("10.92.0.")
    assert out["xb_from_y"][0] == out["address"].split("/")[0] == out["x_from_y"][0]
    assert out["fetch"] == "hi"
    assert out["members"] == ["x", "y"]
    assert len(out["refused"]) == 3 and "already" in out["refused"][0] and "already" in out["refused"][1]
    assert "not connected" in out["refused"][2]
    assert "nowhere" in out["unknown"]
    assert out["after_links"] == "0" and out["after_name"] != 0
    assert out["after_members"] == ["y"] and out["after_joined"] == {}
    assert out["again"] == ["x", "y"] and out["closed_members"] == []
    assert out["none"].startswith("10.92.0.") and out["none"] in out["none_shown"]
    assert "default" not in out["none_shown"]


def test_a_sigkilled_owner_leaves_no_joined_veth_nor_lease(lab):
    lab.run('sb.Network.create("kept", subnet="10.93.0.0/24"); print("{}")')
    proc = lab.library(
        """
        import time
        with sb.Container(network="bridge") as c:
            c.connect("kept", aliases=["doomed"])
            print("joined", flush=True)
            time.sleep(600)
        """
    )
    try:
        assert proc.stdout.readline() == "joined\n", proc.stderr.read()
        assert len(_joined_links(lab)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the init watches its owner and ends; its namespace takes both veth ends along
    assert wait_until(lambda: _joined_links(lab) == [])
    out = lab.run(
        """
        kept = sb.Network.get("kept")
        members = kept.containers()  # (a dead owner's lease is not a member)
        kept.remove()
        print(json.dumps({"members": members}))
        """
    )
    assert out["members"] == []


SERVE6 = (
    "import socket\n"
    "s = socket.create_server(('::', 80), family=socket.AF_INET6, dualstack_ipv6=True)\n"
    "print('up', flush=True); c, peer = s.accept(); c.sendall(('pong ' + peer[0]).encode())\n"
)
CONNECT6 = (
    "import socket, sys\n"
    "try:\n"
    "    where = socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET6, socket.SOCK_STREAM)[0][4]\n"
    "    print(socket.create_connection(where[:2], timeout=3).recv(100).decode())\n"
    "except OSError as e: print(type(e).__name__)\n"
)
CONNECTED6 = f"""
        a = sb.Network.create("four", subnet="10.94.0.0/24")
        b = sb.Network.create("six", subnet="10.95.0.0/24", subnet6="fd00:95::/64")
        global6 = ["ip", "-o", "-6", "addr", "show", "scope", "global"]
        def v6(c, name):
            return text(c.run(["getent", "ahostsv6", name], stdout=sb.PIPE)).split()[:1]
        found = {{}}
        with sb.Container(network=a, name="x") as x, sb.Container(network=b, name="y") as y:
            srv = y.spawn(["{PY}", "-c", {SERVE6!r}], stdout=sb.PIPE)
            srv.stdout.readline()
            found["address"] = x.connect("six", aliases=["xb"])
            found["x6"] = text(x.run(global6 + ["dev", "eth1"], stdout=sb.PIPE)).split()[3]
            found["y6"] = text(y.run(global6 + ["dev", "eth0"], stdout=sb.PIPE)).split()[3]
            found["route6"] = text(x.run(["ip", "-6", "route", "show", "default"], stdout=sb.PIPE))
            found["y_from_x"] = v6(x, "y")  # x asks its first network's resolver: AAAA from the other's lease
            found["xb_from_y"] = v6(y, "xb")
            found["fetch"] = text(x.run(["{PY}", "-c", {CONNECT6!r}, "y"], stdout=sb.PIPE))
            x.disconnect("six")
            found["after"] = text(x.run(global6, stdout=sb.PIPE))
            srv.kill(); srv.wait()
        a.remove(); b.remove()
        print(json.dumps(found))
        """


def _check_connected6(out: dict) -> None:
    offset = int(out["address"].split("/")[0].split(".")[-1])
    assert out["x6"] == f"fd00:95::{offset:x}/64"  # at its IPv4 lease's offset, as a start's
    assert out["route6"] == ""  # no default route: the network it started on keeps the defaults
    assert out["y_from_x"] == [out["y6"].split("/")[0]]
    assert out["xb_from_y"] == [out["x6"].split("/")[0]]
    assert out["fetch"] == "pong " + out["x6"].split("/")[0]  # over IPv6, from eth1's address
    assert out["after"] == ""


def test_a_joined_network_with_ipv6_gives_an_ipv6_address_and_aaaa_answers(lab):
    _check_connected6(lab.run(CONNECTED6))
    assert _joined_links(lab) == []


def test_rootless_joined_network_with_ipv6(rootless_lab):
    user = ensure_user("sbxtest", USERS["sbxtest"])
    _check_connected6(rootless_lab.run(CONNECTED6, user=user))


def test_a_forked_child_cannot_disconnect_its_parents_container(lab):
    """disconnect() checked neither the owner nor the state: a forked child (which
    shares the Container object) deleted the parent's veth and released its lease,
    under the running container.  Now it raises, as the other methods do there."""
    out = lab.run(
        """
        import os
        b = sb.Network.create("forked", subnet="10.96.0.0/24")
        found = {}
        with sb.Container(network=sb.Network.NONE) as c:
            found["address"] = c.connect("forked")
            pid = os.fork()
            if pid == 0:
                try:
                    c.disconnect("forked")
                    os._exit(1)
                except sb.ContainerStateError:
                    os._exit(0)
                except BaseException:
                    os._exit(2)
            found["child"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            found["joined"] = c.joined_networks
            found["eth1"] = c.run(["sh", "-c", "ip -o -4 addr show eth1"], stdout=sb.PIPE).stdout.decode()
            found["members"] = len(b.containers())
        b.remove()
        print(json.dumps(found))
        """
    )
    assert out["child"] == 0
    assert out["joined"] == {"forked": out["address"]} and out["address"] in out["eth1"]
    assert out["members"] == 1
    assert _joined_links(lab) == []


def test_connect_and_disconnect_from_threads_at_once(lab):
    """Two threads connecting and disconnecting one network: disconnect deleted the
    veth after letting go of the container's lock, and a connect meanwhile met its
    name still taken (SetupError, File exists).  Each call now succeeds or says
    why not (ContainerStateError), and nothing is left after."""
    out = lab.run(
        """
        import contextlib, threading
        net = sb.Network.create("storm", subnet="10.97.0.0/24")
        failures = []
        with sb.Container(network=sb.Network.NONE) as c:
            def storm():
                for _ in range(25):
                    for call in (lambda: c.connect("storm"), lambda: c.disconnect("storm")):
                        try:
                            call()
                        except sb.ContainerStateError:
                            pass
                        except Exception as err:
                            failures.append(repr(err))
            threads = [threading.Thread(target=storm) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with contextlib.suppress(sb.ContainerStateError):
                c.disconnect("storm")
            members = len(net.containers())
        net.remove()
        print(json.dumps({"failures": failures, "members": members}))
        """,
        timeout=300,
    )
    assert out == {"failures": [], "members": 0}
    assert _joined_links(lab) == []


def test_a_container_without_a_network_joins_the_default_bridge(lab):
    """connect("bridge") of a Network.NONE container: refused as "on network 'bridge'
    already" (the default bridge was taken for its own network)."""
    out = lab.run(
        """
        with sb.Container(network=sb.Network.NONE) as c:
            address = c.connect("bridge")
            shown = c.run(["sh", "-c", "ip -o -4 addr show eth1"], stdout=sb.PIPE).stdout.decode()
            c.disconnect("bridge")
        print(json.dumps({"address": address, "shown": shown}))
        """
    )
    assert out["address"] and out["address"] in out["shown"]
    assert _joined_links(lab) == []
