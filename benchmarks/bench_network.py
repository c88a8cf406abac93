"""Networking costs (issue 19), measured inside a network namespace of its own
(the script re-runs itself under ``unshare --net``: the bridge, veths and nft
table are made there and vanish with it; no traffic leaves the machine):

- start-to-exit of ``sb.run(["/bin/true"])`` with ``network="bridge"`` vs ``"none"``, interleaved;
- TCP throughput (iperf3, 3 s): container -> the host's bridge address vs the
  host's loopback, and host -> a port published on 127.0.0.1 (the userland proxy).

    python benchmarks/bench_network.py [--rounds N]

Targets (issue 19): bridge adds at most 1 ms as root; veth throughput at least 0.9x loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import sandboxlib as sb

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
    none, bridge = p50.values()
    print(
        f"\nbridge adds **{bridge - none:.3f} ms** at p50 ({bridge / none:.2f}x; target: at most 1 ms). "
        f"{args.rounds} interleaved rounds.\n"
    )
    rows = throughput()
    print("| TCP, iperf3 3 s | Gbit/s | ratio |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x loopback |")
    subprocess.run(["rm", "-rf", os.environ["SANDBOXLIB_RUN"]], check=False)


if __name__ == "__main__":
    main()
