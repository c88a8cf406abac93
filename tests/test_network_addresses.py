"""Docker's IPAM on named networks and a container's own addresses (as root,
and rootless where the per-user namespace allows): a gateway other than the
subnet's first address, an IP range for dynamic addresses, reserved
(auxiliary) addresses never given out, IPv6's gateway and range; a fixed
IPv6 address, a MAC address and link-local addresses on ``eth0`` and on a
joined ``ethN``; bad input a ConfigError naming the field before anything is
made.  In the namespaces of tests/netlab.py."""

import json

import pytest

from .netlab import Lab
from .rootless import USERS, ensure_user

PY = "/usr/bin/python3"
SERVE6 = (
    "import socket; s = socket.create_server(('::', 80), family=socket.AF_INET6); print('up', flush=True)\n"
    "c, peer = s.accept(); c.sendall(('pong ' + peer[0]).encode())"
)
FETCH6 = (
    "import socket, sys\n"
    "try: print(socket.create_connection((sys.argv[1], 80), timeout=3).recv(100).decode())\n"
    "except OSError as e: print(type(e).__name__)\n"
)

# A network whose dynamic addresses come from 10.97.5.0/24 (not .1-.3: reserved),
# gateway 10.97.5.254; IPv6 gateway fd00:97::ffff, dynamic IPv6 at the offset in fd00:97::/96.
NETWORK = """
        net = sb.Network.create(
            "ipam", subnet="10.97.0.0/16", ip_range="10.97.5.0/24", gateway="10.97.5.254",
            aux_addresses={"a": "10.97.5.1", "b": "10.97.5.2", "c": "10.97.5.3"},
            subnet6="fd00:97::/64", gateway6="fd00:97::ffff", ip_range6="fd00:97::/96",
        )
        def show(c, *argv):
            return c.run(list(argv), stdout=sb.PIPE).stdout.decode()
        found = {"network": {k: v for k, v in net.inspect().items() if k != "containers"}}
"""

POOL = (
    NETWORK
    + f"""
        with sb.Container(network=net, name="first") as first:
            found["address"] = show(first, "ip", "-o", "-4", "addr", "show", "eth0").split()[3]
            found["address6"] = show(first, "ip", "-o", "-6", "addr", "show", "eth0", "scope", "global").split()[3]
            found["route"] = show(first, "ip", "route")
            found["route6"] = show(first, "ip", "-6", "route", "show", "default")
            found["resolv"] = show(first, "cat", "/etc/resolv.conf")
            found["endpoints"] = {{
                k: [v.address, v.gateway, v.address6, v.gateway6, v.mac_address] for k, v in first.endpoints.items()
            }}
            with sb.Container(network=net) as second:
                srv = second.spawn(["{PY}", "-c", {SERVE6!r}], stdout=sb.PIPE)
                srv.stdout.readline()
                joined = first.connect("ipam6", address6="fd00:98::f00d")
                found["joined6"] = show(first, "ip", "-o", "-6", "addr", "show", "eth1", "scope", "global").split()[3]
                second6 = second.endpoints["ipam"].address6.split("/")[0]
                found["fetch"] = show(first, "{PY}", "-c", {FETCH6!r}, second6).strip()
                found["second6"] = second6
                found["second"] = second.endpoints["ipam"].address
        net.remove(), sb.Network.get("ipam6").remove()
        print(json.dumps(found))
"""
)


def _other_network() -> str:
    return '        sb.Network.create("ipam6", subnet="10.98.0.0/24", subnet6="fd00:98::/64")\n'


def _check_pool(out: dict) -> None:
    assert out["network"]["gateway"] == "10.97.5.254" and out["network"]["ip_range"] == "10.97.5.0/24"
    assert out["network"]["aux_addresses"] == {"a": "10.97.5.1", "b": "10.97.5.2", "c": "10.97.5.3"}
    assert out["network"]["gateway6"] == "fd00:97::ffff" and out["network"]["ip_range6"] == "fd00:97::/96"
    assert out["address"] == "10.97.5.0/16"  # the range's first (a host address of the /16, as Docker gives it)
    assert out["address6"] == "fd00:97::500/64"  # at its IPv4 address's offset (0x500) in the IPv6 range
    assert "default via 10.97.5.254" in out["route"]
    assert "default via fd00:97::ffff" in out["route6"]
    assert "nameserver 10.97.5.254" in out["resolv"]  # the network's resolver is on the gateway
    address, gateway, address6, gateway6, _ = out["endpoints"]["ipam"]
    assert (address, gateway, address6, gateway6) == ("10.97.5.0/16", "10.97.5.254", "fd00:97::500/64", "fd00:97::ffff")
    assert out["second"] == "10.97.5.4/16"  # after the reserved .1-.3
    assert out["joined6"] == "fd00:98::f00d/64"
    assert out["fetch"] == "pong " + out["address6"].split("/")[0]  # over IPv6 through the custom gateway's bridge


