"""Published ports through a userland proxy, as Docker's ``docker-proxy``:
a socket bound on the host's side per port, served by threads of the host
process that connect to the container's address.

Why a proxy and not DNAT: a port published on 127.0.0.1 needs the kernel to
route loopback traffic to another interface (``route_localnet``, which also
opens the host's loopback services to whatever can reach the host's
interfaces); a socket on 127.0.0.1 is reachable by the host alone.  The
sockets are bound before anything else is made (a port in use is a
ConfigError), and they close with the host process (nothing to sweep)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import threading
import time
from typing import Dict, List, Tuple

from ..config import PortMapping
from ..errors import ConfigError

__all__ = ["bind_ports", "PortProxy"]

BUFFER = 1 << 20  # bytes a splice moves at most: a pipe of fs.pipe-max-size's default (fewer wakeups)
UDP_IDLE = 60.0  # seconds a UDP client's flow lives without traffic


def bind_ports(ports: Tuple[PortMapping, ...]) -> List[socket.socket]:
    """The host sockets of ``ports``, bound (TCP ones listening)."""
    sockets: List[socket.socket] = []
    try:
        for mapping in ports:
            kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
            family = socket.AF_INET6 if ":" in mapping.host_ip else socket.AF_INET
            sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
            sockets.append(sock)
            if family == socket.AF_INET6:  # (its own address only, not IPv4's too)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, as servers do
            try:
                sock.bind((mapping.host_ip, mapping.host_port))
            except OSError as err:
                host = f"[{mapping.host_ip}]" if family == socket.AF_INET6 else mapping.host_ip
                where = f"{host}:{mapping.host_port}/{mapping.protocol}"
                reason = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err.strerror})"
                raise ConfigError("ports", f"{where} {reason}") from None
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class PortProxy:
    """Forward each bound socket to ``(address, mapping.port)`` until :meth:`close`
    (the container's IPv4 address, whatever the host side's family: every
    container has one)."""

    def __init__(self, sockets: List[socket.socket], ports: Tuple[PortMapping, ...], address: str) -> None:
        self._listeners = {s.fileno(): (s, m) for s, m in zip(sockets, ports)}
        self._address = address
        self._udp: Dict[int, Tuple[socket.socket, socket.socket, tuple, List[float]]] = {}  # fd -> flow
        self._flows: Dict[Tuple[int, tuple], socket.socket] = {}
        self._connections: List[socket.socket] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="sandboxlib-ports", daemon=True)
        self._thread.start()

    @property
    def published(self) -> Dict[str, Tuple[str, int]]:
        """``{"80/tcp": ("127.0.0.1", 8080)}``: where each port is on the host."""
        return {m.key: s.getsockname()[:2] for s, m in self._listeners.values()}

    def close(self) -> None:
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_w = -1
        for sock, _ in self._listeners.values():
            sock.close()
        for _, upstream, _, _ in self._udp.values():
            upstream.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # its pump threads end

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd in self._listeners:
            poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll(UDP_IDLE * 1000 / 4)
            for fd, _ in events:
                if fd == self._wake_r:
                    return
                if fd in self._listeners:
                    sock, mapping = self._listeners[fd]
                    if mapping.protocol == "tcp":
                        self._accept(sock, mapping)
                    else:
                        self._from_client(sock, mapping, poller)
                elif fd in self._udp:
                    self._from_container(fd)
            self._expire(poller)

    def _accept(self, listener: socket.socket, mapping: PortMapping) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=self._relay_tcp, args=(client, mapping.port), daemon=True).start()

    def _relay_tcp(self, client: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection((self._address, port), timeout=10)
        except OSError:
            client.close()  # the client sees the connection end, as with docker-proxy
            return
        upstream.settimeout(None)
        with self._lock:
            self._connections += [client, upstream]
        pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        pump.start()
        _pump(client, upstream)
        pump.join()
        with self._lock:
            self._connections.remove(client)
            self._connections.remove(upstream)
        client.close()
        upstream.close()

    def _from_client(self, listener: socket.socket, mapping: PortMapping, poller: select.poll) -> None:
        try:
            data, client = listener.recvfrom(65535)
        except OSError:
            return
        upstream = self._flows.get((listener.fileno(), client))
        if upstream is None:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            upstream.connect((self._address, mapping.port))
            self._flows[(listener.fileno(), client)] = upstream
            self._udp[upstream.fileno()] = (listener, upstream, client, [time.monotonic()])
            poller.register(upstream, select.POLLIN)
        self._udp[upstream.fileno()][3][0] = time.monotonic()
        with contextlib.suppress(OSError):
            upstream.send(data)

    def _from_container(self, fd: int) -> None:
        listener, upstream, client, seen = self._udp[fd]
        try:
            data = upstream.recv(65535)
        except OSError:
            return
        seen[0] = time.monotonic()
        with contextlib.suppress(OSError):
            listener.sendto(data, client)

    def _expire(self, poller: select.poll) -> None:
        now = time.monotonic()
        for fd, (listener, upstream, client, seen) in list(self._udp.items()):
            if now - seen[0] > UDP_IDLE:
                poller.unregister(fd)
                del self._udp[fd], self._flows[(listener.fileno(), client)]
                upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close).  splice(2) through a
    pipe: the bytes stay in the kernel (no copy into Python, the GIL released
    for each whole chunk)."""
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # (capped by fs.pipe-max-size: the default 64 KiB then)
        fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, BUFFER)
    try:
        while True:
            n = os.splice(source.fileno(), pipe_w, BUFFER, flags=os.SPLICE_F_MOVE)
            if not n:
                break
            while n:
                n -= os.splice(pipe_r, sink.fileno(), n, flags=os.SPLICE_F_MOVE)
    except OSError:
        pass
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
