"""Network namespaces the network tests make for themselves, so that no
traffic leaves the machine and the machine's own network is never changed:

- "host": where the library under test runs (a subprocess entered into it,
  with a private mount namespace whose /etc/resolv.conf names the world's
  DNS server); its bridges, veths and nft tables are made there;
- "world": the outside, reached from "host" through a veth pair (IPv4 and
  IPv6), serving HTTP and DNS (tests/networld.py).

Each namespace is held by a `sleep` process of ours (no /run/netns mount)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

HOST_ADDRESS, WORLD_ADDRESS, WORLD_SECOND = "198.51.100.1", "198.51.100.2", "198.51.100.3"  # TEST-NET-2
HOST6, WORLD6, WORLD6_SECOND = "2001:db8:5100::1", "2001:db8:5100::2", "2001:db8:5100::3"  # documentation prefix
HERE = os.path.dirname(os.path.abspath(__file__))
PRELUDE = """import json, sys, sandboxlib as sb


def eth0(c):
    \"\"\"The container's address/prefix on its network.\"\"\"
    return c.run(["sh", "-c", "ip -o -4 addr show eth0"], stdout=sb.PIPE).stdout.decode().split()[3]


def text(result):
    return result.stdout.decode().strip()

"""


def _holder() -> subprocess.Popen:
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "echo ok; exec sleep infinity"], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ok\n"
    return proc


class Lab:
    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="netlab-")
        self.host, self.world = _holder(), _holder()
        self.resolv = os.path.join(self.tmp, "resolv.conf")
        with open(self.resolv, "w") as file:
            file.write(f"nameserver {WORLD_ADDRESS}\n")
        self.state = os.path.join(self.tmp, "run")
        from .rootless import private_tun

        self.tun = private_tun(self.tmp)  # the unprivileged user's /dev/net/tun (chmod it to test the check)
        self.in_host(
            "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", str(self.world.pid)
        )
        self.in_host("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", "uplink")
        self.in_host("ip", "link", "set", "uplink", "up")
        self.in_host("ip", "link", "set", "lo", "up")
        self.in_host("ip", "route", "add", "default", "via", WORLD_ADDRESS)
        self.in_host("ip", "addr", "add", f"{HOST6}/64", "dev", "uplink", "nodad")
        self.in_host("ip", "-6", "route", "add", "default", "via", WORLD6)
        self.in_world("ip", "addr", "add", f"{WORLD_ADDRESS}/24", "dev", "eth0")
        self.in_world("ip", "addr", "add", f"{WORLD_SECOND}/24", "dev", "eth0")
        self.in_world("ip", "addr", "add", f"{WORLD6}/64", "dev", "eth0", "nodad")
        self.in_world("ip", "addr", "add", f"{WORLD6_SECOND}/64", "dev", "eth0", "nodad")
        self.in_world("ip", "link", "set", "eth0", "up")
        self.in_world("ip", "link", "set", "lo", "up")
        self.server = subprocess.Popen(
            self._enter(
                self.world,
                sys.executable,
                os.path.join(HERE, "networld.py"),
                WORLD_ADDRESS,
                WORLD_SECOND,
                WORLD6,
                WORLD6_SECOND,
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.server.stdout.readline() == b"ready\n"

    @staticmethod
    def _enter(holder: subprocess.Popen, *argv: str) -> list:
        return ["nsenter", f"--net=/proc/{holder.pid}/ns/net", *argv]

    def in_host(self, *argv: str) -> str:
        return subprocess.run(self._enter(self.host, *argv), check=True, capture_output=True, text=True).stdout

    def in_world(self, *argv: str) -> str:
        return subprocess.run(self._enter(self.world, *argv), check=True, capture_output=True, text=True).stdout

    def links(self) -> list:
        """The host namespace's links (names)."""
        return [link["ifname"] for link in json.loads(self.in_host("ip", "-j", "link", "show"))]

    def library(self, code: str, **popen) -> subprocess.Popen:
        """Python ``code`` run with the library inside the host namespace."""
        script = os.path.join(self.tmp, f"script-{os.urandom(4).hex()}.py")
        with open(script, "w") as file:
            file.write(PRELUDE + textwrap.dedent(code))
        shell = 'mount --bind "$1" /etc/resolv.conf && exec "$2" "$3"'
        argv = self._enter(self.host, "unshare", "--mount", "sh", "-c", shell, "-", self.resolv, sys.executable, script)
        env = {**os.environ, "SANDBOXLIB_RUN": self.state}
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)

    def library_as(self, user, code: str, env: dict = None, **popen) -> subprocess.Popen:
        """As ``library``, run by the unprivileged ``user`` (tests/rootless.py's launcher)."""
        from .rootless import launcher

        shared = os.path.join(self.tmp, "shared")
        os.makedirs(shared, mode=0o755, exist_ok=True)
        os.chmod(self.tmp, 0o711)
        script = os.path.join(shared, f"script-{os.urandom(4).hex()}.py")
        with open(script, "w") as file:
            file.write(PRELUDE + textwrap.dedent(code))
        os.chmod(script, 0o644)
        os.chmod(self.resolv, 0o644)
        state = os.path.join(self.tmp, f"run-{user.pw_name}")
        if not os.path.isdir(state):
            os.mkdir(state, 0o700)
            os.chown(state, user.pw_uid, user.pw_gid)
        variables = [f"{k}={v}" for k, v in {"SANDBOXLIB_RUN": state, **(env or {})}.items()]
        argv = launcher(user, ["env", *variables, sys.executable, script], self.tun)
        argv[-1] = f"mount --bind {self.resolv} /etc/resolv.conf\n" + argv[-1]
        return subprocess.Popen(
            self._enter(self.host, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
        )

    def run(self, code: str, timeout: float = 60, user=None, env: dict = None) -> dict:
        """Run ``code``, which prints one JSON line last; returns it."""
        proc = self.library(code) if user is None else self.library_as(user, code, env)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"the library's process failed:\n{err}"
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait()
        for holder in (self.host, self.world):
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        left = self._swept_cgroups()
        subprocess.run(["rm", "-rf", self.tmp], check=True)
        assert left == [], f"cgroups left by the lab's containers: {left}"

    def _swept_cgroups(self) -> list:
        """Sweep the lab's state roots, as the next start in them would (a
        test that SIGKILLs an owner may end before a start sweeps: the sweep
        is throttled), then list what remains of their containers' cgroups."""
        from sandboxlib.cgroups import cgroup_name
        from sandboxlib.runtime import statedir

        roots = [os.path.join(self.tmp, n) for n in os.listdir(self.tmp) if n == "run" or n.startswith("run-")]
        for root in roots:
            statedir.sweep(root)
        prefixes = tuple(cgroup_name(root, "") for root in roots)
        return [
            os.path.join(top, name)
            for top in (os.path.join("/sys/fs/cgroup", c) for c in os.listdir("/sys/fs/cgroup"))
            if os.path.isdir(top)
            for name in os.listdir(top)
            if prefixes and name.startswith(prefixes)
        ]
