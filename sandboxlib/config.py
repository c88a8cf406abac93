"""Frozen, keyword-only configuration.  Validators name the field at fault
and run before any kernel resource exists."""
from __future__ import annotations

import codecs
import enum
import inspect
import os
import posixpath
import re
import resource
import typing
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Set, Tuple, Union

import attrs

from .security.capabilities import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, normalize_capability
from .errors import ConfigError
from .security.seccomp import DEFAULT, Seccomp, SeccompOption, seccomp_option

__all__ = ["Mount", "MountKind", "IdMapping", "Limits", "CgroupLimits", "Network", "ContainerConfig",
           "parse_size", "takes_container_options", "config_of", "check_timeout", "data_bytes", "text_codec",
           "network_option"]

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
            raise ConfigError(field, f"{path!r} is a symlink (to {os.readlink(path)!r}); /{name} of a "
                                     f"container root must be a directory or absent")


# The kernel's bounds of the sizes and counts below (one place each); a
# larger value would wrap or be clamped silently (tmpfs size=2**64 is
# "size=0", unlimited; memory=2**70 is a limit of 0), so it is refused.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TMPFS_MAX = 2**64 - PAGE_SIZE            # tmpfs rounds size up to pages in 64 bits
MEMORY_MAX = (2**63 - 1) // PAGE_SIZE * PAGE_SIZE  # the cgroup page counter's max ("max")
PIDS_MAX = 4 * 1024 * 1024              # PID_MAX_LIMIT: pids.max refuses more (64-bit kernels)
RLIM_INFINITY = 2**64 - 1               # setrlimit's rlim_t
ID_MAX = 2**32 - 2                      # the highest uid/gid: 32 bits, (uid_t)-1 is "no id"


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


class MountKind(enum.Enum):
    BIND = "bind"
    TMPFS = "tmpfs"
    VOLUME = "volume"


class WritableLayer(enum.Enum):
    """Where an image root's writes go: a directory of the image store
    (``HOME/containers/ID``, the default, as Docker's), or a tmpfs of the
    container's own (counted against memory).  Either is gone with the container."""

    DISK = "disk"
    TMPFS = "tmpfs"


def _writable_layer(value: Union[WritableLayer, str]) -> WritableLayer:
    try:
        return WritableLayer(value)
    except ValueError:
        raise ConfigError("writable_layer", f"{value!r} is not one of {[w.value for w in WritableLayer]}") from None


_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The kernel file systems the container gets fresh, with masked and
# read-only paths below them: a mount on or under one would cover the masks
# (as runc, refuse mounts over them).  Paths are normalized first; /dev
# itself is refused too (``Mount.check``).  csrc/mounts.c refuses the same
# paths once a target is resolved in the root (a symlink may lead there).
KERNEL_MOUNTS = ("/proc", "/sys", "/dev/pts")


