"""A bundle's config.json (runtime-spec 1.1) -> a checked :class:`Spec`.

Every field the runtime does not implement is refused, all of them named
in one :class:`~sandboxlib.errors.ConfigError` (``config.json: process.foo:
unknown field; linux.intelRdt: not supported``), never ignored.  The
mount list is taken as the whole file system of the container, in order,
as the runtime-spec says: the library's own layout (host view, /dev, masks)
is not added, except the devices every OCI container has."""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from ..config import DEFAULT_DEVICE_RULES, CgroupLimits
from ..errors import ConfigError
from ..native.binding import MountFlag
from ..native.binding import MountFlag as F
from ..native.binding import MountKind as K
from ..native.mount_op import MountOp
from ..native.protocol import RLIMIT_NUMBERS
from ..security.capabilities import normalize_capability

if TYPE_CHECKING:
    from ..config import IdMapping

__all__ = ["Spec", "ProcessSpec", "load_spec", "parse_process", "HOOK_NAMES", "MOUNT_OPTIONS"]

HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
# Those every container has, new or joined by path: sharing the host's is refused.
REQUIRED_NAMESPACES = ("pid", "mount", "ipc", "uts")
# Those that may be joined by path (a user namespace may not).
JOINABLE_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ANY = object()  # a value taken as it is (maps of strings)

# The fields we implement: a dict is an object's known keys, [x] a list of x.
_USER = {"uid": None, "gid": None, "umask": None, "additionalGids": None, "username": None}
_CAPS = dict.fromkeys(("bounding", "effective", "inheritable", "permitted", "ambient"))
_PROCESS = {
    "terminal": None,
    "consoleSize": {"height": None, "width": None},
    "user": _USER,
    "args": None,
    "env": None,
    "cwd": None,
    "capabilities": _CAPS,
    "rlimits": [{"type": None, "hard": None, "soft": None}],
    "noNewPrivileges": None,
    "oomScoreAdj": None,
    "apparmorProfile": None,
    "selinuxLabel": None,
}
_HOOK = [{"path": None, "args": None, "env": None, "timeout": None}]
_DEVICE_RULE = [{"allow": None, "type": None, "major": None, "minor": None, "access": None}]
_SCHEMA = {
    "ociVersion": None,
    "root": {"path": None, "readonly": None},
    "mounts": [{"destination": None, "type": None, "source": None, "options": None}],
    "process": _PROCESS,
    "hostname": None,
    "domainname": None,
    "hooks": dict.fromkeys(HOOK_NAMES, _HOOK),
    "annotations": ANY,
    "linux": {
        "namespaces": [{"type": None, "path": None}],
        "uidMappings": [{"containerID": None, "hostID": None, "size": None}],
        "gidMappings": [{"containerID": None, "hostID": None, "size": None}],
        "sysctl": ANY,
        "resources": {
            "devices": _DEVICE_RULE,
            "memory": {"limit": None, "swap": None, "reservation": None, "disableOOMKiller": None, "swappiness": None},
            "cpu": {
                "shares": None,
                "quota": None,
                "period": None,
                "cpus": None,
                "mems": None,
                "realtimeRuntime": None,
                "realtimePeriod": None,
            },
            "pids": {"limit": None},
        },
        "cgroupsPath": None,
        "rootfsPropagation": None,
        "seccomp": ANY,  # checked by security.profile, which names its fields
        "maskedPaths": None,
        "readonlyPaths": None,
        "devices": [
            {"path": None, "type": None, "major": None, "minor": None, "fileMode": None, "uid": None, "gid": None}
        ],
        "mountLabel": None,
    },
}


def _unknown(value: Any, schema: Any, path: str, found: List[str]) -> None:
    """Append to ``found`` the path of every field ``schema`` does not name."""
    if schema is ANY or schema is None:
        return
    if isinstance(schema, list) and isinstance(value, list):
        for i, item in enumerate(value):
            _unknown(item, schema[0], f"{path}[{i}]", found)
    elif isinstance(schema, dict) and isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key in schema:
                _unknown(item, schema[key], where, found)
            else:
                found.append(f"{where}: unknown or unsupported field")


