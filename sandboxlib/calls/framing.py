"""The frames and messages of ``call()``'s channel, shared by the host and the fork server.

Standard library only, like ``encoding`` and ``forkserver``: the host sends
this source to the sandboxed interpreter between theirs.  Frames, both ways:
one kind byte, a 4-byte big-endian length, the payload.  Messages from a
spare to its server: a 4-byte length, the message."""

import os
import struct

try:  # in the host; in the sandbox the encoding's source comes first in the program
    from .encoding import _LEN, decode, encode
except ImportError:
    pass

HEADER = struct.Struct(">cI")


def write_frame(fd, kind, payload=b""):
    data = memoryview(HEADER.pack(kind, len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_request(fd):
    """A frame read with as few reads as possible: the host sends nothing
    more until it has the answer, so reading ahead takes nothing away."""
    data = os.read(fd, 1 << 16)
    while len(data) < HEADER.size:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError
        data += chunk
    kind, size = HEADER.unpack(data[: HEADER.size])
    missing = HEADER.size + size - len(data)
    if missing > 0:
        data += _read_exact(fd, missing)
    return kind, data[HEADER.size : HEADER.size + size]


def read_frame(fd):
    kind, size = HEADER.unpack(_read_exact(fd, HEADER.size))
    return kind, _read_exact(fd, size)


def request(what, timeout, trust, pickled):
    """A C frame's payload: a safe header (what, timeout, trust) the server
    reads without unpickling, then the pickle only the call's process loads."""
    header = encode((what, timeout, trust))
    return _LEN.pack(len(header)) + header + pickled


def split_request(payload):
    (size,) = _LEN.unpack(payload[:4])
    return decode(payload[4 : 4 + size]), payload[4 + size :]


def _send(fd, message):
    """A message from a spare to the server: a 4-byte length, the message."""
    view = memoryview(_LEN.pack(len(message)) + message)
    while view:
        view = view[os.write(fd, view) :]


def _complete(messages):
    """A whole message at the start: its 4-byte length and that many bytes."""
    return len(messages) >= 4 and len(messages) - 4 >= _LEN.unpack(messages[:4])[0]


def _split_message(messages):
    end = 4 + _LEN.unpack(messages[:4])[0]
    return bytes(messages[4:end]), messages[end:]


def _kinds(messages):
    """The kinds of the whole messages in ``messages``."""
    kinds = set()
    while _complete(messages):
        message, messages = _split_message(messages)
        kinds.add(message[:1])
    return kinds
