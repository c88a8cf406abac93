"""The TCP listener of a daemon with mutual TLS: each connection's TLS is
ended on a thread of its own, and its plain bytes reach the HTTP server
over a socket pair (``loop.connect_accepted_socket``).

Not asyncio's own TLS: a client's half-close (the docker CLI closes its
writing side as soon as an attach has no stdin to send: a TLS
``close_notify``) makes asyncio's TLS transport shut the whole connection,
and the attach's output is lost.  Here a ``close_notify`` is a half-close
of the pair, which the server already takes as one (the output goes on), as
dockerd does.  A handshake without a certificate the CA signed fails on the
thread: nothing reaches the server."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import ssl
import threading
from typing import Callable, Optional

__all__ = ["TlsFront"]

LOG = logging.getLogger("sandboxlib.daemon")
HANDSHAKE_TIMEOUT = 10.0
ACCEPT_PAUSE = 1.0  # seconds without accepting after the process ran out of fds (asyncio's servers' delay)
BUFFERED = 1 << 20  # at most this much is read ahead in each direction
_TLS_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsFront:
    """Accept on ``listener`` (in the loop), hand each connection to a thread (handshake and copying)."""

    def __init__(self, listener: socket.socket, context: ssl.SSLContext, protocol_factory: Callable) -> None:
        self._listener, self._context, self._factory = listener, context, protocol_factory
        self._loop = asyncio.get_running_loop()
        self._resume: Optional[asyncio.TimerHandle] = None
        self._loop.add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
        self._loop.remove_reader(self._listener.fileno())

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as err:  # EMFILE and the like: the listener stays readable, so pause (not a busy loop)
            LOG.warning("accepting a TCP connection: %s (no connection taken for %gs)", err, ACCEPT_PAUSE)
            self._pause()
            return
        try:
            threading.Thread(target=self._serve, args=(conn,), name="sandboxlib-tls", daemon=True).start()
        except RuntimeError as err:  # (no thread to be had: this connection is refused)
            LOG.warning("serving a TCP connection: %s", err)
            conn.close()
            self._pause()

    def _pause(self) -> None:
        self._loop.remove_reader(self._listener.fileno())
        self._resume = self._loop.call_later(ACCEPT_PAUSE, self._loop.add_reader, self._listener.fileno(), self._accept)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(HANDSHAKE_TIMEOUT)
            tls = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError) as err:  # (no certificate, another CA's, plain HTTP, a timeout)
            LOG.info("TLS handshake refused: %s", err)
            conn.close()
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            theirs.setblocking(False)
            future = asyncio.run_coroutine_threadsafe(
                self._loop.connect_accepted_socket(self._factory, theirs), self._loop
            )
            future.result()
        except (OSError, RuntimeError):  # (the loop has stopped: the server never took its end)
            theirs.close()
            ours.close()
            tls.close()
            return
        try:
            _copy(tls, ours)
        except OSError:  # (a client's reset): ours closed ends the server's side, in its loop
            pass  # (closing theirs here, under its live transport, freed its fd number for the next connection)
        finally:
            ours.close()
            tls.close()


def _copy(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Both directions until the server's side ends; the client's close_notify
    or EOF is passed on as a half-close."""
    tls.setblocking(False)
    plain.setblocking(False)
    to_plain, to_tls = bytearray(), bytearray()
    client_open, server_open, half_closed = True, True, False
    while True:
        if client_open and len(to_plain) < BUFFERED:
            client_open = _read(tls, to_plain, _TLS_AGAIN)
        if to_plain:
            _write(plain, to_plain, (BlockingIOError,))
        if not client_open and not to_plain and not half_closed:
            plain.shutdown(socket.SHUT_WR)
            half_closed = True
        if server_open and len(to_tls) < BUFFERED:
            server_open = _read(plain, to_tls, (BlockingIOError,))
        if to_tls:
            _write(tls, to_tls, _TLS_AGAIN)
        if not server_open and not to_tls:
            break  # the server has ended the connection and all it said is sent
        if client_open and tls.pending():
            continue
        readers = [s for s, wanted in ((tls, client_open and len(to_plain) < BUFFERED),
                                       (plain, server_open and len(to_tls) < BUFFERED)) if wanted]  # fmt: skip
        writers = [s for s, pending in ((plain, to_plain), (tls, to_tls)) if pending]
        if not readers and not writers:
            break
        select.select(readers, writers, [])
    try:
        tls.unwrap()  # our close_notify (the client's may not have come: then no wait for it)
    except (ssl.SSLError, OSError, ValueError):
        pass


def _read(sock: socket.socket, into: bytearray, again: tuple) -> bool:
    """Append what ``sock`` has; False at its EOF (a reset is one too)."""
    try:
        data = sock.recv(65536)
    except again:
        return True
    except OSError:
        return False
    into += data
    return bool(data)


def _write(sock: socket.socket, data: bytearray, again: tuple) -> None:
    try:
        sent = sock.send(data)
    except again:
        return
    del data[:sent]