# Spec and ProcessSpec are what this module made of a checked config.json, not
# options of ours to validate: NamedTuples, which cost little to define (an attrs
# class of ~20 fields is ~1 ms of every create's start-up).


class ProcessSpec(NamedTuple):
    """``process`` (also what ``exec --process`` reads)."""

    args: Tuple[str, ...]
    env: Tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: Tuple[int, ...]
    umask: Optional[int]
    rlimits: Tuple[Tuple[str, int, int], ...]
    capabilities: Tuple[str, ...]  # without the CAP_ prefix: the bounding set
    effective: Tuple[str, ...]
    permitted: Tuple[str, ...]
    inheritable: Tuple[str, ...]
    ambient: Tuple[str, ...]
    no_new_privileges: bool  # runtime-spec's default: false
    terminal: bool
    console_size: Tuple[int, int]  # rows, columns
    oom_score_adj: Optional[int]

    @property
    def search_path(self) -> str:
        path = next((e[5:] for e in self.env if e.startswith("PATH=")), None)
        return path if path is not None else "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Spec(NamedTuple):
    bundle: str
    root: str  # absolute host path
    readonly: bool
    root_propagation: MountFlag  # of the root mount: SHARED, SLAVE, UNBINDABLE (+ PROPAGATE_REC) or none
    process: Optional[ProcessSpec]
    hostname: Optional[str]
    ops: Tuple[MountOp, ...]
    new_network: bool
    new_user: bool
    new_cgroup: bool
    joins: Mapping[str, str]  # namespace type -> the path joined (pid: by the spawn, the rest by the init)
    uid_map: Tuple[IdMapping, ...]
    gid_map: Tuple[IdMapping, ...]
    limits: CgroupLimits
    cgroups_path: Optional[str]
    seccomp: Optional[Mapping[str, Any]]
    sysctl: Mapping[str, str]
    hooks: Mapping[str, Tuple[Mapping[str, Any], ...]]
    annotations: Mapping[str, str]


def _field(data: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}{key}", f"expected {kind.__name__}, got {value!r}")
    return value