@pytest.fixture(scope="module")
def lab():
    made = Lab()
    yield made
    made.close()


@pytest.fixture(scope="module")
def rootless_lab():
    made = Lab()  # (its user's /dev/net/tun is the lab's node of mode 0666: a rootless tap is opened as its owner)
    try:
        yield made
    finally:
        made.close()


def test_ipam_of_a_named_network(lab):
    out = lab.run(_other_network() + POOL)
    _check_pool(out)
    address, _, _, _, mac = out["endpoints"]["ipam"]
    assert mac == "02:42:0a:61:05:00"  # Docker's: 02:42 and the IPv4 address


def test_rootless_ipam_of_a_named_network(rootless_lab):
    user = ensure_user("sbxtest", USERS["sbxtest"])
    out = rootless_lab.run(_other_network() + POOL, user=user)
    _check_pool(out)
    assert out["endpoints"]["ipam"][4] == "02:42:0a:61:05:00"  # the tap's, set from inside


OWN = (
    NETWORK
    + """
        sb.Network.create("side", subnet="10.99.0.0/24")
        endpoint = sb.Network.bridge(
            network=net, address="10.97.0.9", address6="fd00:97::f00d", mac_address="02:42:0A:61:00:99",
            link_local=["169.254.8.8", "fe80::8"],
        )
        with sb.Container(network=endpoint, name="fixed") as fixed, sb.Container(network=net) as other:
            found["eth0"] = show(fixed, "ip", "-o", "addr", "show", "eth0")
            found["link"] = show(fixed, "ip", "-o", "link", "show", "eth0")
            found["endpoint"] = fixed.endpoints["ipam"].mac_address
            found["aaaa"] = show(other, "getent", "ahostsv6", "fixed").split()[0]
            refused = {}
            for key, make in {
                "in_use6": lambda: sb.run(["true"], network=sb.Network.bridge(network=net, address6="fd00:97::f00d")),
                "gateway6": lambda: sb.run(["true"], network=sb.Network.bridge(network=net, address6="fd00:97::ffff")),
                "aux": lambda: sb.run(["true"], network=sb.Network.bridge(network=net, address="10.97.5.2")),
                "join_link_local": lambda: other.connect("bridge", mac_address="02:42:00:00:00:01", link_local=["x"]),
            }.items():
                try:
                    make()
                    refused[key] = "no error"
                except sb.ConfigError as err:
                    refused[key] = err.field
            found["refused"] = refused
            other.connect("side", mac_address="02:42:00:00:00:01", link_local=["169.254.9.9"])
            found["eth1"] = show(other, "ip", "-o", "addr", "show", "eth1")
            found["eth1_link"] = show(other, "ip", "-o", "link", "show", "eth1")
            found["side"] = other.endpoints["side"].mac_address
        net.remove(), sb.Network.get("side").remove()
        try:  # (rootless: on the default network, pasta's, there is no interface of ours to set)
            sb.run(["true"], network=sb.Network.bridge(mac_address="02:42:00:00:00:02"))
            found["default"] = "ran"
        except sb.UnsupportedError as err:
            found["default"] = "unsupported"
        print(json.dumps(found))
        """
)


def test_a_containers_own_addresses_mac_and_link_local(lab):
    out = lab.run(OWN)
    _check_own(out)
    assert out["default"] == "ran"


def test_rootless_own_addresses_mac_and_link_local(rootless_lab):
    out = rootless_lab.run(OWN, user=ensure_user("sbxtest", USERS["sbxtest"]))
    _check_own(out)
    assert out["default"] == "unsupported"


def _check_own(out: dict) -> None:
    for address in ("inet 10.97.0.9/16", "inet 169.254.8.8/32", "inet6 fd00:97::f00d/64", "inet6 fe80::8/128"):
        assert address in out["eth0"]
    assert "link/ether 02:42:0a:61:00:99" in out["link"] and out["endpoint"] == "02:42:0a:61:00:99"
    assert out["aaaa"] == "fd00:97::f00d"  # its name answers its fixed IPv6 address
    assert out["refused"] == {
        "in_use6": "address6",
        "gateway6": "address6",
        "aux": "address",
        "join_link_local": "link_local[0]",
    }
    assert "inet 169.254.9.9/32" in out["eth1"] and "link/ether 02:42:00:00:00:01" in out["eth1_link"]
    assert out["side"] == "02:42:00:00:00:01"


