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
- TCP throughput (iperf3 3 s, median of --throughput-rounds interleaved runs
  per column): container -> the host's bridge address vs the host's loopback,
  the kernel's floors (a plain veth pair; one on a bridge) and podman's CNI
  bridge; host -> a port published on 127.0.0.1, ours (the userland proxy) vs
  podman's (CNI portmap); rootless, container -> a server in an "outside"
  namespace behind the uplink: ours with pasta and with slirp4netns vs rootless
  podman with slirp4netns (the user's, private storage, iperf3 from the host's
  /usr read-only; podman 4.3.1 has no pasta mode).

    python benchmarks/bench_network.py [--rounds N] [--peer-rounds N] [--no-peers] [--rootless-rounds N]
                                       [--throughput-rounds N] [--only-throughput]

Targets (issue 19): bridge adds at most 1 ms as root, 5 ms rootless; veth throughput at least 0.9x loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import ipaddress
import itertools
import json
import os
import random
import shutil
import socket
import statistics
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


def iperf_rate(out: str) -> float:
    """Gbit/s received, from iperf3 -J's report."""
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def client_argv(address: str, port: int) -> list:
    return [IPERF, "-c", address, "-p", str(port), "-t", "3", "-J"]


def host_run(argv) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


FLOOR_NS = ("sbxfloor", "sbxfloorbr")  # (made with `ip netns`: /run is this mount namespace's tmpfs)


def floor_veths() -> None:
    """The kernel's floors: a plain veth pair (MTU 1500, as ours and the
    peers'), one end in a namespace of its own; the same with the bench's end
    on a bridge holding the address (as ours and podman's)."""
    plain, bridged = FLOOR_NS
    for argv in (
        ["ip", "netns", "add", plain],
        ["ip", "link", "add", "flr0", "type", "veth", "peer", "name", "flr1", "netns", plain],
        ["ip", "addr", "add", "10.77.0.1/24", "dev", "flr0"],
        ["ip", "link", "set", "flr0", "up"],
        ["ip", "-n", plain, "addr", "add", "10.77.0.2/24", "dev", "flr1"],
        ["ip", "-n", plain, "link", "set", "flr1", "up"],
        ["ip", "netns", "add", bridged],
        ["ip", "link", "add", "flrbr", "type", "bridge"],
        ["ip", "addr", "add", "10.78.0.1/24", "dev", "flrbr"],
        ["ip", "link", "set", "flrbr", "up"],
        ["ip", "link", "add", "flrb0", "master", "flrbr", "type", "veth", "peer", "name", "flrb1", "netns", bridged],
        ["ip", "link", "set", "flrb0", "up"],
        ["ip", "-n", bridged, "addr", "add", "10.78.0.2/24", "dev", "flrb1"],
        ["ip", "-n", bridged, "link", "set", "flrb1", "up"],
    ):
        subprocess.run(argv, check=True)


def throughput(rounds: int, podman) -> list:
    """Gbit/s per column, median of ``rounds`` interleaved 3 s iperf3 runs:
    clients into the bench namespace's server (5201, every address) and the
    host's client into servers behind published ports."""
    floor_veths()
    server = subprocess.Popen([IPERF, "-s", "-p", "5201"], stdout=subprocess.DEVNULL)
    stack = contextlib.ExitStack()
    try:
        c = stack.enter_context(sb.Container(network="bridge"))
        published = stack.enter_context(sb.Container(network="bridge", ports={0: 5201}))
        stack.callback(published.spawn([IPERF, "-s", "-p", "5201"], stdout=sb.DEVNULL).kill)
        ours_address, ours_port = published.ports["5201/tcp"]
        work = {
            "host -> 127.0.0.1 (loopback)": lambda: host_run(client_argv("127.0.0.1", 5201)),
            "floor: plain veth pair (netns -> bench namespace)": lambda: host_run(
                ["ip", "netns", "exec", FLOOR_NS[0], *client_argv("10.77.0.1", 5201)]
            ),
            "floor: veth pair on a bridge (netns -> the bridge's address)": lambda: host_run(
                ["ip", "netns", "exec", FLOOR_NS[1], *client_argv("10.78.0.1", 5201)]
            ),
            "sandboxlib: container -> host's bridge address (veth)": lambda: c.run(
                client_argv("172.17.0.1", 5201), stdout=sb.PIPE, check=True
            ).stdout.decode(),
            "sandboxlib: host -> published 127.0.0.1 port (userland proxy)": lambda: host_run(
                client_argv(ours_address, ours_port)
            ),
        }
        if podman is not None:
            work.update(podman_columns(podman, stack))
        time.sleep(0.5)
        for fn in work.values():  # (a server that is not up yet fails here, not in a round)
            iperf_rate(fn())
        rates: dict = {name: [] for name in work}
        order = list(work.items())
        for _ in range(rounds):
            random.shuffle(order)
            for name, fn in order:
                rates[name].append(iperf_rate(fn()))
    finally:
        stack.close()
        server.kill()
        server.wait()
        for name in FLOOR_NS:
            subprocess.run(["ip", "netns", "del", name], check=False)
    return [(name, statistics.median(values), min(values), max(values)) for name, values in rates.items()]