def _strings(value: Any, field: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(field, f"expected a list of strings, got {value!r}")
    return tuple(value)


def parse_process(data: Any, where: str = "process.") -> ProcessSpec:
    """``process`` of config.json, or the JSON of ``exec --process``."""
    if not isinstance(data, dict):
        raise ConfigError(where.rstrip("."), "expected an object")
    found: List[str] = []
    _unknown(data, _PROCESS, where.rstrip("."), found)
    if found:
        raise ConfigError(where.rstrip("."), "; ".join(found))
    args = _strings(data.get("args"), f"{where}args")
    if not args:
        raise ConfigError(f"{where}args", "at least the program is required")
    user = _field(data, "user", dict, where, {})
    caps = _field(data, "capabilities", dict, where, {})

    def names(kind: str) -> List[str]:
        field = f"{where}capabilities.{kind}"
        return [normalize_capability(c, field) for c in _strings(caps.get(kind), field)]

    bounding = names("bounding")
    sets = {kind: names(kind) for kind in ("effective", "permitted", "inheritable", "ambient")}
    # What capset(2) and PR_CAP_AMBIENT_RAISE accept, checked here to name the field.
    for kind, within in (("effective", "permitted"), ("permitted", "bounding"), ("inheritable", "bounding")):
        extra = set(sets[kind]) - set(bounding if within == "bounding" else sets[within])
        if extra:
            raise ConfigError(f"{where}capabilities.{kind}", f"{sorted(extra)} are not in the {within} set")
    extra = set(sets["ambient"]) - (set(sets["permitted"]) & set(sets["inheritable"]))
    if extra:
        raise ConfigError(f"{where}capabilities.ambient", f"{sorted(extra)} are not both permitted and inheritable")
    nnp = _field(data, "noNewPrivileges", bool, where, False)
    rlimits = []
    for i, limit in enumerate(_field(data, "rlimits", list, where, [])):
        at = f"{where}rlimits[{i}]"
        if not isinstance(limit, dict):
            raise ConfigError(at, f"expected an object, got {limit!r}")
        kind = str(limit.get("type", ""))
        name = kind[len("RLIMIT_") :].lower() if kind.startswith("RLIMIT_") else ""
        if name not in RLIMIT_NUMBERS:
            raise ConfigError(f"{at}.type", f"unsupported rlimit {kind!r}")
        soft, hard = (_whole(limit, key, f"{at}.", 0, _RLIM_INFINITY) or 0 for key in ("soft", "hard"))
        rlimits.append((name, soft, hard))
    for key in ("apparmorProfile", "selinuxLabel"):
        if data.get(key):
            raise ConfigError(f"{where}{key}", "not supported (this runtime applies no LSM profile)")
    size = _field(data, "consoleSize", dict, where, {})
    at = f"{where}user."
    gids = _field(user, "additionalGids", list, at, [])
    return ProcessSpec(
        args=args,
        env=_strings(data.get("env"), f"{where}env"),
        cwd=_field(data, "cwd", str, where, "/"),
        uid=_whole(user, "uid", at, 0, _ID_LIMIT) or 0,
        gid=_whole(user, "gid", at, 0, _ID_LIMIT) or 0,
        groups=tuple(_gid(g, f"{at}additionalGids[{i}]") for i, g in enumerate(gids)),
        umask=_whole(user, "umask", at, 0, 0o7777),
        rlimits=tuple(rlimits),
        capabilities=tuple(bounding),
        effective=tuple(sets["effective"]),
        permitted=tuple(sets["permitted"]),
        inheritable=tuple(sets["inheritable"]),
        ambient=tuple(sets["ambient"]),
        no_new_privileges=nnp,
        terminal=_field(data, "terminal", bool, where, False),
        console_size=(
            _whole(size, "height", f"{where}consoleSize.", 0, 65535) or 24,
            _whole(size, "width", f"{where}consoleSize.", 0, 65535) or 80,
        ),
        oom_score_adj=_whole(data, "oomScoreAdj", where, -1000, 1000),
    )


_ID_LIMIT = (1 << 32) - 2  # (an id below (uid_t)-1)
_RLIM_INFINITY = (1 << 64) - 1


def _whole(data: Mapping[str, Any], key: str, where: str, low: int, high: int) -> Optional[int]:
    """An integer field from ``low`` to ``high`` (None: not given), or a ConfigError naming it."""
    return _whole_value(data.get(key), f"{where}{key}", low, high)


def _gid(value: Any, field: str) -> int:
    gid = _whole_value(value, field, 0, _ID_LIMIT)
    if gid is None:
        raise ConfigError(field, "expected a group id, got null")
    return gid


def _whole_value(value: Any, field: str, low: int, high: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(field, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


# mount option -> (flag set, flag cleared)
_MOUNT_FLAGS = {
    "ro": (F.RDONLY, F(0)),
    "rw": (F(0), F.RDONLY),
    "nosuid": (F.NOSUID, F(0)),
    "suid": (F(0), F.NOSUID),
    "nodev": (F.NODEV, F(0)),
    "dev": (F(0), F.NODEV),
    "noexec": (F.NOEXEC, F(0)),
    "exec": (F(0), F.NOEXEC),
    "rbind": (F.RECURSIVE, F(0)),
    "bind": (F(0), F(0)),
}
# Propagation (every mount we make is private unless one of these says
# otherwise; a container's mount is never a peer of the host's).
_PROPAGATION = {
    "shared": F.SHARED,
    "rshared": F.SHARED | F.PROPAGATE_REC,
    "slave": F.SLAVE,
    "rslave": F.SLAVE | F.PROPAGATE_REC,
    "unbindable": F.UNBINDABLE,
    "runbindable": F.UNBINDABLE | F.PROPAGATE_REC,
    "private": F(0),
    "rprivate": F(0),
}
_PROPAGATION_FLAGS = F.SHARED | F.SLAVE | F.UNBINDABLE | F.PROPAGATE_REC
# Accepted and without effect here: times are the kernel's default.
_NO_OP_OPTIONS = {"relatime", "norelatime", "strictatime", "defaults", "async"}
MOUNT_OPTIONS = sorted({*_MOUNT_FLAGS, *_PROPAGATION, *_NO_OP_OPTIONS})  # for ``features``
_KINDS = {"tmpfs": K.TMPFS, "proc": K.PROC, "sysfs": K.SYSFS, "devpts": K.DEVPTS, "mqueue": K.MQUEUE}


def _mount(i: int, m: Any, bundle: str) -> MountOp:
    where = f"mounts[{i}]"
    if not isinstance(m, dict) or not isinstance(m.get("destination"), str) or not m["destination"].startswith("/"):
        raise ConfigError(f"{where}.destination", "an absolute path is required")
    options = _strings(m.get("options"), f"{where}.options")
    kind_name = m.get("type") or ("bind" if {"bind", "rbind"} & set(options) else "")
    flags, data = F(0), []
    for option in options:
        if option in _MOUNT_FLAGS:
            on, off = _MOUNT_FLAGS[option]
            flags = (flags | on) & ~off
        elif option in _PROPAGATION:
            flags = (flags & ~_PROPAGATION_FLAGS) | _PROPAGATION[option]
        elif option in _NO_OP_OPTIONS:
            continue
        elif "=" in option or (kind_name in _KINDS and option in ("newinstance",)):
            data.append(option)
        else:
            raise ConfigError(f"{where}.options", f"unsupported mount option {option!r}")
    target = os.path.normpath(m["destination"])
    if kind_name == "bind" or {"bind", "rbind"} & set(options):
        # Data options (``mode=755``) of a bind are accepted and unused, as
        # mount(2) ignores a bind's data under runc and crun.
        source = os.path.join(bundle, m.get("source") or "")
        if not os.path.exists(source):
            raise ConfigError(f"{where}.source", f"{source} does not exist")
        file = F(0) if os.path.isdir(source) else F.FILE
        return MountOp(kind=K.BIND, target=target, source=source, flags=flags | file, field=where)
    if kind_name == "cgroup":
        # The host's hierarchies, read-only (a fresh cgroup mount per v1
        # hierarchy is not implemented): the container sees /sys/fs/cgroup.
        return MountOp(kind=K.BIND, target=target, source="/sys/fs/cgroup", flags=flags | F.RECURSIVE | F.RDONLY)
    if kind_name not in _KINDS:
        raise ConfigError(f"{where}.type", f"unsupported mount type {kind_name!r}")
    if m.get("source"):  # what mountinfo shows as the source ("proc", "tmpfs", "shm"), as runc's
        data.insert(0, f"source={m['source']}")
    return MountOp(kind=_KINDS[kind_name], target=target, data=",".join(data) or None, flags=flags, field=where)


def _mounts(
    data: List[Any], bundle: str, devices: Set[str], masked: Tuple[str, ...], readonly: Tuple[str, ...]
) -> Tuple[MountOp, ...]:
    ops = [_mount(i, m, bundle) for i, m in enumerate(data)]
    targets = {op.target for op in ops} | devices
    # The devices every OCI container gets (runtime-spec "Default Devices"),
    # bound from the host where the spec does not mount them itself.
    flags = F.FILE | F.NOSUID | F.NOEXEC | F.OPTIONAL
    ops += [
        MountOp(kind=K.BIND, target=f"/dev/{name}", source=f"/dev/{name}", flags=flags)
        for name in DEFAULT_DEVICES
        if f"/dev/{name}" not in targets
    ]
    if "/dev/pts" in targets:
        ops.append(MountOp(kind=K.SYMLINK, target="/dev/ptmx", source="pts/ptmx", flags=F.OPTIONAL))
    links = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0"}
    links.update({"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"})
    ops += [MountOp(kind=K.SYMLINK, target=t, source=s, flags=F.OPTIONAL) for t, s in links.items()]
    ops += [MountOp(kind=K.MASK, target=p, source="/dev/null", flags=F.OPTIONAL) for p in masked]
    ops += [MountOp(kind=K.REMOUNT, target=p, flags=F.RDONLY | F.OPTIONAL) for p in readonly]
    return tuple(ops)


_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _device(i: int, dev: Any, in_user_namespace: bool) -> MountOp:
    """One of linux.devices: a node made with mknod, or, in a user namespace
    (where the kernel refuses mknod of devices), the host's own node at that
    path, which must be the device asked for (as runc binds it)."""
    where = f"linux.devices[{i}]"
    if not isinstance(dev, dict) or not isinstance(dev.get("path"), str) or not dev["path"].startswith("/"):
        raise ConfigError(f"{where}.path", "an absolute path is required")
    kind = dev.get("type")
    if kind not in _DEVICE_TYPES:
        raise ConfigError(f"{where}.type", f"expected c, u, b or p, got {kind!r}")
    numbers = [_field(dev, key, int, f"{where}.", 0) for key in ("major", "minor", "fileMode", "uid", "gid")]
    major, minor, mode, uid, gid = numbers
    if kind != "p" and ("major" not in dev or "minor" not in dev):
        raise ConfigError(where, "a device needs major and minor")
    target = os.path.normpath(dev["path"])
    if not in_user_namespace:
        data = f"{'c' if kind == 'u' else kind},{major},{minor},{mode if 'fileMode' in dev else 0o666},{uid},{gid}"
        return MountOp(kind=K.MKNOD, target=target, data=data, field=where)
    try:
        found = os.stat(target)
    except OSError:
        found = None
    if (
        found is None
        or stat.S_IFMT(found.st_mode) != _DEVICE_TYPES[kind]
        or (kind != "p" and (os.major(found.st_rdev), os.minor(found.st_rdev)) != (major, minor))
    ):
        raise ConfigError(
            where, f"in a user namespace a device is the host's {target}, which is not {kind} {major}:{minor}"
        )
    return MountOp(kind=K.BIND, target=target, source=target, flags=F.FILE | F.NOSUID | F.NOEXEC, field=where)


def _maps(data: Any, field: str) -> Tuple[IdMapping, ...]:
    if not data:
        return ()
    from ..config import IdMapping  # (a user namespace's only)

    try:
        return tuple(IdMapping(container=m["containerID"], host=m["hostID"], size=m["size"]) for m in data)
    except (KeyError, TypeError) as err:
        raise ConfigError(field, f"each mapping needs containerID, hostID and size ({err})") from None


def resource_limits(resources: Mapping[str, Any]) -> CgroupLimits:
    """``linux.resources`` (or ``update --resources``) -> limits; each field
    checked here, where it is read (CgroupLimits is a record without
    validators): a wrong type or a number out of range is a ConfigError naming it."""
    where = "linux.resources"
    if not isinstance(resources, dict):
        raise ConfigError(where, f"expected an object, got {resources!r}")
    memory, cpu = _section(resources, "memory"), _section(resources, "cpu")
    for key in ("reservation", "disableOOMKiller", "swappiness"):
        if memory.get(key) not in (None, False):
            raise ConfigError(f"{where}.memory.{key}", "not supported")
    # -1 (and 0) mean no limit where runc takes them so.
    limit, swap = _number(memory, "limit", "memory", -1), _number(memory, "swap", "memory", -1)
    quota, pids = _number(cpu, "quota", "cpu", -1), _number(_section(resources, "pids"), "limit", "pids", -1)
    devices = _field(resources, "devices", list, f"{where}.", [])
    return CgroupLimits(
        memory=limit if limit and limit > 0 else None,
        memory_swap=swap if swap and swap > 0 else None,
        cpu_quota_us=quota if quota and quota > 0 else None,
        cpu_period_us=_number(cpu, "period", "cpu", 0) or None,
        cpu_shares=_number(cpu, "shares", "cpu", 0) or None,
        pids=pids if pids and pids > 0 else None,  # (our init counts: one process more than runc's)
        cpuset_cpus=_field(cpu, "cpus", str, f"{where}.cpu.", None) or None,
        cpuset_mems=_field(cpu, "mems", str, f"{where}.cpu.", None) or None,
        devices=_device_rules(devices) or None,
        cpu_rt_period_us=_number(cpu, "realtimePeriod", "cpu", 0) or None,
        cpu_rt_runtime_us=_number(cpu, "realtimeRuntime", "cpu", -1) or None,
    )


_INT64_MAX = (1 << 63) - 1


def _section(resources: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"linux.resources.{key}", f"expected an object, got {value!r}")
    return value


def _number(section: Mapping[str, Any], key: str, where: str, low: int) -> Optional[int]:
    """An integer of ``linux.resources.WHERE`` (None: not given) from ``low`` to int64's largest."""
    return _whole_value(section.get(key), f"linux.resources.{where}.{key}", low, _INT64_MAX)


def _device_rules(rules: List[Any]) -> Tuple[str, ...]:
    """linux.resources.devices (then the defaults) -> cgroup v1 devices.allow/deny lines ("allow c 1:3 rwm")."""
    if not rules:
        return ()
    lines = []
    for i, rule in enumerate(rules):
        where = f"linux.resources.devices[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(where, f"expected an object, got {rule!r}")
        kind = _field(rule, "type", str, f"{where}.", None) or "a"
        if kind not in ("a", "b", "c"):
            raise ConfigError(f"{where}.type", f"expected 'a', 'b' or 'c', got {kind!r}")
        major, minor = (_device_number(rule, key, where) for key in ("major", "minor"))
        access = _field(rule, "access", str, f"{where}.", None) or "rwm"
        if not set(access) <= set("rwm"):
            raise ConfigError(f"{where}.access", f"expected letters of 'rwm', got {access!r}")
        node = "" if kind == "a" else f" {major}:{minor}"
        allow = _field(rule, "allow", bool, f"{where}.", False)
        lines.append(f"{'allow' if allow else 'deny'} {kind}{node} {access}")
    return tuple(lines) + DEFAULT_DEVICE_RULES


def _device_number(rule: Mapping[str, Any], key: str, where: str) -> str:
    """A device's major or minor number ('*': any, not given or -1)."""
    value = rule.get(key)
    if value is None or value == -1 and not isinstance(value, bool):
        return "*"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise ConfigError(f"{where}.{key}", f"expected a device number (or -1: any), got {value!r}")
    return str(value)


def _cgroups_path(linux: Mapping[str, Any]) -> Optional[str]:
    """linux.cgroupsPath: joined to each hierarchy's mount point (absolute) or our
    own cgroup there (relative), so no '..' may lead it out of the cgroup file systems."""
    path = _field(linux, "cgroupsPath", str, "linux.", None) or None
    if path is not None and (".." in path.split("/") or "\0" in path):
        raise ConfigError("linux.cgroupsPath", f"{path!r}: a '..' component (or a NUL byte) is not allowed")
    return path


# Sysctls of the container's own namespaces (runc's list): any other is the
# host's, which create writes as root.
_IPC_SYSCTLS = frozenset(
    ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem")
    + ("kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
)


def _sysctls(data: Mapping[str, Any], kinds: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """linux.sysctl, each of a namespace the container has (IPC, UTS, network)."""
    checked = {}
    for key, value in data.items():
        field = f"linux.sysctl.{key}"
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(field, f"expected a string, got {value!r}")
        name = key.replace("/", ".")
        if "" in name.split("."):
            raise ConfigError(field, "not a sysctl name")
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            own = _not_ours("ipc", kinds)
        elif name.startswith("net."):
            own = _not_ours("network", kinds)
        else:
            own = name == "kernel.domainname" and _not_ours("uts", kinds)
        if not own:
            raise ConfigError(
                field,
                "not a sysctl of a namespace of the container's own: it would change the host's (as runc, refused)",
            )
        checked[key] = value
    return checked


def _not_ours(kind: str, kinds: Mapping[str, Optional[str]]) -> bool:
    """The container has a ``kind`` namespace that is not the runtime's (a new
    one, or a joined one but for ours: a path to the host's joins it)."""
    if kind not in kinds:
        return False
    path = kinds[kind]
    if path is None:
        return True
    joined, ours = os.stat(path), os.stat(f"/proc/self/ns/{'net' if kind == 'network' else kind}")
    return (joined.st_dev, joined.st_ino) != (ours.st_dev, ours.st_ino)


def _namespaces(data: List[Mapping[str, Any]]) -> Dict[str, Optional[str]]:
    """type -> the path to join, or None for a new namespace."""
    kinds: Dict[str, Optional[str]] = {}
    for i, ns in enumerate(data):
        kind = ns.get("type")
        if kind not in NAMESPACES:
            raise ConfigError(f"linux.namespaces[{i}].type", f"unknown namespace {kind!r}")
        path = ns.get("path") or None
        if path is not None and kind not in JOINABLE_NAMESPACES:
            raise ConfigError(f"linux.namespaces[{i}].path", f"joining a {kind} namespace is not supported")
        if path is not None and not (isinstance(path, str) and os.path.exists(path)):
            raise ConfigError(f"linux.namespaces[{i}].path", f"{path!r} does not exist")
        if kind == "time":
            raise ConfigError(f"linux.namespaces[{i}]", "time namespaces are not supported")
        kinds[kind] = path
    missing = [k for k in REQUIRED_NAMESPACES if k not in kinds]
    if missing:
        raise ConfigError("linux.namespaces", f"sharing the host's {', '.join(missing)} namespace is not supported")
    return kinds


def load_spec(bundle: str) -> Spec:
    """Read and check ``bundle/config.json``."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError("config.json", f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError("config.json", "expected an object")
    found: List[str] = []
    _unknown(data, _SCHEMA, "", found)
    linux = _field(data, "linux", dict, "", {})
    if data.get("domainname"):
        found.append("domainname: not supported")
    if linux.get("rootfsPropagation", "") not in ("", *_PROPAGATION):
        found.append(f"linux.rootfsPropagation: unknown propagation {linux['rootfsPropagation']!r}")
    if linux.get("mountLabel"):
        found.append("linux.mountLabel: SELinux labels are not supported")
    if found:
        raise ConfigError("config.json", "; ".join(found))
    root = _field(data, "root", dict, "", {})
    root_path = os.path.join(bundle, _field(root, "path", str, "root.", "rootfs"))
    if not os.path.isdir(root_path):
        raise ConfigError("root.path", f"{root_path} is not a directory")
    kinds = _namespaces(_field(linux, "namespaces", list, "linux.", []))
    resources = _field(linux, "resources", dict, "linux.", {})
    devices = tuple(
        _device(i, dev, "user" in kinds) for i, dev in enumerate(_field(linux, "devices", list, "linux.", []))
    )
    hooks = _field(data, "hooks", dict, "", {})
    sysctl = _field(linux, "sysctl", dict, "linux.", {})
    return Spec(
        bundle=bundle,
        root=os.path.realpath(root_path),
        readonly=bool(root.get("readonly", False)),
        root_propagation=_PROPAGATION.get(linux.get("rootfsPropagation") or "private", F(0)),
        process=parse_process(data["process"]) if "process" in data else None,
        hostname=_field(data, "hostname", str, "") or None,
        ops=_mounts(
            _field(data, "mounts", list, "", []),
            bundle,
            {op.target for op in devices},
            _strings(linux.get("maskedPaths"), "linux.maskedPaths"),
            _strings(linux.get("readonlyPaths"), "linux.readonlyPaths"),
        )
        + devices,
        new_network="network" in kinds and kinds["network"] is None,
        new_user="user" in kinds,
        new_cgroup="cgroup" in kinds and kinds["cgroup"] is None,
        joins={kind: path for kind, path in kinds.items() if path is not None},
        uid_map=_maps(linux.get("uidMappings"), "linux.uidMappings"),
        gid_map=_maps(linux.get("gidMappings"), "linux.gidMappings"),
        limits=resource_limits(resources),
        cgroups_path=_cgroups_path(linux),
        seccomp=_field(linux, "seccomp", dict, "linux.", None),
        sysctl=_sysctls(sysctl, kinds),
        hooks={name: tuple(_field(hooks, name, list, "hooks.", [])) for name in HOOK_NAMES},
        annotations=dict(_field(data, "annotations", dict, "", {})),
    )
