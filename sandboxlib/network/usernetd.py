"""The holder of a user's network namespace (rootless named networks), run
by ``network/usernet.py`` as ``unshare --user --map-root-user --net python3
-m sandboxlib.network.usernetd STATE_ROOT``: root of its own user namespace,
it owns the per-user network namespace, makes the networks' bridges and
nft tables there and serves their resolvers.

A container cannot get a veth on these bridges: its user namespace is a
sibling of ours, and the kernel wants CAP_NET_ADMIN over both ends'
namespaces for a veth pair.  So the container gets a tap ``eth0`` (made by
its owner inside it) and we a tap ``vsbx<id>`` on the bridge, and a thread
here copies frames between the two fds.  The owner keeps the request's
connection open for the container's life: its end (close, or the owner's
death) closes both taps, which removes ours.

We end when nothing uses us (``end_if_unused``), and when our socket is
gone (``end_if_orphaned``: the state root was removed under us).

Requests are one JSON message on a SOCK_SEQPACKET connection to
``<state>/net/userns/holder.sock`` (a tap fd attached): ``bridge`` (make it
if missing), ``remove`` (the bridge goes; the holder exits after the last),
``attach`` (the published ports' sockets attached too: they were bound by
the owner in its namespace, a proxy here connects to the container)."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
from typing import Any, Dict, List, Optional

from ..config import EgressRule, PortMapping
from . import bridge, ipam, membership, named, nftables, usernet
from .attach import egress_gate, ensure_bridge, forget_bridge
from .files import HELPER_PID, kill_helper, network_dir
from .pasta import DNS_FORWARD
from .portproxy import PortProxy

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
ORPHAN_CHECK = 2.0  # seconds between checks that our socket still exists
MAX_FDS = 253  # (SCM_RIGHTS' limit: a tap and up to 252 published ports' sockets)


def open_tap(name: str) -> int:
    """A new tap device ``name`` in this thread's network namespace (it goes when the fd closes)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