@attrs.frozen(kw_only=True)
class Mount:
    """A mount inside the container; build it with :meth:`bind` or :meth:`tmpfs`."""

    kind: MountKind
    target: str
    source: Optional[str] = None
    read_only: bool = False
    size: Optional[int] = attrs.field(default=None,
                                      converter=attrs.converters.optional(lambda v: tmpfs_size(v, "size")))
    mode: int = 0o1777

    @classmethod
    def bind(cls, source: Union[str, os.PathLike], target: Union[str, os.PathLike], *,
             read_only: bool = False) -> "Mount":
        """Bind the host path ``source`` (file or directory, recursively) at ``target``."""
        src = os.path.abspath(check_text(os.fspath(source), "source"))
        return cls(kind=MountKind.BIND, source=src, target=container_path(target, "target"),
                   read_only=read_only)

    @classmethod
    def tmpfs(cls, target: Union[str, os.PathLike], *, size: Union[int, str, None] = None,
              mode: int = 0o1777, read_only: bool = False) -> "Mount":
        """A fresh tmpfs at ``target``; ``size`` in bytes or as ``"64M"``."""
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ConfigError("mode", f"must be a permission mode such as 0o1777, got {mode!r}")
        return cls(kind=MountKind.TMPFS, target=container_path(target, "target"),
                   size=size, mode=mode,
                   read_only=read_only)

    @classmethod
    def volume(cls, name: str, target: Union[str, os.PathLike], *, read_only: bool = False) -> "Mount":
        """The named volume ``name`` of the image store (made empty on first
        use, kept until ``ImageStore.remove_volume``) at ``target``."""
        if not isinstance(name, str) or not _VOLUME_NAME.fullmatch(name):
            raise ConfigError("name", f"{name!r} is not a volume name (letters, digits, '_', '.', '-')")
        return cls(kind=MountKind.VOLUME, source=name, target=container_path(target, "target"),
                   read_only=read_only)

    def check(self, field: str) -> None:
        """Check what can only be checked on this host (the source exists)."""
        if self.target == "/":
            raise ConfigError(f"{field}.target", "cannot mount over the container root")
        if self.target == "/dev":
            raise ConfigError(f"{field}.target", "'/dev' is made by the container (its devices, /dev/pts, "
                                                 "/dev/shm, /dev/mqueue): they would be made inside this "
                                                 "mount (in the host directory, for a bind); mount below /dev, "
                                                 "or bind single devices")
        covered = next((k for k in KERNEL_MOUNTS if self.target == k or self.target.startswith(k + "/")), None)
        if covered is not None:
            raise ConfigError(f"{field}.target", f"{self.target!r} is on or under {covered}, which the "
                                                 f"container gets fresh from the kernel (with its masked "
                                                 f"paths): mount elsewhere")
        if self.kind is MountKind.BIND and (self.source is None or not os.path.exists(self.source)):
            raise ConfigError(f"{field}.source", f"{self.source!r} does not exist on the host")


@attrs.frozen(kw_only=True)
class IdMapping:
    """``size`` ids from ``container`` inside map to ``host`` outside."""

    container: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 0, ID_MAX))
    host: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 0, ID_MAX))
    size: int = attrs.field(validator=lambda _, a, v: _int_field(v, a.name, 1, ID_MAX + 1))

    def __attrs_post_init__(self) -> None:
        for name, first in (("container", self.container), ("host", self.host)):
            if first + self.size - 1 > ID_MAX:  # the kernel refuses a range that wraps
                raise ConfigError("size", f"{name} ids {first}..{first + self.size - 1} go past the "
                                          f"highest id {ID_MAX} ((uid_t)-1 is no id)")

    def line(self) -> str:
        return f"{self.container} {self.host} {self.size}"

    def to_host(self, inside: int) -> Optional[int]:
        if self.container <= inside < self.container + self.size:
            return self.host + inside - self.container
        return None


RLIMITS = ("nofile", "nproc", "core", "fsize", "as", "cpu", "stack", "memlock", "data")
RlimitValue = Union[int, str, Tuple[Union[int, str], Union[int, str]]]
MIN_MEMORY = 6 << 20  # as Docker: less cannot even start a shell
CPU_PERIOD_US = 100_000
_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _check_host_hard_limit(name: str, hard: int, field: str) -> None:
    """A command's hard limit cannot be above this process's: raising it needs
    CAP_SYS_RESOURCE in the host's user namespace, which no command keeps."""
    host_hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    if host_hard != resource.RLIM_INFINITY and hard > host_hard:
        raise ConfigError(field, f"hard limit {hard} is above this process's hard limit {host_hard} "
                                 f"(`ulimit -H`), which a container cannot raise")


