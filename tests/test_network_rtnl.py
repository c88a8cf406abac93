"""The start's netlink requests (sandboxlib/network/rtnl.py): the bytes are
pyroute2's for the same messages, and against the kernel, in network
namespaces this test makes (``unshare --net``), the veth pair, eth0's
address, state and route come out as ``ip`` shows them, refusals raise,
and the calling thread is back in its own namespace whatever happens."""

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from sandboxlib.network import rtnl

NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL


def encoded(message, kind: int, sequence: int, flags: int = NEW) -> bytes:
    message["header"]["type"], message["header"]["flags"] = kind, flags
    message["header"]["sequence_number"] = sequence
    message.encode()
    return bytes(message.data)


def test_requests_are_pyroute2s_encoding():
    veth = ifinfmsg()
    veth["flags"] = veth["change"] = 1
    peer = {"flags": 0, "change": 0, "attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 7)]}
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    veth["attrs"] = [("IFLA_IFNAME", "vsbx0123456789"), ("IFLA_MASTER", 3), ("IFLA_LINKINFO", info)]
    assert rtnl.veth_request(1, "vsbx0123456789", 3, "eth0", 7) == encoded(veth, rtnl.RTM_NEWLINK, 1)
    peer = {**peer, "attrs": [*peer["attrs"], ("IFLA_ADDRESS", "02:42:ac:11:00:02")]}  # a MAC address asked for
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    veth = ifinfmsg()
    veth["flags"] = veth["change"] = 1
    veth["attrs"] = [("IFLA_IFNAME", "vsbx0123456789"), ("IFLA_MASTER", 3), ("IFLA_LINKINFO", info)]
    with_mac = rtnl.veth_request(1, "vsbx0123456789", 3, "eth0", 7, "02:42:ac:11:00:02")
    assert with_mac == encoded(veth, rtnl.RTM_NEWLINK, 1)

    up = ifinfmsg()
    up["index"], up["flags"], up["change"] = 2, 1, 1
    assert rtnl.up_request(2, 2) == encoded(up, rtnl.RTM_NEWLINK, 2, NLM_F_REQUEST | NLM_F_ACK)

    addr = ifaddrmsg()
    addr["family"], addr["prefixlen"], addr["index"] = socket.AF_INET, 16, 2
    addr["attrs"] = [("IFA_LOCAL", "172.17.0.2"), ("IFA_ADDRESS", "172.17.0.2")]
    address = ipaddress.IPv4Interface("172.17.0.2/16")
    assert rtnl.address_request(3, 2, address) == encoded(addr, rtnl.RTM_NEWADDR, 3)

    route = rtmsg()
    route["family"], route["table"], route["proto"], route["type"] = socket.AF_INET, 254, 3, 1
    route["attrs"] = [("RTA_GATEWAY", "172.17.0.1")]
    gateway = ipaddress.IPv4Address("172.17.0.1")
    assert rtnl.default_route_request(4, gateway) == encoded(route, rtnl.RTM_NEWROUTE, 4)

    addr6 = ifaddrmsg()
    addr6["family"], addr6["prefixlen"], addr6["index"], addr6["flags"] = socket.AF_INET6, 64, 2, 2  # nodad
    addr6["attrs"] = [("IFA_LOCAL", "fd00:89::2"), ("IFA_ADDRESS", "fd00:89::2")]
    address6 = ipaddress.IPv6Interface("fd00:89::2/64")
    assert rtnl.address_request(5, 2, address6) == encoded(addr6, rtnl.RTM_NEWADDR, 5)

    route6 = rtmsg()
    route6["family"], route6["table"], route6["proto"], route6["type"] = socket.AF_INET6, 254, 3, 1
    route6["attrs"] = [("RTA_GATEWAY", "fd00:89::1")]
    gateway6 = ipaddress.IPv6Address("fd00:89::1")
    assert rtnl.default_route_request(6, gateway6) == encoded(route6, rtnl.RTM_NEWROUTE, 6)


SCRIPT = textwrap.dedent(
    """
    import ipaddress, os, socket, subprocess
    from sandboxlib.network import bridge, netns

    def run(*argv):
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def own():
        return os.stat("/proc/thread-self/ns/net").st_ino

    def check(pid):
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        before = own()
        address, gateway = ipaddress.IPv4Interface("10.77.0.2/24"), ipaddress.IPv4Address("10.77.0.1")
        ipv6 = ipaddress.IPv6Interface("fd00:77::2/64"), ipaddress.IPv6Address("fd00:77::1")
        bridge.connect_veth("vsbxtest", socket.if_nametoindex("sbxt0"), fd, address, gateway, ipv6=ipv6)
        assert own() == before
        host_end = run("ip", "-o", "link", "show", "vsbxtest")
        assert "master sbxt0" in host_end and ",UP" in host_end, host_end
        inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o"]
        assert ",UP" in run(*inside, "link", "show", "eth0")
        assert "inet 10.77.0.2/24 " in run(*inside, "-4", "addr", "show", "eth0")
        assert run(*inside, "route", "show", "default").startswith("default via 10.77.0.1 dev eth0")
        assert "inet6 fd00:77::2/64 " in run(*inside, "-6", "addr", "show", "eth0")
        assert run(*inside, "-6", "route", "show", "default").startswith("default via fd00:77::1 dev eth0")
        try:  # a name taken: the kernel's refusal, raised
            bridge.connect_veth("vsbxtest", socket.if_nametoindex("sbxt0"), fd, address, gateway)
            raise AssertionError("no error")
        except OSError as err:
            assert err.errno == 17, err
        try:  # no namespace behind the fd: the thread stays in its own
            netns.socket_in(os.open("/dev/null", os.O_RDONLY), socket.AF_NETLINK, socket.SOCK_RAW)
            raise AssertionError("no error")
        except OSError as err:
            assert err.errno == 22, err
        assert own() == before

    run("ip", "link", "add", "sbxt0", "type", "bridge")
    run("ip", "addr", "add", "10.77.0.1/24", "dev", "sbxt0")
    run("ip", "addr", "add", "fd00:77::1/64", "dev", "sbxt0", "nodad")
    run("ip", "link", "set", "sbxt0", "up")
    holder = subprocess.Popen(  # (dies with this script, even killed by a timeout)
        ["setpriv", "--pdeathsig", "KILL", "unshare", "--net", "sh", "-c", "echo; exec sleep infinity"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    holder.stdout.readline()
    try:
        check(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    print("ok")
    """
)


def test_veth_address_and_route_in_namespaces_of_our_own():
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),  # (dev runs: conftest put the checkout in PYTHONPATH)
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr
