"""Plain values checked and parsed once: sizes within the kernel's bounds, text, paths inside the
container, timeouts, environment pairs."""

from __future__ import annotations

import codecs
import os
import posixpath
import re
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ConfigError

__all__ = [
    "parse_size",
    "check_kernel_dirs",
    "PAGE_SIZE",
    "TMPFS_MAX",
    "MEMORY_MAX",
    "PIDS_MAX",
    "RLIM_INFINITY",
    "ID_MAX",
    "bounded_size",
    "tmpfs_size",
    "check_text",
    "check_timeout",
    "data_bytes",
    "text_codec",
    "container_path",
    "env_pairs",
    "check_env",
]

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


_ENV_NAME = re.compile(r"^[^=\0]+$")


def parse_size(value: Union[int, str], field: str) -> int:
    """Bytes from an int or a string like ``"64M"`` (binary units, as Docker)."""
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a size, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(-?\d+)\s*(?:([kmgt])(?:i?b)?|(b))?\s*", value, re.IGNORECASE)
        if not match:
            raise ConfigError(field, f"{value!r} is not a size (use e.g. 65536, '64k', '64M', '1G')")
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    else:
        raise ConfigError(field, f"expected a size, got {type(value).__name__}")
    if size < 0:
        raise ConfigError(field, f"size must not be negative, got {value!r}")
    return size


def check_kernel_dirs(root: str, field: str) -> None:
    """Refuse a root whose /proc or /sys is a symlink: the kernel file
    system and its masks would be mounted wherever it points (runc's
    CVE-2019-19921 check)."""
    for name in ("proc", "sys"):
        path = os.path.join(root, name)
        if os.path.islink(path):
            raise ConfigError(
                field,
                f"{path!r} is a symlink (to {os.readlink(path)!r}); /{name} of a "
                f"container root must be a directory or absent",
            )


# The kernel's bounds of the sizes and counts below (one place each); a
# larger value would wrap or be clamped silently (tmpfs size=2**64 is
# "size=0", unlimited; memory=2**70 is a limit of 0), so it is refused.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


TMPFS_MAX = 2**64 - PAGE_SIZE  # tmpfs rounds size up to pages in 64 bits


MEMORY_MAX = (2**63 - 1) // PAGE_SIZE * PAGE_SIZE  # the cgroup page counter's max ("max")


PIDS_MAX = 4 * 1024 * 1024  # PID_MAX_LIMIT: pids.max refuses more (64-bit kernels)


RLIM_INFINITY = 2**64 - 1  # setrlimit's rlim_t


ID_MAX = 2**32 - 2  # the highest uid/gid: 32 bits, (uid_t)-1 is "no id"


def bounded_size(value: Union[int, str], field: str, high: int, low: int = 0) -> int:
    """``parse_size`` within ``[low, high]`` (the kernel's bound of the field)."""
    size = parse_size(value, field)
    if not low <= size <= high:
        raise ConfigError(field, f"{value!r} is out of range: must be from {low} to {high} bytes")
    return size


def tmpfs_size(value: Union[int, str], field: str) -> int:
    """A tmpfs size: at least one byte (the kernel reads 0 as unlimited:
    leave the size out for the default) and no more than fits in 64 bits
    once rounded up to pages."""
    return bounded_size(value, field, TMPFS_MAX, low=1)


def check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(field, f"expected a string, got {type(value).__name__}")
    if "\0" in value:
        raise ConfigError(field, "must not contain NUL bytes")
    return value


def check_timeout(value: object, field: str = "timeout", *, zero: bool = False) -> Optional[float]:
    """A timeout in seconds: None (no timeout) or a positive, finite int or
    float; ``zero``: 0 too (a poll, as ``Popen.wait(0)``)."""
    if value is None:
        return None
    low = "0 or more" if zero else "more than 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"expected None or a number of seconds ({low}), got {value!r}")
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise ConfigError(field, f"must be None or a finite number of seconds, {low}, got {value!r}")
    return float(value)


def check_window_size(rows: object, cols: object) -> Tuple[int, int]:
    """A terminal's window size: rows and columns, each an int from 1 to
    65535 (struct winsize holds unsigned shorts; 0 would mean unknown)."""
    for field, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"the window size takes an int from 1 to 65535, got {value!r}")
        if not 1 <= value <= 0xFFFF:
            raise ConfigError(field, f"the window size takes an int from 1 to 65535, got {value}")
    return rows, cols  # type: ignore[return-value]


DEFAULT_TTY_SIZE = (24, 80)


def tty_size(tty: object) -> Optional[Tuple[int, int]]:
    """The ``tty`` argument of a command: False (pipes, as asked), True (a
    24x80 pseudo-terminal) or (rows, cols): the terminal's initial size."""
    if tty is False or tty is None:
        return None
    if tty is True:
        return DEFAULT_TTY_SIZE
    if isinstance(tty, tuple) and len(tty) == 2:
        return check_window_size(*tty)
    raise ConfigError("tty", f"expected True, False or a (rows, cols) window size, got {tty!r}")


def data_bytes(value: object, field: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Bytes to write: bytes-like as they are, a str encoded (UTF-8 unless told)."""
    if isinstance(value, str):
        try:
            return value.encode(encoding, errors)
        except (LookupError, UnicodeError) as err:
            raise ConfigError(field, f"cannot encode the str as {encoding!r} ({err})") from None
    try:
        return bytes(memoryview(value))  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(field, f"expected bytes or str, got {type(value).__name__}") from None


def text_codec(text: bool, encoding: Optional[str], errors: Optional[str]) -> Optional[Tuple[str, str]]:
    """(encoding, errors) of a command's output as str, or None for bytes
    (as ``subprocess.run``: ``text=True`` or an ``encoding``/``errors``)."""
    if not isinstance(text, bool):
        raise ConfigError("text", f"expected True or False, got {text!r}")
    if not (text or encoding is not None or errors is not None):
        return None
    try:
        codecs.lookup(check_text(encoding or "utf-8", "encoding"))
    except LookupError:
        raise ConfigError("encoding", f"unknown encoding {encoding!r}") from None
    try:
        codecs.lookup_error(check_text(errors or "strict", "errors"))
    except LookupError:
        raise ConfigError("errors", f"unknown error handler {errors!r} (e.g. 'strict', 'replace')") from None
    return encoding or "utf-8", errors or "strict"


def container_path(value: object, field: str) -> str:
    """An absolute, normalized path inside the container."""
    path = check_text(os.fspath(value) if isinstance(value, os.PathLike) else value, field)
    if not path.startswith("/"):
        raise ConfigError(field, f"must be an absolute path inside the container, got {path!r}")
    return posixpath.normpath(path).replace("//", "/")


def _int_field(value: object, field: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigError(
            field,
            f"must be between {low} and {high}, got {value}"
            if high is not None
            else f"must be at least {low}, got {value}",
        )
    return value


def _str_tuple(value: Iterable[str]) -> Tuple[str, ...]:
    return tuple(value)


def env_pairs(value: Optional[Mapping[str, str]]) -> Tuple[Tuple[str, str], ...]:
    """A mapping of names to values as a tuple of pairs; ConfigError otherwise."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError("env", f"expected a mapping of names to values, got {type(value).__name__}")
    return tuple((k, v) for k, v in value.items())


def check_env(env: Sequence[Tuple[str, str]], field: str = "env") -> None:
    for name, value in env:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ConfigError(f"{field}[{name!r}]", "names must be non-empty and contain no '=' or NUL")
        check_text(value, f"{field}[{name!r}]")