@attrs.frozen(kw_only=True)
class CgroupLimits:
    """The cgroup limits of a :class:`Limits`, checked and in kernel units.

    ``memory_swap`` is memory plus swap in bytes, None for unlimited swap.
    ``cpu_quota_us`` is per ``CPU_PERIOD_US``; ``cpuset_cpus`` a list such as ``0-1,3``."""

    memory: Optional[int] = None
    memory_swap: Optional[int] = None
    cpu_quota_us: Optional[int] = None
    cpu_shares: Optional[int] = None
    pids: Optional[int] = None
    cpuset_cpus: Optional[str] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in attrs.astuple(self))

    def names(self) -> Tuple[str, ...]:
        """The ``limits.*`` fields that are set, for messages."""
        fields = {"cpu_quota_us": "cpus", "cpuset_cpus": "cpuset_cpus"}
        return tuple(f"limits.{fields.get(k, k)}" for k, v in attrs.asdict(self).items() if v is not None)


def _int_field(value: object, field: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigError(field, f"must be between {low} and {high}, got {value}" if high is not None
                          else f"must be at least {low}, got {value}")
    return value


def _str_tuple(value: Iterable[str]) -> Tuple[str, ...]:
    return tuple(value)


def _cpu_list(value: object, field: str) -> str:
    text = check_text(value, field).replace(" ", "")
    if not _CPUSET.match(text):
        raise ConfigError(field, f"{value!r} is not a CPU list such as '0-1,3'")
    cpus: Set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise ConfigError(field, f"{part!r} is an empty range")
        cpus.update(range(int(low), int(high or low) + 1))
    missing = cpus - os.sched_getaffinity(0)
    if missing:
        raise ConfigError(field, f"CPU {min(missing)} is not available here (this process may use "
                                 f"{sorted(os.sched_getaffinity(0))})")
    return text


def _rlimit(name: str):
    """The converter of one rlimit field: ``N`` or ``(soft, hard)`` -> ``(soft, hard)`` in bytes or counts."""
    field = f"limits.{name}"

    def convert(value: Optional[RlimitValue]) -> Optional[Tuple[int, int]]:
        if value is None:
            return None
        if isinstance(value, tuple) and len(value) != 2:
            raise ConfigError(field, f"expected N or (soft, hard), got {value!r}")
        soft, hard = value if isinstance(value, tuple) else (value, value)
        soft, hard = bounded_size(soft, field, RLIM_INFINITY), bounded_size(hard, field, RLIM_INFINITY)
        if soft > hard:
            raise ConfigError(field, f"soft limit {soft} is above the hard limit {hard}")
        _check_host_hard_limit(name, hard, field)
        return soft, hard

    return convert


def _memory(value: Union[int, str, None]) -> Optional[int]:
    return None if value is None else bounded_size(value, "limits.memory", MEMORY_MAX, low=MIN_MEMORY)


def _memory_swap(value: Union[int, str, None]) -> Optional[int]:
    if value is None or value in (-1, "-1"):
        return None if value is None else -1
    return bounded_size(value, "limits.memory_swap", MEMORY_MAX)


def _cpus(value: Union[float, str, None]) -> Optional[float]:
    host_cpus = os.cpu_count() or 1  # None: unknown
    if isinstance(value, str):  # "1.5", as docker run --cpus
        try:
            value = float(value)
        except ValueError:
            raise ConfigError("limits.cpus", f"{value!r} is not a number of CPUs such as 1.5") from None
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0.01 <= value <= host_cpus):
        raise ConfigError("limits.cpus", f"must be a number from 0.01 to {host_cpus} "
                                         f"(the CPUs of this host), got {value!r}")
    return value


def _bounded_int(field: str, low: int, high: int):
    def convert(value: Optional[int]) -> Optional[int]:
        return None if value is None else _int_field(value, field, low, high)
    return convert