PODMAN_PORT = 15201


def podman_columns(podman, stack: contextlib.ExitStack) -> dict:
    """podman's bridge (CNI) as root: its client to the bridge's gateway, and
    the host's client to a port it publishes (CNI portmap, conmon's port
    reservation); iperf3 from the host's /usr, read-only."""
    argv = podman.run_argv()
    argv[argv.index("--network") + 1] = "bridge"
    usr = ["-v", "/usr:/usr:ro"]
    client = argv[:-2] + usr + argv[-2:-1] + client_argv("10.88.0.1", 5201)
    name = f"sbxbench{os.getpid()}-iperf"
    serve = [*podman.cli, "run", "-d", "--name", name, "--network", "bridge", *podman.run_options(), *usr]
    serve += ["-p", f"127.0.0.1:{PODMAN_PORT}:5201", argv[-2], IPERF, "-s", "-p", "5201"]
    subprocess.run(serve, check=True, capture_output=True, env=podman.env)
    stack.callback(subprocess.run, [*podman.cli, "rm", "-f", name], capture_output=True, env=podman.env)
    return {
        "podman: container -> bridge gateway (CNI bridge)": lambda: (
            subprocess.run(client, check=True, capture_output=True, text=True, env=podman.env).stdout
        ),
        "podman: host -> published 127.0.0.1 port (CNI portmap)": lambda: host_run(
            client_argv("127.0.0.1", PODMAN_PORT)
        ),
    }


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

    def __init__(self, *, docker: bool = True) -> None:
        self.workdir = tempfile.mkdtemp(prefix="sbxbench-net-")
        os.chmod(self.workdir, 0o755)  # container root (host uid 1000000000) reads the rootfs in it
        rootfs = peers.busybox_rootfs(os.path.join(self.workdir, "rootfs"))
        for lib in ("lib", "lib64"):  # (the throughput rows run the host's iperf3 from a read-only /usr)
            os.symlink(f"usr/{lib}", os.path.join(rootfs, lib))
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
        self.docker, why = None, "not asked for"
        if docker:
            self.docker, why = peers.optional(
                engines.Docker, self.workdir, tar, f"/sbxbench{pid}-docker", "10.199.0.1/24"
            )
        if self.docker is None and docker:
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


OUTSIDE = "sbxoutside"  # the namespace behind the uplink (the rootless throughput's server)
ROOTLESS_IPERF = """
import json, os, random, statistics, subprocess, sys
sys.path.insert(0, sys.argv[1])
import sandboxlib as sb
rounds, podman_dir = int(sys.argv[2]), sys.argv[3]
client = ["/usr/bin/iperf3", "-c", "198.51.100.2", "-p", "5201", "-t", "3", "-J"]
containers = {}
for helper in ("pasta", "slirp4netns"):
    os.environ["SANDBOXLIB_ROOTLESS_NETWORK"] = helper
    containers[helper] = sb.Container(network="bridge").__enter__()
env = {**os.environ, "HOME": podman_dir, "XDG_RUNTIME_DIR": podman_dir + "/run",
       "CONTAINERS_CONF": podman_dir + "/containers.conf"}
podman = ["podman", "--root", podman_dir + "/root", "--runroot", podman_dir + "/runroot", "--storage-driver", "vfs"]
podman_run = [*podman, "run", "--rm", "--cgroups", "disabled", "--network", "slirp4netns", "-v", "/usr:/usr:ro",
              "--rootfs", podman_dir + "/rootfs", *client]
work = {
    "rootless: the bench namespace (no container) -> outside namespace": lambda: subprocess.run(
        client, capture_output=True, text=True, check=True).stdout,
    "sandboxlib rootless: container -> outside namespace (pasta)": lambda: containers["pasta"].run(
        client, stdout=sb.PIPE, check=True).stdout.decode(),
    "sandboxlib rootless: container -> outside namespace (slirp4netns)": lambda: containers["slirp4netns"].run(
        client, stdout=sb.PIPE, check=True).stdout.decode(),
    "podman 4.3.1 rootless --network slirp4netns: container -> outside namespace": lambda: subprocess.run(
        podman_run, capture_output=True, text=True, check=True, env=env).stdout,
}
rate = lambda out: json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
try:
    for fn in work.values():
        rate(fn())
    rates = {name: [] for name in work}
    order = list(work.items())
    for _ in range(rounds):
        random.shuffle(order)
        for name, fn in order:
            rates[name].append(rate(fn()))
finally:
    for c in containers.values():
        c.__exit__(None, None, None)
    subprocess.run([*podman, "system", "reset", "--force"], capture_output=True, env=env)
print(json.dumps(rates))
"""


