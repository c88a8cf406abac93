"""The safe encoding of what comes back from a sandbox: None, bool, int,
float, complex, str, bytes, and list/tuple/dict/set/frozenset of these;
nothing else, no code run to decode it.

Standard library only: the host imports it; in the sandbox its source runs
first in the fork server's program text (see ``calls._server_source``)."""
import struct

MAX_DEPTH = 100

_SCALARS = {type(None): b"N", bool: b"?", int: b"I", float: b"D", complex: b"J", str: b"S", bytes: b"B"}
_CONTAINERS = {list: b"L", tuple: b"U", set: b"E", frozenset: b"Z", dict: b"M"}
_LEN = struct.Struct(">I")


class UnsafeValue(TypeError):
    """A value outside the safe types (or nested too deep)."""


def encode(value, depth=0):
    """Bytes of ``value`` in the safe encoding; UnsafeValue otherwise."""
    out = []
    _encode(value, out, depth)
    return b"".join(out)


def _encode(value, out, depth):
    kind = type(value)
    if depth > MAX_DEPTH:
        raise UnsafeValue(f"the value is nested deeper than {MAX_DEPTH} levels")
    if kind in _SCALARS:
        out.append(_SCALARS[kind])
        if kind is bool:
            out.append(b"\1" if value else b"\0")
        elif kind is int:  # two's complement bytes: no digit limit, no parsing
            data = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
            out.append(_LEN.pack(len(data)) + data)
        elif kind is float:
            out.append(struct.pack(">d", value))
        elif kind is complex:
            out.append(struct.pack(">dd", value.real, value.imag))
        elif kind is not type(None):
            data = value.encode("utf-8", "surrogatepass") if kind is str else value
            out.append(_LEN.pack(len(data)) + data)
    elif kind in _CONTAINERS:
        items = value.items() if kind is dict else value
        out.append(_CONTAINERS[kind] + _LEN.pack(len(value)))
        for item in items:
            for part in (item if kind is dict else (item,)):
                _encode(part, out, depth + 1)
    else:
        raise UnsafeValue(f"a {kind.__module__}.{kind.__qualname__} is not one of the safe result types "
                          "(None, bool, int, float, complex, str, bytes, and list, tuple, dict, set, "
                          "frozenset of them); pass trust_result=True to receive it pickled")


def decode(data):
    """The value of safe-encoded ``data``; ValueError if malformed (never runs code)."""
    value, end = _decode(memoryview(data), 0, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the value")
    return value


def _take(view, pos, size):
    if pos + size > len(view):
        raise ValueError("truncated value")
    return bytes(view[pos:pos + size]), pos + size


def _decode(view, pos, depth):
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    tag, pos = _take(view, pos, 1)
    if tag == b"N":
        return None, pos
    if tag == b"?":
        flag, pos = _take(view, pos, 1)
        return flag != b"\0", pos
    if tag == b"D":
        raw, pos = _take(view, pos, 8)
        return struct.unpack(">d", raw)[0], pos
    if tag == b"J":
        raw, pos = _take(view, pos, 16)
        return complex(*struct.unpack(">dd", raw)), pos
    raw, pos = _take(view, pos, 4)
    (size,) = _LEN.unpack(raw)
    if tag in (b"I", b"S", b"B"):
        data, pos = _take(view, pos, size)
        if tag == b"I":
            return int.from_bytes(data, "big", signed=True), pos
        return (data.decode("utf-8", "surrogatepass") if tag == b"S" else data), pos
    if tag not in (b"L", b"U", b"E", b"Z", b"M"):
        raise ValueError(f"unknown tag {tag!r}")
    if size > len(view) - pos:  # every item takes at least one byte
        raise ValueError("truncated container")
    items = []
    for _ in range(size * 2 if tag == b"M" else size):
        item, pos = _decode(view, pos, depth + 1)
        items.append(item)
    if tag == b"M":
        return dict(zip(items[::2], items[1::2])), pos
    return {b"L": list, b"U": tuple, b"E": set, b"Z": frozenset}[tag](items), pos