def _cpuset(value: Optional[str]) -> Optional[str]:
    return None if value is None else _cpu_list(value, "limits.cpuset_cpus")


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits: per-process rlimits and per-container cgroup limits.

    rlimits (``setrlimit`` of every command), each ``N`` or ``(soft, hard)``:
    ``nofile``, ``nproc``, ``core``, ``fsize``, ``as`` (``address_space``), ``cpu``
    (seconds), ``stack``, ``memlock``, ``data``; the sizes also take strings like
    ``"100M"``.  Use ``Limits.from_dict({"as": ...})`` for the names that are Python keywords.

    cgroup limits (the whole container together):
        memory: bytes or ``"256M"`` (at least 6M); the OOM killer acts above it.
        memory_swap: memory plus swap (Docker's ``--memory-swap``): at least ``memory``,
            or -1 for unlimited swap; by default as much swap as memory.
        cpus: CPU time as a number of CPUs, e.g. 1.5 or ``"1.5"`` (a CFS quota per 100 ms).
        cpu_shares: relative CPU weight under contention (2-262144, default 1024).
        pids: the most processes and threads at once.
        cpuset_cpus: the CPUs it may run on, e.g. ``"0-1,3"``.

    Every value is parsed and checked when the Limits is made (``ConfigError``
    names the field): ``memory`` reads back in bytes, an rlimit as ``(soft, hard)``.
    """

    # (type: ignore: mypy's attrs plugin takes only named functions as converters; these
    # are made per field, so that their errors name it.)

    nofile: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("nofile"))  # type: ignore[misc]
    nproc: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("nproc"))  # type: ignore[misc]
    core: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("core"))  # type: ignore[misc]
    fsize: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("fsize"))  # type: ignore[misc]
    as_: Optional[Tuple[int, int]] = attrs.field(default=None, alias="address_space", converter=_rlimit("as"))  # type: ignore[misc]
    cpu: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("cpu"))  # type: ignore[misc]
    stack: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("stack"))  # type: ignore[misc]
    memlock: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("memlock"))  # type: ignore[misc]
    data: Optional[Tuple[int, int]] = attrs.field(default=None, converter=_rlimit("data"))  # type: ignore[misc]
    memory: Optional[int] = attrs.field(default=None, converter=_memory)
    memory_swap: Optional[int] = attrs.field(default=None, converter=_memory_swap)
    cpus: Optional[float] = attrs.field(default=None, converter=_cpus)
    cpu_shares: Optional[int] = attrs.field(default=None, converter=_bounded_int("limits.cpu_shares", 2, 262144))  # type: ignore[misc]
    pids: Optional[int] = attrs.field(default=None, converter=_bounded_int("limits.pids", 1, PIDS_MAX))  # type: ignore[misc]
    cpuset_cpus: Optional[str] = attrs.field(default=None, converter=_cpuset)

    def __attrs_post_init__(self) -> None:
        if self.memory_swap is not None:
            if self.memory is None:
                raise ConfigError("limits.memory_swap", "needs limits.memory (it is memory plus swap)")
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise ConfigError("limits.memory_swap", f"{self.memory_swap} is below limits.memory "
                                                        "(it is memory plus swap; -1: unlimited swap)")

    @classmethod
    def from_dict(cls, values: Mapping[str, RlimitValue]) -> "Limits":
        known = set(RLIMITS) | {a.name for a in attrs.fields(cls)} - {"as_"}
        unknown = set(values) - known
        if unknown:
            raise ConfigError("limits", f"unknown limit {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
        options: Dict[str, Any] = {("address_space" if k == "as" else k): v for k, v in values.items()}
        return cls(**options)  # each checked by its validator

    def rlimits(self) -> Tuple[Tuple[str, int, int], ...]:
        """(name, soft, hard) for every set rlimit."""
        values = ((name, getattr(self, "as_" if name == "as" else name)) for name in RLIMITS)
        return tuple((name, *value) for name, value in values if value is not None)

    def cgroup(self) -> CgroupLimits:
        """The cgroup limits in kernel units."""
        swap = None
        if self.memory is not None and self.memory_swap != -1:
            swap = self.memory_swap or min(2 * self.memory, MEMORY_MAX)  # as much swap as memory by default
        quota = None if self.cpus is None else max(1000, round(self.cpus * CPU_PERIOD_US))
        return CgroupLimits(memory=self.memory, memory_swap=swap, cpu_quota_us=quota, cpu_shares=self.cpu_shares,
                            pids=self.pids, cpuset_cpus=self.cpuset_cpus)


class Network(enum.Enum):
    """``NONE``: a private network namespace with only ``lo`` up.  ``HOST``: the host's."""

    NONE = "none"
    HOST = "host"


def _tuple_of_mounts(value: Sequence[Mount]) -> Tuple[Mount, ...]:
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


# The converters of ContainerConfig's fields.  Their annotated parameter is
# what ``ContainerConfig(...)``, ``Container(...)`` and ``run(...)`` accept.
def _host_path(value: Union[str, os.PathLike, None]) -> Optional[str]:
    return None if value is None else os.fspath(value)


def _cwd(value: Optional[str]) -> Optional[str]:
    return None if value is None else container_path(value, "cwd")


def _limits(value: Optional[Limits]) -> Limits:
    return Limits() if value is None else value


def _id_maps(value: Optional[Sequence[IdMapping]]) -> Optional[Tuple[IdMapping, ...]]:
    return None if value is None else tuple(value)


def network_option(value: Union[Network, str]) -> Network:
    """``network=`` of ``run``, ``Container``, ``Pool`` and ``sandboxed``: a
    :class:`Network` or its value (``"none"``, ``"host"``)."""
    try:
        return Network(value)
    except ValueError:
        hint = f" ({'host' if value else 'none'!r} for {value!r})" if isinstance(value, bool) else ""
        raise ConfigError("network", f"expected one of {[n.value for n in Network]} or a Network, "
                                     f"got {value!r}{hint}") from None


def _writable_layer_size(value: Union[int, str, None]) -> Optional[int]:
    return None if value is None else tmpfs_size(value, "writable_layer_size")


@attrs.frozen(kw_only=True, cache_hash=True)
class ContainerConfig:
    """Everything that describes one container.

    Attributes:
        rootfs: a host directory to use as the root, or None for the host view
            (the host's system directories read-only, fresh /tmp and /run).
        read_only: make the root read-only.
        hostname: the UTS hostname (default: the first 12 hex digits of the id).
        env: environment added to every command (besides PATH, HOME, TERM defaults).
        mounts: bind and tmpfs mounts, applied after the root (parents first).
        user: ``"uid[:gid]"`` or ``"name[:group]"`` resolved in the container's /etc/passwd.
        cwd: the default working directory of commands (default: the image's
            WorkingDir, else ``/``).
        image: an image reference (``name:tag``, ``name@sha256:...``, an id) in
            ``image_store``: the root is an overlay of its layers with a
            writable layer of the container's own, gone with the container.
        image_store: the store's directory (default: ``images.default_home()``).
        writable_layer: where the container's writes go: ``WritableLayer.DISK``
            (default: ``containers/ID/upper`` in the store; a read-only root
            gets none) or ``WritableLayer.TMPFS`` (``"tmpfs"``: in memory).
        writable_layer_size: the tmpfs writable layer's size limit (bytes or
            ``"64M"``; default: the kernel's, half of the memory); only with
            ``writable_layer="tmpfs"``.
        limits: per-process rlimits and the container's cgroup limits.
        userns: run in a user namespace (always when not root; default True as root too).
        uid_map, gid_map: id mappings of the user namespace (default: see ``idmap``).
        network: ``Network.NONE`` (loopback only) or ``Network.HOST``.
        cap_add, cap_drop: capability names added to or dropped from the default set.
        seccomp: the syscall filter of every command: a :class:`Seccomp` policy
            (default: Docker's default profile, ``Seccomp.default()``), or None
            for none.
    """

    rootfs: Optional[str] = attrs.field(default=None, converter=_host_path)
    read_only: bool = False
    hostname: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = attrs.field(default=None, converter=env_pairs)
    mounts: Tuple[Mount, ...] = attrs.field(default=(), converter=_tuple_of_mounts)
    user: Optional[str] = None
    cwd: Optional[str] = attrs.field(default=None, converter=_cwd)
    limits: Limits = attrs.field(default=None, converter=_limits)
    userns: bool = True
    uid_map: Optional[Tuple[IdMapping, ...]] = attrs.field(default=None, converter=_id_maps)
    gid_map: Optional[Tuple[IdMapping, ...]] = attrs.field(default=None, converter=_id_maps)
    network: Network = attrs.field(default=Network.NONE, converter=network_option)
    cap_add: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cap_drop: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    seccomp: Optional[Seccomp] = attrs.field(default=DEFAULT, converter=seccomp_option)  # type: ignore[assignment]
    image: Optional[str] = None
    image_store: Optional[str] = attrs.field(default=None, converter=_host_path)
    writable_layer: WritableLayer = attrs.field(default=WritableLayer.DISK, converter=_writable_layer)
    writable_layer_size: Optional[int] = attrs.field(default=None, converter=_writable_layer_size)

    def __attrs_post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Cross-field and host checks; raises ConfigError naming the field."""
        if self.rootfs is not None:
            check_text(self.rootfs, "rootfs")
            if not os.path.isdir(self.rootfs):
                raise ConfigError("rootfs", f"{self.rootfs!r} is not a directory on the host")
            check_kernel_dirs(self.rootfs, "rootfs")
        if self.hostname is not None:
            check_text(self.hostname, "hostname")
            if len(self.hostname) > 64 or not _HOSTNAME.match(self.hostname):
                raise ConfigError("hostname", f"{self.hostname!r} is not a valid hostname (RFC 1123, at most 64 characters)")
        check_env(self.env)
        for i, mount in enumerate(self.mounts):
            if not isinstance(mount, Mount):
                raise ConfigError(f"mounts[{i}]", f"expected a Mount, got {type(mount).__name__}")
            mount.check(f"mounts[{i}]")
        if self.user is not None:
            check_text(self.user if isinstance(self.user, str) else str(self.user), "user")
        if not isinstance(self.limits, Limits):
            raise ConfigError("limits", f"expected a Limits, got {type(self.limits).__name__}")
        if self.image is not None:
            check_text(self.image, "image")
            if self.rootfs is not None:
                raise ConfigError("image", "give either rootfs or image, not both")
        if self.writable_layer_size is not None and self.writable_layer is not WritableLayer.TMPFS:
            raise ConfigError("writable_layer_size", "only a tmpfs writable layer has a size limit "
                                                     "(writable_layer='tmpfs', --writable-layer tmpfs)")
        self.capabilities()

    def capabilities(self) -> frozenset:
        """The capability set commands get (names without ``CAP_``)."""
        add = {normalize_capability(c, "cap_add") for c in self.cap_add}
        drop = {normalize_capability(c, "cap_drop") for c in self.cap_drop}
        if "ALL" in drop:
            return frozenset(add - {"ALL"})
        base = set(DEFAULT_CAPABILITIES) | add
        if "ALL" in add:
            base = set(ALL_CAPABILITIES)
        return frozenset(base - drop)

    @property
    def environment(self) -> dict:
        return dict(self.env)


def takes_container_options(func: Callable) -> Callable:
    """Give ``func(..., **options)`` the options of :class:`ContainerConfig`
    as keyword-only parameters of its signature, with their types and
    defaults: the config class is the one definition of the options of
    ``Container()`` and ``run()`` (``func`` builds its config with
    :func:`config_of`)."""
    own = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    hints = typing.get_type_hints(ContainerConfig.__init__)
    options = [p.replace(annotation=hints[p.name]) for p in inspect.signature(ContainerConfig).parameters.values()]
    func.__signature__ = inspect.signature(func).replace(parameters=own + options)  # type: ignore[attr-defined]
    func.__annotations__ = {**typing.get_type_hints(func), **{p.name: p.annotation for p in options}}
    return func


def config_of(config: Optional[ContainerConfig], options: Mapping[str, Any]) -> ContainerConfig:
    """``config``, or one made of the options; not both."""
    if config is None:
        return ContainerConfig(**options)
    if options:
        raise ConfigError(sorted(options)[0], "give either a ContainerConfig or options, not both")
    return config
