"""Leases (sandboxlib/network/ipam.py) across processes: a released lease is
a free slot (not a dead owner's), a killed holder's is reaped with its
record, and either address is given out again."""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap

from sandboxlib.network import ipam

SUBNET = ipaddress.IPv4Network("10.9.0.0/29")
POOL = ipam.Pool(SUBNET)


def test_released_slot_and_dead_owner(tmp_path):
    leases = str(tmp_path / "leases")
    first = ipam.lease_address(leases, POOL, {"id": "a"})
    assert str(first.address) == "10.9.0.2"
    assert [r["id"] for r in ipam.leases(leases)] == ["a"]
    first.release()
    assert list(ipam.leases(leases)) == [] and ipam.reap(leases) == []  # a free slot, not a dead owner's
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from sandboxlib.network import ipam
                import ipaddress
                lease = ipam.lease_address({leases!r}, ipam.Pool(ipaddress.IPv4Network("{SUBNET}")), {{"id": "b"}})
                print(lease.address, flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ),  # (dev runs: conftest put the checkout in PYTHONPATH)
    )
    assert holder.stdout.readline().strip() == b"10.9.0.2"  # the slot taken over
    second = ipam.lease_address(leases, POOL, {"id": "c"})
    assert str(second.address) == "10.9.0.3"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdin.close(), holder.stdout.close()
    assert ipam.reap(leases) == [{"id": "b", "address": "10.9.0.2"}]
    assert [r["id"] for r in ipam.leases(leases)] == ["c"]
    again = ipam.lease_address(leases, POOL, {"id": "d"})
    assert str(again.address) == "10.9.0.2"
    again.release(), second.release()


def test_a_wanted_address(tmp_path):
    """``wanted`` (Docker's ``--ip``): that address or a ConfigError, never another one."""
    import pytest

    from sandboxlib.errors import ConfigError

    leases = str(tmp_path / "leases")
    fixed = ipam.lease_address(leases, POOL, {"id": "a"}, wanted="10.9.0.5")
    assert str(fixed.address) == "10.9.0.5"
    other = ipam.lease_address(leases, POOL, {"id": "b"})
    assert str(other.address) == "10.9.0.2"  # the first free one
    with pytest.raises(ConfigError, match="10.9.0.5 is in use"):
        ipam.lease_address(leases, POOL, {"id": "c"}, wanted="10.9.0.5")
    for bad in ("10.9.0.1", "10.9.0.7", "10.9.1.3"):  # the gateway, the broadcast address, outside
        with pytest.raises(ConfigError, match="not a free host address"):
            ipam.lease_address(leases, POOL, {"id": "c"}, wanted=bad)
    fixed.release()
    again = ipam.lease_address(leases, POOL, {"id": "c"}, wanted="10.9.0.5")
    assert str(again.address) == "10.9.0.5"
    again.release()
    other.release()


def test_a_pool_of_docker_ipam(tmp_path):
    """A gateway other than the first host, a range for dynamic leases, reserved
    (auxiliary) addresses: none of them given out dynamically; a wanted address
    anywhere in the subnet but those."""
    import pytest

    from sandboxlib.errors import ConfigError

    leases = str(tmp_path / "leases")
    pool = ipam.Pool(
        ipaddress.IPv4Network("10.9.0.0/24"),
        ipaddress.IPv4Address("10.9.0.6"),
        ip_range=ipaddress.IPv4Network("10.9.0.4/30"),
        reserved=frozenset({ipaddress.IPv4Address("10.9.0.5")}),
    )
    first = ipam.lease_address(leases, pool, {"id": "a"})
    second = ipam.lease_address(leases, pool, {"id": "b"})
    assert (str(first.address), str(second.address)) == ("10.9.0.4", "10.9.0.7")  # .5 reserved, .6 the gateway
    with pytest.raises(ConfigError, match="no free address left in 10.9.0.4/30"):
        ipam.lease_address(leases, pool, {"id": "c"})
    outside = ipam.lease_address(leases, pool, {"id": "c"}, wanted="10.9.0.1")  # (outside the range, in the subnet)
    assert str(outside.address) == "10.9.0.1"
    for bad in ("10.9.0.5", "10.9.0.6"):
        with pytest.raises(ConfigError, match="not a free host address") as caught:
            ipam.lease_address(leases, pool, {"id": "d"}, wanted=bad)
        assert caught.value.field == "address"
    for lease in (first, second, outside):
        lease.release()


def test_ipv6_addresses_fixed_and_at_the_offset(tmp_path):
    """A dynamic IPv6 address is at the IPv4 one's offset in the IPv6 range; a
    fixed one is any free host address of the IPv6 subnet; no two live leases
    share one (a dynamic lease skips the IPv4 address whose IPv6 one is held),
    nor is one the gateway's."""
    import pytest

    from sandboxlib.errors import ConfigError

    leases = str(tmp_path / "leases")
    pool = ipam.Pool(
        SUBNET,
        subnet6=ipaddress.IPv6Network("fd00:9::/64"),
        gateway6=ipaddress.IPv6Address("fd00:9::3"),
        ip_range6=ipaddress.IPv6Network("fd00:9::/96"),
    )
    fixed = ipam.lease_address(leases, pool, {"id": "a"}, wanted6="fd00:9::4")
    assert (str(fixed.address), fixed.address6) == ("10.9.0.2", "fd00:9::4")
    dynamic = ipam.lease_address(leases, pool, {"id": "b"})  # .3's is the gateway's, .4's is held
    assert (str(dynamic.address), dynamic.address6) == ("10.9.0.5", "fd00:9::5")
    assert {r["id"]: r["address6"] for r in ipam.leases(leases)} == {"a": "fd00:9::4", "b": "fd00:9::5"}
    for bad, message in (("fd00:9::5", "in use"), ("fd00:9::3", "not a free host address"), ("fd00:8::1", "not a")):
        with pytest.raises(ConfigError, match=message) as caught:
            ipam.lease_address(leases, pool, {"id": "c"}, wanted6=bad)
        assert caught.value.field == "address6"
    with pytest.raises(ConfigError, match="no IPv6 subnet"):
        ipam.lease_address(leases, POOL, {"id": "c"}, wanted6="fd00:9::8")
    with pytest.raises(ConfigError, match="its IPv6 address fd00:9::4 is in use") as caught:
        ipam.lease_address(leases, pool, {"id": "c"}, wanted="10.9.0.4")  # (its offset's IPv6 is a fixed one)
    assert caught.value.field == "address"
    fixed.release()
    again = ipam.lease_address(leases, pool, {"id": "c"}, wanted6="fd00:9::4")  # released: free again
    assert again.address6 == "fd00:9::4"
    again.release(), dynamic.release()


def test_mac_of_is_dockers():
    assert ipam.mac_of(ipaddress.IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