def podman_rootless_dir(user) -> str:
    """Private storage and a root directory of its own for rootless podman (the user's)."""
    top = tempfile.mkdtemp(prefix="sbxbench-podman-rootless-")
    os.chmod(top, 0o755)
    rootfs = peers.busybox_rootfs(os.path.join(top, "rootfs"))
    os.mkdir(os.path.join(rootfs, "usr"))
    for lib in ("lib", "lib64"):
        os.symlink(f"usr/{lib}", os.path.join(rootfs, lib))
    os.mkdir(os.path.join(top, "run"), 0o700)
    with open(os.path.join(top, "containers.conf"), "w") as f:
        f.write(
            f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{top}/events.log"\nruntime = "crun"\n[containers]\nlog_driver = "k8s-file"\n'
        )
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", top], check=True)
    return top


def rootless_throughput(user, state: str, rounds: int) -> None:
    from tests import rootless

    """iperf3 from the user's containers to a server in the outside namespace:
    ours (pasta, slirp4netns) vs rootless podman's slirp4netns (podman 4.3.1
    has no pasta mode: it came with podman 4.4)."""
    server = subprocess.Popen(["ip", "netns", "exec", OUTSIDE, IPERF, "-s", "-p", "5201"], stdout=subprocess.DEVNULL)
    top = podman_rootless_dir(user)
    try:
        time.sleep(0.3)
        script = ["env", f"SANDBOXLIB_RUN={state}", sys.executable, "-c", ROOTLESS_IPERF, HERE, str(rounds), top]
        done = subprocess.run(rootless.launcher(user, script), capture_output=True, text=True, check=False)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(top, ignore_errors=True)
    if done.returncode != 0:
        print(f"\n- rootless throughput: not measured ({done.stderr.strip().splitlines()[-3:]})\n")
        return
    rates = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\n### Rootless TCP throughput, iperf3 3 s (median of {rounds} interleaved runs, "
        f"load {os.getloadavg()[0]:.1f})\n"
    )
    print("| TCP, iperf3 3 s | Gbit/s median | min-max | ratio |\n|---|---:|---:|---:|")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    first = next(iter(medians.values()))
    for name, values in rates.items():
        print(f"| {name} | {medians[name]:.2f} | {min(values):.2f}-{max(values):.2f} | {medians[name] / first:.2f}x |")
    print(
        f"\n- not measured: podman rootless with pasta ({_common.tool_version(['podman', '--version'])}: "
        "its pasta mode came with podman 4.4)\n"
    )


def rootless_rows(rounds: int, throughput_rounds: int = 0) -> None:
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
        ["ip", "netns", "add", OUTSIDE],
        ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-end", "netns", OUTSIDE],
        ["ip", "addr", "add", "198.51.100.1/24", "dev", "uplink"],
        ["ip", "-n", OUTSIDE, "addr", "add", "198.51.100.2/24", "dev", "uplink-end"],
        ["ip", "-n", OUTSIDE, "link", "set", "uplink-end", "up"],
        ["ip", "link", "set", "uplink", "up"],
        ["ip", "route", "add", "default", "via", "198.51.100.2"],
    ):
        subprocess.run(argv, check=True)
    mode = os.stat(TUN).st_mode & 0o777
    os.chmod(TUN, 0o666)
    try:
        if throughput_rounds:
            rootless_throughput(user, state, throughput_rounds)
        if not rounds:
            return
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


def throughput_rows(rounds: int, *, peers_too: bool) -> None:
    made = Peers(docker=False) if peers_too else None
    try:
        rows = throughput(rounds, made.podman if made else None)
    finally:
        if made is not None:
            made.close()
    print(f"\n### TCP throughput, iperf3 3 s (median of {rounds} interleaved runs, load {os.getloadavg()[0]:.1f})\n")
    print("| TCP, iperf3 3 s | Gbit/s median | min-max | ratio |\n|---|---:|---:|---:|")
    for name, median, low, high in rows:
        print(f"| {name} | {median:.2f} | {low:.2f}-{high:.2f} | {median / rows[0][1]:.2f}x loopback |")
    if made is not None:
        for why in made.why:
            print(f"- not measured: {why}")
    print()


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
    parser.add_argument("--throughput-rounds", type=int, default=5, help="0: no iperf3 rows")
    parser.add_argument("--only-throughput", action="store_true", help="the iperf3 rows alone")
    args = parser.parse_args()
    enter_namespaces()
    # (on the disk, as this machine's /run is, not on the tmpfs over /run here)
    os.environ["SANDBOXLIB_RUN"] = tempfile.mkdtemp(prefix="sandboxlib-bench-net-")
    if args.only_throughput:
        try:
            rootless_rows(0, args.throughput_rounds)
            throughput_rows(args.throughput_rounds, peers_too=not args.no_peers)
        finally:
            shutil.rmtree(os.environ["SANDBOXLIB_RUN"], ignore_errors=True)
        return
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
        rootless_rows(args.rootless_rounds, args.throughput_rounds)
    if args.throughput_rounds:
        throughput_rows(args.throughput_rounds, peers_too=not args.no_peers)
    subprocess.run(["rm", "-rf", os.environ["SANDBOXLIB_RUN"]], check=False)


if __name__ == "__main__":
    main()
