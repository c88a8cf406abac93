"""Networking costs (issue 19), measured inside a network namespace of its own
(the script re-runs itself under ``unshare --net``: the bridge, veths and nft
table are made there and vanish with it; no traffic leaves the machine):

- start-to-exit of ``sb.run(["/bin/true"])`` with ``network="bridge"`` vs ``"none"``, interleaved
  with the kernel's floor: a forked child in a new network namespace that exits, with and
  without a veth pair on the bridge and eth0's address, state and route (the same requests);
- TCP throughput (iperf3, 3 s): container -> the host's bridge address vs the
  host's loopback, and host -> a port published on 127.0.0.1 (the userland proxy).

    python benchmarks/bench_network.py [--rounds N]

Targets (issue 19): bridge adds at most 1 ms as root; veth throughput at least 0.9x loopback.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import itertools
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb
from sandboxlib.network import bridge

TRUE = ["/bin/true"]
IPERF = "/usr/bin/iperf3"


def iperf_client(run, address: str, port: int) -> float:
    """Gbit/s received over 3 s."""
    out = run([IPERF, "-c", address, "-p", str(port), "-t", "3", "-J"])
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def host_run(argv) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def throughput() -> list:
    rows = []
    server = subprocess.Popen([IPERF, "-s", "-p", "5201"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        rows.append(("host -> 127.0.0.1 (loopback)", iperf_client(host_run, "127.0.0.1", 5201)))
        with sb.Container(network="bridge") as c:

            def inside(argv):
                return c.run(argv, stdout=sb.PIPE, check=True).stdout.decode()

            rows.append(("container -> host's bridge address (veth)", iperf_client(inside, "172.17.0.1", 5201)))
    finally:
        server.kill()
        server.wait()
    with sb.Container(network="bridge", ports={0: 5201}) as c:
        srv = c.spawn([IPERF, "-s", "-p", "5201"], stdout=sb.DEVNULL)
        time.sleep(0.5)
        address, port = c.ports["5201/tcp"]
        rows.append(("host -> published 127.0.0.1 port (userland proxy)", iperf_client(host_run, address, port)))
        srv.kill()
        srv.wait()
    return rows


CLONE_NEWNET = 0x40000000
_unshare = ctypes.CDLL(None, use_errno=True).unshare
_numbers = itertools.count()


def netns_child(veth: bool) -> None:
    """Fork a child that enters a new network namespace; optionally give it
    eth0 on sbx0 (a veth named afresh: the last one's deletion is asynchronous); let it exit."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _unshare(CLONE_NEWNET)
        os.write(ready_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    if veth:
        n = next(_numbers)
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        address = ipaddress.IPv4Interface(f"172.17.{200 + n % 50}.{2 + n // 50 % 250}/16")
        bridge.connect_veth(f"vflr{n}", socket.if_nametoindex("sbx0"), fd, address, ipaddress.IPv4Address("172.17.0.1"))
        os.close(fd)
    os.write(go_w, b"x")
    os.waitpid(pid, 0)
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if os.environ.get("SBX_BENCH_NETNS") != "1":
        env = {**os.environ, "SBX_BENCH_NETNS": "1"}
        command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "-", sys.executable, *sys.argv]
        sys.exit(subprocess.call(command, env=env))
    os.environ["SANDBOXLIB_RUN"] = f"/run/sandboxlib-bench-net-{os.getpid()}"
    times = _common.interleaved(
        {
            'sb.run(/bin/true, network="none")': lambda: sb.run(TRUE),
            'sb.run(/bin/true, network="bridge")': lambda: sb.run(TRUE, network="bridge"),
            "floor: fork, new netns, exit": lambda: netns_child(False),
            "floor: fork, new netns, veth + eth0 address/route (connect_veth), exit": lambda: netns_child(True),
        },
        rounds=args.rounds,
    )
    print(f"## bench_network: bridge vs none, TCP throughput ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {_common.machine()}\n")
    print("| workload | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|")
    p50 = {}
    for name, values in times.items():
        p = _common.percentiles(values)
        p50[name] = p[0]
        print(f"| {name} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
    none, bridge, bare, veth = p50.values()
    print(
        f"\nbridge adds **{bridge - none:.3f} ms** at p50 ({bridge / none:.2f}x; target: at most 1 ms); "
        f"the kernel's floor for the veth pair and eth0 (made, configured and torn down) is "
        f"{veth - bare:.3f} ms, leaving {bridge - none - (veth - bare):.3f} ms that is ours. "
        f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f}.\n"
    )
    rows = throughput()
    print("| TCP, iperf3 3 s | Gbit/s | ratio |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x loopback |")
    subprocess.run(["rm", "-rf", os.environ["SANDBOXLIB_RUN"]], check=False)


if __name__ == "__main__":
    main()