class Holder:
    def __init__(self, state_root: str, listener: socket.socket) -> None:
        self._state_root, self._listener = state_root, listener
        self._busy = 0  # connections being served (an attachment's lasts as long as it)
        self._helper: Optional[int] = None  # pasta's pid (end_if_orphaned)
        self._resolvers: Dict[str, Any] = {}
        self._lock = threading.Lock()

    def bridge(self, name: str, pool_json: Optional[dict]) -> str:
        """The bridge's gateway; made if missing, as ``pool_json`` (an ``ipam.Pool``'s) says,
        else on a free default subnet."""
        from .resolver import Resolver

        with self._lock:
            pool = ipam.Pool.from_json(pool_json) if pool_json else None
            if pool is None and bridge.host_index(name) is None:  # (not a named network's subnet either)
                taken = [ipaddress.IPv4Network(r.subnet) for r in named.records(self._state_root)]
                with bridge.host_netlink() as ipr:
                    pool = ipam.Pool(bridge.default_subnet(ipr, taken))
            gateway = ensure_bridge(self._state_root, name, pool).gateway_interface
            if name not in self._resolvers:

                def lookup(client: str, wanted: str) -> List[str]:
                    return membership.lookup(self._state_root, name, client, wanted)

                def gate(client: str, wanted: str) -> Any:
                    return egress_gate(self._state_root, name, client, wanted)

                self._resolvers[name] = Resolver.on_bridge(
                    gateway, bridge.link_index(name), [DNS_FORWARD], lookup, gate
                )
            return str(gateway)

    def remove(self, name: str) -> int:
        """Remove the bridge; the number of bridges left."""
        with self._lock:
            resolver = self._resolvers.pop(name, None)
            if resolver is not None:
                resolver.close()
            with bridge.host_netlink() as ipr:
                bridge.delete_link(ipr, name)
            forget_bridge(self._state_root, name)
            nftables.remove_bridge_rules(name)
            return len(self._resolvers)

    def attach(self, conn: socket.socket, request: dict, fds: List[int]) -> None:
        """Our tap on the bridge, frames copied to and from the container's
        tap (``fds[0]``) until the connection ends; the container's egress
        allow-list in force and its published ports (the listening sockets
        ``fds[1:]``, bound in the owner's namespace) served meanwhile."""
        bridge_name, container_id, address = request["bridge"], request["id"], request["address"]
        address6 = request.get("address6")
        egress = [EgressRule(*rule) for rule in request.get("egress") or ()]
        ports = tuple(PortMapping(*port) for port in request.get("ports") or ())
        inner, listeners = fds[0], [socket.socket(fileno=fd) for fd in fds[1:]]
        proxy = None
        name = request.get("tap") or f"vsbx{container_id[:10]}"  # (a joined network's: named by the request)
        try:
            outer = open_tap(name)
        except BaseException:
            os.close(inner)
            for sock in listeners:
                sock.close()
            raise
        try:
            if egress:
                nftables.add_egress(bridge_name, container_id, address, egress, address6)
            with bridge.host_netlink() as ipr:
                index = bridge.link_index(name)
                ipr.link("set", index=index, master=bridge.link_index(bridge_name), state="up")
            if listeners:
                proxy = PortProxy(listeners, ports, address)
            conn.send(b'{"ok": true}')
            _copy(conn, inner, outer)
        finally:
            if proxy is not None:
                proxy.close()  # (its listeners with it)
            else:
                for sock in listeners:
                    sock.close()
            if egress:
                nftables.remove_egress(bridge_name, container_id, address, address6)
            # The owner waits for this end before it releases the address (a next
            # holder's egress objects and ports may follow).  A start's taps' removal
            # (unregistering two devices: 50 ms and more under load) need not be waited
            # for; a join's must (a disconnect's ethN is gone when it returns, and a
            # connect again names our tap the same).
            if not request.get("tap"):
                conn.close()
            os.close(outer)
            os.close(inner)
            conn.close()

    def end_if_unused(self) -> None:
        """End, and end pasta (the namespace goes with it), when no named
        network is recorded, no container is attached and no request waits
        (decided under the lock clients send their requests under)."""
        with ipam.dir_lock(usernet.holder_dir(self._state_root)), self._lock:
            # (accept and the count go together under self._lock: a connection is counted or waiting)
            if self._busy or _recorded(self._state_root) or select.select([self._listener], [], [], 0)[0]:
                return
            os.unlink(usernet.socket_path(self._state_root))
            kill_helper(usernet.holder_dir(self._state_root))
            os._exit(0)

    def accept(self) -> None:
        """Serve the next connection (in a thread of its own); every
        ``ORPHAN_CHECK`` seconds without one, see whether we are orphaned."""
        if not select.select([self._listener], [], [], ORPHAN_CHECK)[0]:
            self.end_if_orphaned()
            return
        with self._lock:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            self._busy += 1
        self._note_helper()  # (pasta is started before the first request is sent)
        threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def end_if_orphaned(self) -> None:
        """End, and end pasta, when our socket is gone (the state root was
        removed, e.g. at a test session's end, while a network was recorded):
        nobody can reach us any more, nor sweep us.  pasta's pid is noted
        while its pid file exists (it is killed only while its command line
        names that file)."""
        directory = usernet.holder_dir(self._state_root)
        if os.path.exists(usernet.socket_path(self._state_root)):
            self._note_helper()
            return
        with self._lock:
            if self._busy:
                return
            if self._helper is not None:
                try:
                    with open(f"/proc/{self._helper}/cmdline", "rb") as file:
                        if os.path.join(directory, HELPER_PID).encode() in file.read():
                            os.kill(self._helper, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)

    def _note_helper(self) -> None:
        try:
            with open(os.path.join(usernet.holder_dir(self._state_root), HELPER_PID), encoding="ascii") as file:
                self._helper = int(file.read())
        except (OSError, ValueError):
            pass

    def serve(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        finally:
            with self._lock:
                self._busy -= 1
            self.end_if_unused()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                message, fds, _, _ = socket.recv_fds(conn, 65536, MAX_FDS)
                request = json.loads(message)
                op = request["op"]
                if op == "attach":
                    self.attach(conn, request, fds)
                    return
                if op == "bridge":
                    gateway = self.bridge(request["name"], request.get("pool"))
                    conn.send(json.dumps({"ok": True, "gateway": gateway}).encode())
                    if request.get("hold"):  # a container's start: we stay until it ends (EOF)
                        conn.recv(1)
                elif op == "remove":
                    conn.send(json.dumps({"ok": True, "left": self.remove(request["name"])}).encode())
            except Exception as err:  # reported to the requester
                try:
                    conn.send(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}).encode())
                except OSError:
                    pass


def _copy(conn: socket.socket, inner: int, outer: int) -> None:
    poller = select.poll()
    for fd in (conn.fileno(), inner, outer):
        poller.register(fd, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == conn.fileno():
                return  # the owner's end (or death): nothing else is ever sent
            try:
                frame = os.read(fd, 65536)
                os.write(outer if fd == inner else inner, frame)
            except OSError:
                pass  # the other side down: the frame is dropped, as a wire would


def main(state_root: str) -> None:
    with bridge.host_netlink() as ipr:
        ipr.link("set", index=bridge.link_index("lo"), state="up")
    path = usernet.socket_path(state_root)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(64)
    holder = Holder(state_root, listener)
    if os.fork():  # (before any thread) the starter reaps this parent; init, the holder
        os._exit(0)
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)
    listener.setblocking(False)
    while True:
        holder.accept()


def _recorded(state_root: str) -> bool:
    """Whether a named network is recorded (named.py's records)."""
    try:
        return any(entry.endswith(".json") for entry in os.listdir(os.path.join(network_dir(state_root), "networks")))
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    main(sys.argv[1])
