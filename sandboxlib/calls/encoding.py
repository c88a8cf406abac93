"""The safe encoding of what comes back from a sandbox: None, bool, int,
float, complex, str, bytes, and list/tuple/dict/set/frozenset of these, and
numpy arrays and scalars of plain dtypes (numbers, bool, bytes, str, dates:
their buffer, dtype and shape; numpy is imported only to decode one);
nothing else, no code run to decode it.

Standard library only: the host imports it; in the sandbox its source runs
first in the fork server's program text (see ``calls._server_source``)."""

import re
import struct
import sys

MAX_DEPTH = 100

_SCALARS = {type(None): b"N", bool: b"?", int: b"I", float: b"D", complex: b"J", str: b"S", bytes: b"B"}
_CONTAINERS = {list: b"L", tuple: b"U", set: b"E", frozenset: b"Z", dict: b"M"}
_LEN = struct.Struct(">I")


# numpy: the dtypes that are plain bytes (no object pointers, no fields),
# spelled as numpy's dtype.str spells them (byte order, kind, size, date unit).
_NUMPY_DTYPE = re.compile(r"[<>|=][?biufcmMSU][0-9]{1,6}(\[[0-9]{0,6}[a-zA-Z]{1,2}\])?")
_NUMPY_KINDS = "?biufcmMSU"
MAX_NDIM = 32


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
            for part in item if kind is dict else (item,):
                _encode(part, out, depth + 1)
    elif _is_numpy(kind):
        _encode_numpy(value, out, depth)
    else:
        raise UnsafeValue(_unsafe_message(value))


def _unsafe_message(value, why=""):
    kind = type(value)
    hint = " (convert it, e.g. with .tolist() or .item())" if hasattr(value, "tolist") else ""
    return (
        f"a {kind.__module__}.{kind.__qualname__}{why} is not one of the safe result types (None, bool, "
        "int, float, complex, str, bytes, list, tuple, dict, set, frozenset of them, numpy arrays and "
        f"scalars of plain dtypes){hint}; or pass trust_result=True to receive it pickled (only for "
        "code you trust)"
    )


def _is_numpy(kind):
    numpy = sys.modules.get("numpy")  # a numpy value exists only where numpy was imported
    return numpy is not None and issubclass(kind, (numpy.ndarray, numpy.generic))


def _encode_numpy(value, out, depth):
    """``A`` + (dtype, shape) + the C-order buffer; ``a`` + dtype + the scalar's bytes."""
    numpy = sys.modules["numpy"]
    dtype = value.dtype
    if (
        dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
        or not _NUMPY_DTYPE.fullmatch(dtype.str)
        or type(value) not in (numpy.ndarray, dtype.type)
    ):
        raise UnsafeValue(_unsafe_message(value, f" of dtype {dtype}"))
    if isinstance(value, numpy.ndarray):
        out.append(b"A")
        _encode((dtype.str, tuple(value.shape)), out, depth + 1)
        data = numpy.ascontiguousarray(value).tobytes()
    else:
        out.append(b"a")
        _encode(dtype.str, out, depth + 1)
        data = value.tobytes()
    out.append(_LEN.pack(len(data)) + data)


def decode(data):
    """The value of safe-encoded ``data``; ValueError if malformed (never runs code)."""
    value, end = _decode(memoryview(data), 0, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the value")
    return value


def _take(view, pos, size):
    if pos + size > len(view):
        raise ValueError("truncated value")
    return bytes(view[pos : pos + size]), pos + size


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
    if tag in (b"A", b"a"):
        return _decode_numpy(view, pos, depth, tag == b"A")
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


def _decode_numpy(view, pos, depth, array):
    """A numpy array or scalar: its dtype checked to be plain bytes (never
    objects), its shape against the data's size; numpy copies the bytes."""
    header, pos = _decode(view, pos, depth + 1)
    spec, shape = header if array and type(header) is tuple and len(header) == 2 else (header, ())
    if type(spec) is not str or not _NUMPY_DTYPE.fullmatch(spec):
        raise ValueError(f"not a plain numpy dtype: {spec!r}")
    if type(shape) is not tuple or len(shape) > MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"not a numpy shape: {shape!r}")
    raw, pos = _take(view, pos, 4)
    data, pos = _take(view, pos, _LEN.unpack(raw)[0])
    try:
        import numpy
    except ImportError:
        raise ValueError("a numpy value came back and numpy is not installed here") from None
    dtype = numpy.dtype(spec)
    if dtype.kind not in _NUMPY_KINDS or dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
        raise ValueError(f"not a plain numpy dtype: {spec!r}")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(data):
        raise ValueError(f"{len(data)} bytes are not a {spec} array of shape {shape}")
    values = numpy.frombuffer(data, dtype=dtype).copy()
    try:
        return (values.reshape(shape) if array else values[0]), pos
    except (ValueError, OverflowError) as err:  # an empty array of an impossible shape
        raise ValueError(f"not a numpy shape: {shape!r} ({err})") from None