def test_bad_addresses_are_config_errors_before_anything(lab):
    out = lab.run(
        """
        found = {}
        for key, make in {
            "gateway_outside": lambda: sb.Network.create("bad", subnet="10.96.0.0/24", gateway="10.96.1.1"),
            "gateway_broadcast": lambda: sb.Network.create("bad", subnet="10.96.0.0/24", gateway="10.96.0.255"),
            "gateway_no_subnet": lambda: sb.Network.create("bad", gateway="10.96.0.9"),
            "range_outside": lambda: sb.Network.create("bad", subnet="10.96.0.0/24", ip_range="10.96.0.0/23"),
            "range_malformed": lambda: sb.Network.create("bad", subnet="10.96.0.0/24", ip_range="10.96.0.0/33"),
            "aux_gateway": lambda: sb.Network.create(
                "bad", subnet="10.96.0.0/24", gateway="10.96.0.9", aux_addresses={"r": "10.96.0.9"}
            ),
            "aux_outside": lambda: sb.Network.create("bad", subnet="10.96.0.0/24", aux_addresses={"r": "10.9.0.9"}),
            "gateway6_outside": lambda: sb.Network.create("bad", subnet6="fd00:96::/64", gateway6="fd00:95::1"),
            "range6_small": lambda: sb.Network.create(
                "bad", subnet="10.96.0.0/16", subnet6="fd00:96::/64", ip_range6="fd00:96::/120"
            ),
            "mac_multicast": lambda: sb.Network.bridge(mac_address="01:00:5e:00:00:01"),
            "mac_malformed": lambda: sb.Network.bridge(mac_address="02:42:ac:11:00"),
            "link_local": lambda: sb.Network.bridge(link_local=["10.0.0.1"]),
            "address6_default": lambda: sb.Network.bridge(address6="fd00::1"),
        }.items():
            try:
                make()
                found[key] = "no error"
            except sb.ConfigError as err:
                found[key] = err.field
        found["left"] = [n.name for n in sb.Network.list()]
        print(json.dumps(found))
        """
    )
    assert out.pop("left") == []
    assert out == {
        "gateway_outside": "gateway",
        "gateway_broadcast": "gateway",
        "gateway_no_subnet": "gateway",
        "range_outside": "ip_range",
        "range_malformed": "ip_range",
        "aux_gateway": "aux_addresses['r']",
        "aux_outside": "aux_addresses['r']",
        "gateway6_outside": "gateway6",
        "range6_small": "ip_range6",
        "mac_multicast": "mac_address",
        "mac_malformed": "mac_address",
        "link_local": "link_local[0]",
        "address6_default": "address6",
    }


def test_cli_network_create_with_ipam_options(lab):
    out = lab.run(
        """
        import subprocess
        def cli(*args):
            done = subprocess.run([sys.executable, "-m", "sandboxlib", *args], capture_output=True, text=True)
            return [done.returncode, done.stdout, done.stderr]
        create = ["network", "create", "clinet", "--subnet", "10.95.0.0/24", "--subnet", "fd00:95::/64"]
        create += ["--gateway", "10.95.0.200", "--gateway", "fd00:95::c8", "--ip-range", "10.95.0.16/28"]
        create += ["--aux-address", "r=10.95.0.16"]
        found = {
            "create": cli(*create),
            "inspect": cli("network", "inspect", "clinet"),
            "run": cli("run", "--network", "clinet", "--", "ip", "route"),
            "bad": cli("network", "create", "bad", "--subnet", "10.94.0.0/24", "--aux-address", "r"),
            "rm": cli("network", "rm", "clinet"),
        }
        print(json.dumps(found))
        """
    )
    assert out["create"][0] == 0, out["create"][2]
    shown = json.loads(out["inspect"][1])[0]
    assert (shown["gateway"], shown["gateway6"], shown["ip_range"]) == ("10.95.0.200", "fd00:95::c8", "10.95.0.16/28")
    assert shown["aux_addresses"] == {"r": "10.95.0.16"}
    assert "default via 10.95.0.200" in out["run"][1] and "10.95.0.17" in out["run"][1]  # after the reserved .16
    assert out["bad"][0] != 0 and "aux_addresses" in out["bad"][2]
    assert out["rm"][0] == 0
