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


def test_released_slot_and_dead_owner(tmp_path):
    leases = str(tmp_path / "leases")
    first = ipam.lease_address(leases, SUBNET, {"id": "a"})
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
                lease = ipam.lease_address({leases!r}, ipaddress.IPv4Network("{SUBNET}"), {{"id": "b"}})
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
    second = ipam.lease_address(leases, SUBNET, {"id": "c"})
    assert str(second.address) == "10.9.0.3"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdin.close(), holder.stdout.close()
    assert ipam.reap(leases) == [{"id": "b", "address": "10.9.0.2"}]
    assert [r["id"] for r in ipam.leases(leases)] == ["c"]
    again = ipam.lease_address(leases, SUBNET, {"id": "d"})
    assert str(again.address) == "10.9.0.2"
    again.release(), second.release()


def test_a_wanted_address(tmp_path):
    """``wanted`` (Docker's ``--ip``): that address or a ConfigError, never another one."""
    import pytest

    from sandboxlib.errors import ConfigError

    leases = str(tmp_path / "leases")
    fixed = ipam.lease_address(leases, SUBNET, {"id": "a"}, wanted="10.9.0.5")
    assert str(fixed.address) == "10.9.0.5"
    other = ipam.lease_address(leases, SUBNET, {"id": "b"})
    assert str(other.address) == "10.9.0.2"  # the first free one
    with pytest.raises(ConfigError, match="10.9.0.5 is in use"):
        ipam.lease_address(leases, SUBNET, {"id": "c"}, wanted="10.9.0.5")
    for bad in ("10.9.0.1", "10.9.0.7", "10.9.1.3"):  # the gateway, the broadcast address, outside
        with pytest.raises(ConfigError, match="not a free host address"):
            ipam.lease_address(leases, SUBNET, {"id": "c"}, wanted=bad)
    fixed.release()
    again = ipam.lease_address(leases, SUBNET, {"id": "c"}, wanted="10.9.0.5")
    assert str(again.address) == "10.9.0.5"
    again.release()
    other.release()
