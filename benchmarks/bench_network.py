"""Networking costs (issue 19), measured inside a network namespace of its own
(the script re-runs itself under ``unshare --net --mount``: the bridges, veths,
nft tables and iptables rules of every tool are made there and vanish with
it; no traffic leaves the machine; tmpfs on /run and /var/lib, in that mount
namespace, hold the peers' netns files and CNI's result cache):

- start-to-exit of ``sb.run(["/bin/true"])`` with ``network="bridge"`` vs ``"none"``, interleaved
  with the kernel's floor: a forked child in a new network namespace that exits, with and
  without a veth pair on the bridge and eth0's address, state and route (the same requests);
- the peers' bridge vs none, side by side with ours: ``podman run --network
  bridge`` (private --root/--runroot and network config dir: CNI's bridge
  plugin, its host-local leases in our temporary directory) and ``docker run``
  on the bridge of a private dockerd (``--bip``, its own data root);
- rootless (as tests/rootless.py's unprivileged user): pasta and a named
  network's tap (the per-user namespace) vs none;
- TCP throughput (iperf3, 3 s): container -> the host's bridge address vs the
  host's loopback, and host -> a port published on 127.0.0.1 (the userland proxy).

    python benchmarks/bench_network.py [--rounds N] [--peer-rounds N] [--no-peers] [--rootless-rounds N]

Targets (issue 19): bridge adds at most 1 ms as root, 5 ms rootless; veth throughput at least 0.9x loopback.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import ipaddress
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # (the checkout, as run_all.py)
import _common
import engines
import peers

import sandboxlib as sb
from sandboxlib.network import bridge

TRUE = ["/bin/true"]
HERE = os.path.dirname(os.path.abspath(__file__))
TUN = "/dev/net/tun"
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


UNIFIED = "/sys/fs/cgroup/unified"  # (crun refuses a controller-less v2 mount in a hybrid layout: run_all.py)
CNI_PODMAN = {
    "cniVersion": "0.4.0",
    "name": "podman",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni-podman0",
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "tuning"},
    ],
}


class Peers:
    """podman and a private dockerd, made in this network namespace (their
    bridges too), or why they cannot run."""

    def __init__(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="sbxbench-net-")
        os.chmod(self.workdir, 0o755)  # container root (host uid 1000000000) reads the rootfs in it
        rootfs = peers.busybox_rootfs(os.path.join(self.workdir, "rootfs"))
        tar = peers.import_tar(rootfs, os.path.join(self.workdir, "rootfs.tar"))
        pid = os.getpid()
        self.why: list = []
        self.podman, why = peers.optional(engines.Podman, self.workdir, tar, f"/sbxbench{pid}-podman")
        if self.podman is not None:  # the default network's config, its leases in our directory
            ipam = CNI_PODMAN["plugins"][0]["ipam"]
            ipam["dataDir"] = os.path.join(self.workdir, "podman", "cni")
            os.makedirs(os.path.join(self.workdir, "podman", "net"), exist_ok=True)
            with open(os.path.join(self.workdir, "podman", "net", "podman.conflist"), "w") as f:
                json.dump(CNI_PODMAN, f)
        else:
            self.why.append(f"podman: {why}")
        self.docker, why = peers.optional(engines.Docker, self.workdir, tar, f"/sbxbench{pid}-docker", "10.199.0.1/24")
        if self.docker is None:
            self.why.append(f"docker: {why}")

    def workloads(self) -> dict:
        found = {}
        for engine in (self.podman, self.docker):
            if engine is None:
                continue
            for mode in ("none", "bridge"):
                argv = engine.run_argv()
                argv[argv.index("--network") + 1] = mode
                routes = argv[:-1] + ["/bin/cat", "/proc/net/route"]  # (checked once: the mode is what it says)
                out = subprocess.run(routes, capture_output=True, text=True, env=engine.env, check=True).stdout
                assert (len(out.splitlines()) > 1) == (mode == "bridge"), f"{engine.name} --network {mode}: {out}"
                found[f"{engine.name} run --rm --network {mode} /bin/true"] = functools.partial(
                    subprocess.run,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=engine.env,
                    check=True,
                )
        return found

    def close(self) -> None:
        for engine in (self.docker, self.podman):
            if engine is not None:
                engine.close()
        pid = os.getpid()
        peers.remove_cgroups(f"sbxbench{pid}-*")
        peers.unmount_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def peer_rows(rounds: int) -> None:
    """Ours and the peers' bridge vs none, interleaved (the peers take 0.1-0.5 s a run: fewer rounds)."""
    made = Peers()
    try:
        work = {
            'sb.run(/bin/true, network="none")': lambda: sb.run(TRUE),
            'sb.run(/bin/true, network="bridge")': lambda: sb.run(TRUE, network="bridge"),
            **made.workloads(),
        }
        times = _common.interleaved(work, rounds=rounds, warmup=3)
    finally:
        made.close()
    print(f"\n### The peers, bridge vs none ({rounds} interleaved rounds, load {os.getloadavg()[0]:.1f})\n")
    print("| workload | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|")
    p50 = {}
    for name, values in times.items():
        p = _common.percentiles(values)
        p50[name] = p[0]
        print(f"| {name} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
    names = list(p50)
    print()
    for none, bridged in zip(names[0::2], names[1::2]):
        tool = none.split()[0].split("(")[0]
        print(f"- {tool}: bridge adds {p50[bridged] - p50[none]:.2f} ms ({p50[bridged] / p50[none]:.2f}x)")
    for why in made.why:
        print(f"- not measured: {why}")
    print(
        "- not measured: rootless podman (pasta or slirp4netns): "
        f"{_common.tool_version(['podman', '--version'])} predates its pasta mode (podman 4.4), and "
        + ("slirp4netns is not installed here" if shutil.which("slirp4netns") is None else "slirp4netns is untried")
        + "\n"
    )


ROOTLESS = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import _common
import sandboxlib as sb
net = sb.Network.create("benchnet")
try:
    times = _common.interleaved(
        {
            'rootless sb.run(/bin/true, network="none")': lambda: sb.run(["/bin/true"]),
            'rootless sb.run(/bin/true, network="bridge") (pasta)': lambda: sb.run(["/bin/true"], network="bridge"),
            "rootless sb.run(/bin/true, network=named) (per-user namespace, tap)": lambda: sb.run(
                ["/bin/true"], network=net
            ),
        },
        rounds=int(sys.argv[2]),
        warmup=3,
    )
finally:
    net.remove()
print(json.dumps(times))
"""


def rootless_rows(rounds: int) -> None:
    """Ours rootless, as the test suite's unprivileged user (tests/rootless.py):
    pasta and the per-user namespace's tap vs none.  /dev/net/tun gets the
    distributions' 0666 meanwhile (restored); this namespace gets an
    uplink (a veth pair) with a default route (pasta copies the host's outbound interface)."""
    from tests.rootless import USERS, ensure_user, launcher

    user = ensure_user("sbxtest", USERS["sbxtest"])
    os.environ.setdefault("SANDBOXLIB_TESTS_PATH", os.path.dirname(HERE))
    state = tempfile.mkdtemp(prefix="sbxbench-rootless-")
    os.chmod(state, 0o700)
    os.chown(state, user.pw_uid, user.pw_gid)
    for argv in (
        ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-end"],  # (no dummy module here)
        ["ip", "addr", "add", "198.51.100.1/24", "dev", "uplink"],
        ["ip", "link", "set", "uplink-end", "up"],
        ["ip", "link", "set", "uplink", "up"],
        ["ip", "route", "add", "default", "via", "198.51.100.2"],
    ):
        subprocess.run(argv, check=True)
    mode = os.stat(TUN).st_mode & 0o777
    os.chmod(TUN, 0o666)
    try:
        argv = launcher(user, ["env", f"SANDBOXLIB_RUN={state}", sys.executable, "-c", ROOTLESS, HERE, str(rounds)])
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        os.chmod(TUN, mode)
        shutil.rmtree(state, ignore_errors=True)
    if done.returncode != 0:
        print(f"\n- rootless: not measured ({done.stderr.strip().splitlines()[-1:]})\n")
        return
    times = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n### Rootless ({rounds} interleaved rounds, load {os.getloadavg()[0]:.1f})\n")
    print("| workload | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|")
    p50 = []
    for name, values in times.items():
        p = _common.percentiles(values)
        p50.append(p[0])
        print(f"| {name} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
    print(
        f"\npasta adds **{p50[1] - p50[0]:.2f} ms** ({p50[1] / p50[0]:.2f}x; target: at most 5 ms); "
        f"a named network's tap adds {p50[2] - p50[0]:.2f} ms ({p50[2] / p50[0]:.2f}x).\n"
    )


def enter_namespaces() -> None:
    """Re-run in a network and a private mount namespace of our own (lo up, /run and /var/lib tmpfs)."""
    if os.environ.get("SBX_BENCH_NETNS") != "1":
        env = {**os.environ, "SBX_BENCH_NETNS": "1"}
        # (/var/lib: CNI's result cache, /var/lib/cni, has no option of podman's to move it)
        shell = 'ip link set lo up && for d in /run /var/lib; do mount -t tmpfs -o mode=755 tmpfs $d; done && exec "$@"'
        command = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", shell, "-"]
        sys.exit(subprocess.call([*command, sys.executable, *sys.argv], env=env))
    if os.path.ismount(UNIFIED):
        subprocess.run(["umount", UNIFIED], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--peer-rounds", type=int, default=30)
    parser.add_argument("--no-peers", action="store_true", help="without podman and docker")
    parser.add_argument("--rootless-rounds", type=int, default=100, help="0: not rootless")
    args = parser.parse_args()
    enter_namespaces()
    # (on the disk, as this machine's /run is, not on the tmpfs over /run here)
    os.environ["SANDBOXLIB_RUN"] = tempfile.mkdtemp(prefix="sandboxlib-bench-net-")
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
    if not args.no_peers:
        peer_rows(args.peer_rounds)
    if args.rootless_rounds:
        rootless_rows(args.rootless_rounds)
    rows = throughput()
    print("| TCP, iperf3 3 s | Gbit/s | ratio |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x loopback |")
    subprocess.run(["rm", "-rf", os.environ["SANDBOXLIB_RUN"]], check=False)


if __name__ == "__main__":
    main()
