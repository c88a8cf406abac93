"""The embedded resolver of a network (Docker's 127.0.0.11 behaviour): it
answers the names of the containers on the network and forwards every other
question to the host's resolvers, from the host's side (where a loopback
resolver such as systemd-resolved's 127.0.0.53 answers).

It listens on the bridge's own address, port 53, in the host's namespace,
not on 127.0.0.11 inside the container: a socket there would take port 53
from the container's own programs (a DNS server in a container binds
0.0.0.0:53).  Each container's owner serves one socket (``SO_REUSEPORT``:
the kernel spreads the queries over the owners' sockets, which all give the
same answers, read from the network's leases), from a thread of the host
process (gone with it: nothing to sweep).  Only queries that arrive on the
bridge are answered (UDP: ``IP_PKTINFO``; TCP: a peer of the bridge's
subnet): another network's containers learn nothing.  DNS over TCP (what a
client uses after a truncated UDP answer) is served by a thread per
connection and forwarded over TCP."""

from __future__ import annotations

import _thread
import ipaddress
import os
import select
import socket
import threading
from typing import Callable, List, Optional, Tuple, Union

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

__all__ = ["Resolver"]

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # (Python 3.11 lacks the constant)
TTL = 10  # container addresses change with the containers
FORWARD_TIMEOUT = 2.0
Lookup = Callable[[str, str], Optional[str]]  # (client address, name) -> IPv4 address for it, or None
# (client address, name) -> None: no allow-list; False: the name is not allowed;
# or a callable given the (address, TTL) answers of an allowed name, before they are returned.
Gate = Callable[[str, str], Union[None, bool, Callable[[List[Tuple[str, int]]], None]]]


class Resolver:
    """Serve ``sock`` (UDP, bound in the container) until :meth:`close`."""

    def __init__(
        self,
        socks: Tuple[socket.socket, socket.socket],
        bridge: Tuple[int, ipaddress.IPv4Network],
        upstreams: List[str],
        lookup: Lookup,
        gate: Gate,
    ) -> None:
        """``socks``: (UDP, listening TCP); ``bridge``: its index and subnet."""
        (self._sock, self._listener), (self._bridge_index, self._subnet) = socks, bridge
        self._upstreams, self._lookup, self._gate = upstreams, lookup, gate
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        # A bare thread: threading.Thread.start() waits until the new thread
        # runs (under load, a wait for a CPU on the start's path); the sockets
        # are bound already, so queries wait in them meanwhile.
        self._stopped = _thread.allocate_lock()
        self._stopped.acquire()
        _thread.start_new_thread(self._run, ())

    @classmethod
    def on_bridge(
        cls, gateway: ipaddress.IPv4Interface, bridge_index: int, upstreams: List[str], lookup: Lookup, gate: Gate
    ) -> Resolver:
        made: List[socket.socket] = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
                made.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if kind == socket.SOCK_DGRAM:
                    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                sock.bind((str(gateway.ip), 53))
            made[1].listen(64)
        except BaseException:
            for sock in made:
                sock.close()
            raise
        return cls((made[0], made[1]), (bridge_index, gateway.network), upstreams, lookup, gate)

    def close(self) -> None:
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        with self._stopped:  # (released as the thread ends)
            pass
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_w = -1
        self._sock.close()
        self._listener.close()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._stopped.release()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    return
                if fd == self._listener.fileno():
                    self._accept()
                    continue
                try:
                    packet, ancillary, _, client = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
                except OSError:
                    continue
                if _arrival(ancillary) != self._bridge_index:
                    continue
                answer = self._answer(packet, client[0])
                if answer:
                    try:
                        self._sock.sendto(answer, client)
                    except OSError:
                        pass

    def _accept(self) -> None:
        try:
            conn, peer = self._listener.accept()
        except OSError:
            return
        if ipaddress.IPv4Address(peer[0]) not in self._subnet:
            conn.close()
            return
        threading.Thread(target=self._serve_tcp, args=(conn, peer[0]), daemon=True).start()

    def _serve_tcp(self, conn: socket.socket, client: str) -> None:
        """Length-prefixed queries until the client closes (or 10 s of silence)."""
        conn.settimeout(10)
        with conn:
            try:
                while True:
                    head = _read_exactly(conn, 2)
                    if head is None:
                        return
                    packet = _read_exactly(conn, int.from_bytes(head, "big"))
                    if packet is None:
                        return
                    answer = self._answer(packet, client, tcp=True)
                    if answer:
                        conn.sendall(len(answer).to_bytes(2, "big") + answer)
            except OSError:
                return

    def _answer(self, packet: bytes, client: str, tcp: bool = False) -> Optional[bytes]:
        try:
            query = DNSRecord.parse(packet)
        except DNSError:
            return None
        question = query.q
        name = str(question.qname).rstrip(".")
        address = self._lookup(client, name.lower()) if question.qclass == 1 else None
        if address is not None:
            reply = query.reply()
            if question.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
            return reply.pack()  # AAAA etc.: the name exists, without such records
        gate = self._gate(client, name.lower())
        if gate is False:  # not on the container's allow-list: refused at once
            return self._failure(query, RCODE.REFUSED)
        answer = self._forward_tcp(packet) if tcp else self._forward(packet)
        if answer is None:
            return self._failure(query, RCODE.SERVFAIL)
        if callable(gate):
            gate(_addresses(answer))
        return answer

    def _forward(self, packet: bytes) -> Optional[bytes]:
        for server in self._upstreams:
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as upstream:
                upstream.settimeout(FORWARD_TIMEOUT)
                try:
                    upstream.connect((server, 53))
                    upstream.send(packet)
                    answer = upstream.recv(65535)
                except OSError:
                    continue
                if answer[:2] == packet[:2]:
                    return answer
        return None

    def _forward_tcp(self, packet: bytes) -> Optional[bytes]:
        for server in self._upstreams:
            try:
                with socket.create_connection((server, 53), timeout=FORWARD_TIMEOUT) as upstream:
                    upstream.sendall(len(packet).to_bytes(2, "big") + packet)
                    head = _read_exactly(upstream, 2)
                    answer = _read_exactly(upstream, int.from_bytes(head, "big")) if head else None
            except OSError:
                continue
            if answer and answer[:2] == packet[:2]:
                return answer
        return None

    @staticmethod
    def _failure(query: DNSRecord, rcode: int) -> bytes:
        reply = query.reply()
        reply.header.rcode = rcode
        return reply.pack()


def _arrival(ancillary) -> int:
    """The interface a datagram arrived on (``IP_PKTINFO``'s ``ipi_ifindex``)."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    return -1


def _addresses(answer: bytes) -> List[Tuple[str, int]]:
    """The (IPv4 address, TTL) records of an answer (those under a CNAME too)."""
    try:
        return [(str(rr.rdata), rr.ttl) for rr in DNSRecord.parse(answer).rr if rr.rtype == QTYPE.A]
    except DNSError:
        return []


def _read_exactly(conn: socket.socket, size: int) -> Optional[bytes]:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
