"""The "outside world" of the network tests, run inside its own network
namespace: HTTP on port 80 of its addresses, IPv4 and IPv6 (answers "hello from
ADDRESS-OF-THE-CLIENT") and DNS on port 53 (UDP and TCP) of the first (``second.internal``
is the second address, every other name under ``.internal`` the first;
``six.internal`` and ``six-second.internal`` have only AAAA records, the
IPv6 addresses; any other name does not exist).  Prints "ready" once all listen."""

import http.server
import socket
import sys
import threading

from dnslib import AAAA, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

ADDRESS, SECOND, ADDRESS6, SECOND6 = sys.argv[1:5]
SIX = {"six.internal": ADDRESS6, "six-second.internal": SECOND6}


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Internal(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if name in SIX:
            if request.q.qtype == QTYPE.AAAA:
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(SIX[name]), ttl=60))
        elif name.endswith(".internal"):
            if request.q.qtype == QTYPE.A:
                address = SECOND if name == "second.internal" else ADDRESS
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class Quiet:
    def __getattr__(self, name):
        return lambda *args: None


for tcp in (False, True):
    DNSServer(Internal(), address=ADDRESS, port=53, logger=Quiet(), tcp=tcp).start_thread()


class Six(http.server.ThreadingHTTPServer):
    """IPv6 alone (the IPv4 server has port 80 of 0.0.0.0)."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


for server in (http.server.ThreadingHTTPServer(("0.0.0.0", 80), Hello), Six(("::", 80), Hello)):
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
