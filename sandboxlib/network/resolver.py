"""The embedded resolver of a network (Docker's 127.0.0.11 behaviour): it
answers the names of the containers on the network and forwards every other
question to the host's resolvers, from the host's side (where a loopback
resolver such as systemd-resolved's 127.0.0.53 answers).  UDP only.

It listens on the bridge's own address, port 53, in the host's namespace,
not on 127.0.0.11 inside the container: a socket there would take port 53
from the container's own programs (a DNS server in a container binds
0.0.0.0:53).  Each container's owner serves one socket (``SO_REUSEPORT``:
the kernel spreads the queries over the owners' sockets, which all give the
same answers, read from the network's leases), from a thread of the host
process (gone with it: nothing to sweep).  Only queries that arrive on the
bridge are answered: another network's containers learn nothing."""

from __future__ import annotations

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
Lookup = Callable[[str], Optional[str]]  # name -> IPv4 address on this network, or None
# (client address, name) -> None: no allow-list; False: the name is not allowed;
# or a callable given the (address, TTL) answers of an allowed name, before they are returned.
Gate = Callable[[str, str], Union[None, bool, Callable[[List[Tuple[str, int]]], None]]]


class Resolver:
    """Serve ``sock`` (UDP, bound in the container) until :meth:`close`."""

    def __init__(
        self, sock: socket.socket, bridge_index: int, upstreams: List[str], lookup: Lookup, gate: Gate
    ) -> None:
        self._sock, self._upstreams, self._lookup, self._gate = sock, upstreams, lookup, gate
        self._bridge_index = bridge_index
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="sandboxlib-resolver", daemon=True)
        self._thread.start()

    @classmethod
    def on_bridge(cls, address: str, bridge_index: int, upstreams: List[str], lookup: Lookup, gate: Gate) -> Resolver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((address, 53))
        except BaseException:
            sock.close()
            raise
        return cls(sock, bridge_index, upstreams, lookup, gate)

    def close(self) -> None:
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_w = -1
        self._sock.close()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    return
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

    def _answer(self, packet: bytes, client: str) -> Optional[bytes]:
        try:
            query = DNSRecord.parse(packet)
        except DNSError:
            return None
        question = query.q
        name = str(question.qname).rstrip(".")
        address = self._lookup(name.lower()) if question.qclass == 1 else None
        if address is not None:
            reply = query.reply()
            if question.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
            return reply.pack()  # AAAA etc.: the name exists, without such records
        gate = self._gate(client, name.lower())
        if gate is False:  # not on the container's allow-list: refused at once
            return self._failure(query, RCODE.REFUSED)
        answer = self._forward(packet)
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
