"""Resource limits: per-process rlimits and per-container cgroup limits, parsed and checked when made."""

from __future__ import annotations

import os
import re
import resource
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple, Union

import attrs

from ..errors import ConfigError
from .cgroup_limits import CPU_PERIOD_US, DEFAULT_DEVICE_RULES, CgroupLimits
from .values import MEMORY_MAX, PIDS_MAX, RLIM_INFINITY, _int_field, bounded_size, check_text

__all__ = ["RLIMITS", "RlimitValue", "MIN_MEMORY", "Limits"]

RLIMITS = ("nofile", "nproc", "core", "fsize", "as", "cpu", "stack", "memlock", "data")


RlimitValue = Union[int, str, Tuple[Union[int, str], Union[int, str]]]


MIN_MEMORY = 6 << 20  # as Docker: less cannot even start a shell


RT_PERIOD_US = 1_000_000  # a new cgroup's cpu.rt_period_us (the kernel's default)


_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

# Docker's --device-cgroup-rule: TYPE MAJOR:MINOR ACCESS ("c 7:128 rwm", "b 8:* r", "a *:* rwm": all).
_DEVICE_RULE = re.compile(r"^[abc] (\*|\d+):(\*|\d+) [rwm]{1,3}$")


def _check_host_hard_limit(name: str, hard: int, field: str) -> None:
    """A command's hard limit cannot be above this process's: raising it needs
    CAP_SYS_RESOURCE in the host's user namespace, which no command keeps."""
    host_hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    if host_hard != resource.RLIM_INFINITY and hard > host_hard:
        raise ConfigError(
            field,
            f"hard limit {hard} is above this process's hard limit {host_hard} "
            f"(`ulimit -H`), which a container cannot raise",
        )


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
        raise ConfigError(
            field, f"CPU {min(missing)} is not available here (this process may use {sorted(os.sched_getaffinity(0))})"
        )
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
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.01 <= value <= host_cpus
    ):
        raise ConfigError(
            "limits.cpus", f"must be a number from 0.01 to {host_cpus} (the CPUs of this host), got {value!r}"
        )
    return value


def _bounded_int(field: str, low: int, high: int):
    def convert(value: Optional[int]) -> Optional[int]:
        return None if value is None else _int_field(value, field, low, high)

    return convert


def _cpuset(value: Optional[str]) -> Optional[str]:
    return None if value is None else _cpu_list(value, "limits.cpuset_cpus")


def _device_rules(value: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    rules = tuple(value)
    for i, rule in enumerate(rules):
        if not isinstance(rule, str) or not _DEVICE_RULE.match(rule):
            raise ConfigError(
                f"limits.device_rules[{i}]", f"{rule!r} is not TYPE MAJOR:MINOR ACCESS, such as 'c 7:128 rwm'"
            )
    return rules


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits: per-process rlimits and per-container cgroup limits.

    rlimits (``setrlimit`` of every command), each ``N`` or ``(soft, hard)``:
    ``nofile``, ``nproc``, ``core``, ``fsize``, ``as`` (``address_space``), ``cpu``
    (seconds), ``stack``, ``memlock``, ``data``; the sizes also take strings like
    ``"100M"``.  Use ``Limits.from_dict({"as": ...})`` for the names that are Python keywords.

    cgroup limits (the whole container together):
        memory: bytes or ``"256M"`` (at least 6M); the OOM killer acts above it.  The
            container's own processes count too: its init, its launchers and, for 10 s
            after commands with cgroups of their own, a forker per such cgroup (~0.1 MB
            each, at most one per 4 MiB of this limit).
        memory_swap: memory plus swap (Docker's ``--memory-swap``): at least ``memory``,
            or -1 for unlimited swap; by default as much swap as memory.
        cpus: CPU time as a number of CPUs, e.g. 1.5 or ``"1.5"`` (a CFS quota per 100 ms).
        cpu_shares: relative CPU weight under contention (2-262144, default 1024).
        pids: the most processes and threads at once, the container's own included (its
            init and its launchers; a container with this limit gets no forkers).
        cpuset_cpus: the CPUs it may run on, e.g. ``"0-1,3"``.
        device_rules: device cgroup rules, Docker's ``--device-cgroup-rule``
            (``"c 7:128 rwm"``: TYPE ``a``/``b``/``c``, MAJOR:MINOR with ``*``
            for any, ACCESS of ``r``, ``w``, ``m``).  Given, the container may
            use only the default devices (null, zero, full, random, urandom,
            tty, console, ptmx, the pts; mknod, which a user namespace still
            refuses) and these: its cgroup in the v1 devices hierarchy (as
            root; cgroup v2 has no devices files).  Without, no device cgroup.
        cpu_rt_period_us, cpu_rt_runtime_us: real-time CPU time, the runtime
            in microseconds per period (``--cpu-rt-period``,
            ``--cpu-rt-runtime``): a kernel with real-time group scheduling
            and the cpu controller in a cgroup v1 hierarchy (``cpu.rt_*``),
            else UnsupportedError at the start; the kernel refuses more than
            the parent cgroup has left (a SetupError naming the file).

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
    device_rules: Tuple[str, ...] = attrs.field(default=(), converter=_device_rules)
    cpu_rt_period_us: Optional[int] = attrs.field(
        default=None,
        converter=_bounded_int("limits.cpu_rt_period_us", 1, 1_000_000),  # type: ignore[misc]
    )
    cpu_rt_runtime_us: Optional[int] = attrs.field(
        default=None,
        converter=_bounded_int("limits.cpu_rt_runtime_us", 0, 1_000_000),  # type: ignore[misc]
    )

    def __attrs_post_init__(self) -> None:
        period = self.cpu_rt_period_us or RT_PERIOD_US
        if self.cpu_rt_runtime_us is not None and self.cpu_rt_runtime_us > period:
            raise ConfigError(
                "limits.cpu_rt_runtime_us",
                f"{self.cpu_rt_runtime_us} is above the real-time period ({period} us): "
                "cpu real-time runtime cannot be higher than cpu real-time period",
            )
        if self.memory_swap is not None:
            if self.memory is None:
                raise ConfigError("limits.memory_swap", "needs limits.memory (it is memory plus swap)")
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise ConfigError(
                    "limits.memory_swap",
                    f"{self.memory_swap} is below limits.memory (it is memory plus swap; -1: unlimited swap)",
                )

    @classmethod
    def from_dict(cls, values: Mapping[str, RlimitValue]) -> Limits:
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
        return CgroupLimits(
            memory=self.memory,
            memory_swap=swap,
            cpu_quota_us=quota,
            cpu_shares=self.cpu_shares,
            pids=self.pids,
            cpuset_cpus=self.cpuset_cpus,
            devices=("deny a", *DEFAULT_DEVICE_RULES, *(f"allow {r}" for r in self.device_rules))
            if self.device_rules
            else None,
            cpu_rt_period_us=self.cpu_rt_period_us,
            cpu_rt_runtime_us=self.cpu_rt_runtime_us,
        )
