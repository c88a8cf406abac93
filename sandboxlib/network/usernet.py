"""Rootless named networks, as Podman's: one network namespace per user,
held by ``network/usernetd.py`` (root of its own user namespace) and
connected to the outside by pasta; the networks' bridges, nft tables and
resolvers live in it.  This module starts the holder and pasta when missing
(a dead holder's pasta is killed first: the next start sweeps), asks it for
bridges, and attaches containers (:class:`UserBridgeAttachment`).

Files, under ``<state>/net/userns/``: ``holder.sock``, ``holder.pid``,
``helper.pid`` (pasta's), ``.lock``.  The holder ends (and ends pasta) when
nothing uses it: no named network recorded, no container attached."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import BridgeNetwork, ContainerConfig, Mount
from ..errors import SetupError, UnsupportedError
from . import ipam, membership, names
from .files import LeaseFiles, kill_helper, lease_dir, network_dir
from .pasta import DNS_FORWARD, check_tun, find_pasta
from .portproxy import bind_ports

__all__ = [
    "UserBridgeAttachment",
    "make_bridge",
    "remove_bridge",
    "holder_dir",
    "socket_path",
    "tap_inside",
    "attach_tap",
    "detach_tap",
]

HOLDER = "sandboxlib.network.usernetd"
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in the container's user and network namespaces (nsenter): its tap (argv[4],
# else the first free ethN), address and (argv[2] not empty) default route, IPv6's
# too with argv[5] not empty (nodad: the IPAM gave it; the route if argv[6] is not empty),
# its MAC address argv[7] (empty: the kernel's), link-local addresses argv[8:] (host
# prefixes), the tap's fd and name sent back on the socket whose fd is argv[3].
_INSIDE = """
import fcntl, os, socket, struct, subprocess, sys
address, gateway, back, name, address6, gateway6, mac = sys.argv[1:8]
def free(candidate):
    try:
        socket.if_nametoindex(candidate)
    except OSError:
        return True
    return False
name = name or next(n for n in (f"eth{i}" for i in range(1, 100)) if free(n))
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x1002))
batch = f"link set {name} address {mac}\\n" if mac else ""
batch += f"addr add {address} dev {name}\\nlink set {name} up\\n"
batch += f"route add default via {gateway}\\n" if gateway else ""
if address6:
    batch += f"addr add {address6} dev {name} nodad\\n"
    batch += f"route add ::/0 via {gateway6}\\n" if gateway6 else ""
for extra in sys.argv[8:]:
    batch += f"addr add {extra} dev {name}" + (" nodad\\n" if ":" in extra else "\\n")
subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)
socket.send_fds(socket.socket(fileno=int(back)), [name.encode()], [fd])
"""


def tap_inside(
    init_pid: int,
    netns: str,
    address: ipaddress.IPv4Interface,
    gateway: str,
    name: str,
    pass_fds: Tuple[int, ...],
    ipv6: Optional[Tuple[ipaddress.IPv6Interface, str]] = None,
    *,
    mac: str = "",
    link_local: Sequence[str] = (),
) -> Tuple[int, str]:
    """(fd, name) of a tap made in the container's namespaces (``netns``: a path),
    configured from in there (the owner has no capability over them from outside).
    ``gateway`` "": no default route; ``ipv6``: (address, gateway or "") too;
    ``mac``: its MAC address (""; the kernel's); ``link_local``: more addresses."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        argv = ["nsenter", "--preserve-credentials", f"--user=/proc/{init_pid}/ns/user"]
        argv += [f"--net={netns}", sys.executable, "-I", "-S", "-c", _INSIDE]
        argv += [str(address), gateway, str(theirs.fileno()), name]
        argv += [str(ipv6[0]), ipv6[1]] if ipv6 is not None else ["", ""]
        argv += [mac, *link_local]
        done = subprocess.run(argv, pass_fds=(*pass_fds, theirs.fileno()), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SetupError(0, "the container's tap (rootless network)", step="NETWORK", hint=done.stderr[-500:])
        message, fds, _, _ = socket.recv_fds(ours, 64, 1)
    return fds[0], message.decode()


def holder_dir(state_root: str) -> str:
    return os.path.join(network_dir(state_root), "userns")


def socket_path(state_root: str) -> str:
    return os.path.join(holder_dir(state_root), "holder.sock")


def _connect(state_root: str) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path(state_root))
    except OSError:
        sock.close()
        return None
    return sock


def _kill_stale_holder(directory: str) -> None:
    try:
        with open(os.path.join(directory, "holder.pid"), encoding="ascii") as file:
            pid = int(file.read())
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            if HOLDER.encode() in file.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _start(state_root: str) -> None:
    """The holder, then pasta into its namespaces (ours being dead: swept first)."""
    check_tun()
    directory = holder_dir(state_root)
    _kill_stale_holder(directory)
    kill_helper(directory)
    pasta = find_pasta()
    if pasta is None:
        raise UnsupportedError("rootless named networks (pasta)", "apt-get install passt")
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    holder = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-m", HOLDER, state_root],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert holder.stdout is not None and holder.stderr is not None
    ready = holder.stdout.readline().split()
    with holder.stdout, holder.stderr:
        if ready[:1] != [b"ready"]:
            holder.wait()
            raise SetupError(
                0, "the per-user network namespace", step="NETWORK", hint=holder.stderr.read().decode()[-500:]
            )
    holder.wait()  # (the holder forked: it is not our child, nor our zombie)
    pid = int(ready[1])
    with open(os.path.join(directory, "holder.pid"), "w", encoding="ascii") as file:
        file.write(str(pid))
    argv = [pasta, "--config-net", "--quiet", "--no-map-gw", "--dns-forward", DNS_FORWARD]
    argv += ["-t", "none", "-u", "none", "-T", "none", "-U", "none"]
    argv += ["--netns", f"/proc/{pid}/ns/net", "--userns", f"/proc/{pid}/ns/user"]
    argv += ["--pid", os.path.join(directory, "helper.pid")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        os.kill(pid, signal.SIGKILL)
        raise SetupError(0, "pasta (the per-user network namespace)", step="NETWORK", hint=done.stderr.strip()[-500:])


def _request(
    state_root: str, request: dict, fds: Tuple[int, ...] = (), *, start: bool = True
) -> Tuple[dict, Optional[socket.socket]]:
    """Send ``request`` to the holder (started if missing, if ``start``); its
    answer and the connection (None without a holder not to be started)."""
    directory = holder_dir(state_root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with ipam.dir_lock(directory):
        sock = _connect(state_root)
        if sock is None and not start:
            return {}, None
        if sock is None:
            _start(state_root)
            sock = _connect(state_root)
        if sock is None:
            raise SetupError(0, "connecting to the per-user network namespace's holder", step="NETWORK")
        # (sent under the lock: the holder decides to end under it, seeing no request waiting)
        socket.send_fds(sock, [json.dumps(request).encode()], list(fds))
    answer = json.loads(sock.recv(65536) or b'{"ok": false, "error": "the holder ended"}')
    if not answer.get("ok"):
        sock.close()
        raise SetupError(0, f"rootless network: {request['op']}", step="NETWORK", hint=answer.get("error", ""))
    return answer, sock


def attach_tap(state_root: str, tap: int, request: dict, listeners: Tuple[int, ...] = ()) -> socket.socket:
    """The holder puts its end of the container's ``tap`` (closed here) on
    ``request["bridge"]`` and copies frames until the connection returned ends;
    it serves the published ports' ``listeners`` (``request["ports"]``) meanwhile."""
    try:
        _, link = _request(state_root, {"op": "attach", **request}, (tap, *listeners))
    finally:
        os.close(tap)
    assert link is not None
    return link


def detach_tap(link: socket.socket) -> None:
    """The holder ends the ports' proxy and the egress objects, then its end (a
    join's taps closed before that, so the container's ``ethN`` is gone on return;
    a start's after)."""
    try:
        link.shutdown(socket.SHUT_WR)
        link.settimeout(5)
        link.recv(1)  # (before the address is released: a new owner's objects may follow)
    except OSError:
        pass
    link.close()


def make_bridge(
    state_root: str, bridge_name: str, pool: Optional[ipam.Pool], *, hold: bool = False
) -> Tuple[ipaddress.IPv4Interface, Optional[socket.socket]]:
    """The bridge's gateway; made if missing (as ``pool`` says, else on a free
    default subnet).  ``hold``: with the connection that
    keeps the holder (and the bridge) from ending until it is closed."""
    request = {"op": "bridge", "name": bridge_name, "pool": pool.to_json() if pool else None, "hold": hold}
    answer, sock = _request(state_root, request)
    assert sock is not None
    if not hold:
        sock.close()
    return ipaddress.IPv4Interface(answer["gateway"]), sock if hold else None


def remove_bridge(state_root: str, bridge_name: str) -> None:
    """Its bridge goes (the holder ends with its last use: it kills pasta)."""
    _, sock = _request(state_root, {"op": "remove", "name": bridge_name}, start=False)
    if sock is not None:  # (without a holder, nothing of the network is left in a namespace)
        sock.close()


class UserBridgeAttachment(ipam.LeasedInterface):
    """A rootless container on a named network (the steps of
    :class:`~sandboxlib.network.attach.Attachment`)."""

    NEEDS_RECORD = True  # (a one-shot run keeps its state record, as with pasta: the holder is a process of its own)

    def __init__(
        self,
        config: ContainerConfig,
        container_id: str,
        hostname: str,
        state_root: str,
        network: Tuple[str, Optional[ipam.Pool]],
    ) -> None:
        """``network``: (bridge, its pool), the pool None for
        the default network's (its subnet chosen at first use)."""
        self._config, self._id, self._hostname, self._state_root = config, container_id, hostname, state_root
        self._bridge, self._pool = network
        self._gateway: Optional[ipaddress.IPv4Interface] = None
        self._lease: Optional[ipam.Lease] = None
        self._files: Optional[LeaseFiles] = None
        self._link: Optional[socket.socket] = None
        self._sockets: List[socket.socket] = []  # the published ports', bound here, served by the holder
        self._published: Dict[str, Tuple[str, int]] = {}
        self._hold: Optional[socket.socket] = None  # keeps the holder from ending before the link exists
        network_value = config.network
        self._endpoint = network_value if isinstance(network_value, BridgeNetwork) else BridgeNetwork()
        self._egress = self._endpoint.egress

    def prepare(self) -> None:
        check_tun()  # (the container's tap is opened as its owner)
        self._sockets = bind_ports(self._config.ports)  # (first: a port in use is a ConfigError, nothing made)
        self._gateway, self._hold = make_bridge(self._state_root, self._bridge, self._pool, hold=True)
        self._pool = self._pool or ipam.Pool(self._gateway.network, self._gateway.ip)
        owner = membership.lease_record(self._id, self._hostname, self._config)
        leases = lease_dir(self._state_root, self._bridge)
        ipam.reap(leases)  # (a dead owner's egress objects went when its connection to the holder ended)
        self._lease = ipam.lease_address(leases, self._pool, owner, self._endpoint.address, self._endpoint.address6)
        _, files = names.bridge_files(
            str(self._gateway.ip),
            str(self.address.ip),
            str(self.address6.ip) if self.address6 else None,
            self._hostname,
            self._config.name,
            self._config.extra_hosts,
        )
        self._files = LeaseFiles(self._state_root, self._bridge, self._lease.address, files)

    @property
    def address(self) -> ipaddress.IPv4Interface:
        assert self._lease is not None and self._gateway is not None
        return ipaddress.IPv4Interface(f"{self._lease.address}/{self._gateway.network.prefixlen}")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        assert self._gateway is not None
        return self._gateway.ip

    def mounts(self) -> Tuple[Mount, ...]:
        assert self._files is not None
        return self._files.mounts()

    def connect(self, netns_fd: int, init_pid: int) -> None:
        """The container's tap, configured from inside; the holder's end of it on the bridge."""
        assert self._gateway is not None
        ipv6 = None
        if self.address6 is not None and self.gateway6 is not None:
            ipv6 = (self.address6, str(self.gateway6))
        tap, _ = tap_inside(
            init_pid,
            f"/proc/self/fd/{netns_fd}",
            self.address,
            str(self._gateway.ip),
            "eth0",
            (netns_fd,),
            ipv6,
            mac=self.mac_address,
            link_local=self._endpoint.link_local,
        )
        owner_rules = [[r.kind, r.value, r.port, r.protocol] for r in self._egress]
        ports = self._config.ports
        # the published ports' sockets go with the tap: the holder's proxy
        # (in the user's namespace, where the container's address is) serves them
        self._link = attach_tap(
            self._state_root,
            tap,
            {
                "bridge": self._bridge,
                "id": self._id,
                "address": str(self.address.ip),
                "address6": str(self.address6.ip) if self.address6 else None,
                "egress": owner_rules,
                "ports": [[m.host_ip, m.host_port, m.port, m.protocol] for m in ports],
            },
            tuple(s.fileno() for s in self._sockets),
        )
        self._published = {m.key: s.getsockname()[:2] for s, m in zip(self._sockets, ports)}
        self._close_sockets()  # (the holder's copies serve them until the link ends)

    @property
    def ports(self) -> Dict[str, Tuple[str, int]]:
        return dict(self._published)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def close(self) -> None:
        self._close_sockets()
        if self._link is not None:  # the holder ends the proxy and the egress objects, then its end (the taps after)
            detach_tap(self._link)
            self._link = None
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._files is not None:
            self._files.close()
            self._files = None
