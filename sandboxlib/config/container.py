"""``ContainerConfig``: every option of a container, declared once (``run()`` and ``Container()``
take theirs from it)."""

from __future__ import annotations

import enum
import functools
import inspect
import os
import textwrap
import typing
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ..errors import ConfigError
from ..security.capabilities import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, normalize_capability
from ..security.seccomp import DEFAULT, Seccomp, seccomp_option
from .limits import Limits
from .mounts import IdMapping, Mount
from .network import BridgeNetwork, NetworkRef, PortMapping, container_name, extra_hosts_option, ports_option
from .values import (
    _HOSTNAME,
    _str_tuple,
    check_env,
    check_kernel_dirs,
    check_text,
    container_path,
    env_pairs,
    parse_size,
    tmpfs_size,
)

__all__ = [
    "WritableLayer",
    "Pull",
    "Network",
    "Namespace",
    "network_option",
    "container_network",
    "bridged",
    "ContainerConfig",
    "takes_container_options",
    "config_of",
]


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


class Pull(enum.Enum):
    """When the image of a container is pulled from its registry: ``MISSING``
    (when the store lacks it, as ``docker run``), ``ALWAYS`` (before each
    container: a manifest ``HEAD`` when nothing changed) or ``NEVER``."""

    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


def _pull(value: Union[Pull, str]) -> Pull:
    try:
        return Pull(value)
    except ValueError:
        raise ConfigError("pull", f"{value!r} is not one of {[p.value for p in Pull]}") from None


class Network(enum.Enum):
    """``NONE``: a private network namespace with only ``lo`` up.  ``HOST``: the host's.
    ``BRIDGE``: a private one with a veth on the host's bridge ``sbx0`` (NAT to
    the outside, published ports, generated ``/etc/resolv.conf`` and ``/etc/hosts``)."""

    NONE = "none"
    HOST = "host"
    BRIDGE = "bridge"


class Namespace(enum.Enum):
    """A pid or UTS namespace: ``PRIVATE`` (the container's own) or ``HOST``
    (the caller's: the container sees the host's processes, or its hostname)."""

    PRIVATE = "private"
    HOST = "host"


def _namespace(value: Union[Namespace, str], field: str) -> Namespace:
    try:
        return Namespace(value)
    except ValueError:
        raise ConfigError(field, f"{value!r} is not one of {[n.value for n in Namespace]}") from None


def _pid_namespace(value: Union[Namespace, str]) -> Namespace:
    return _namespace(value, "pid_namespace")


def _uts_namespace(value: Union[Namespace, str]) -> Namespace:
    return _namespace(value, "uts_namespace")


def _tuple_of_mounts(value: Sequence[Mount]) -> Tuple[Mount, ...]:
    return tuple(value)


# The converters of ContainerConfig's fields.  Their annotated parameter is
# what ``ContainerConfig(...)``, ``Container(...)`` and ``run(...)`` accept.
def _host_path(value: Union[str, os.PathLike, None]) -> Optional[str]:
    return None if value is None else os.fspath(value)


def _groups(value: Sequence[Union[int, str]]) -> Tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError("group_add", f"expected a list of gids or group names, got {value!r}")
    for group in value:
        if isinstance(group, bool) or not isinstance(group, (int, str)) or not str(group) or ":" in str(group):
            raise ConfigError("group_add", f"{group!r} is not a gid or a group name")
        if isinstance(group, int) and group < 0:
            raise ConfigError("group_add", f"{group!r} is not a gid")
    return tuple(str(g) for g in value)


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
        raise ConfigError(
            "network", f"expected one of {[n.value for n in Network]} or a Network, got {value!r}{hint}"
        ) from None


def container_network(
    value: Union[Network, str, NetworkRef, BridgeNetwork],
) -> Union[Network, NetworkRef, BridgeNetwork]:
    """``network=`` of a container: a :class:`Network`, its value, a named
    network (``Network.create``'s, or its name), or ``Network.bridge(egress=...)``."""
    if isinstance(value, (NetworkRef, BridgeNetwork)):
        return value
    if isinstance(value, str) and value not in [n.value for n in Network]:
        return NetworkRef(value)
    return network_option(value)


def bridged(network: Union[Network, NetworkRef, BridgeNetwork]) -> bool:
    """The container is on a bridge (``"bridge"``, ``Network.bridge(...)`` or a named network)."""
    return network is Network.BRIDGE or isinstance(network, (NetworkRef, BridgeNetwork))


def _writable_layer_size(value: Union[int, str, None]) -> Optional[int]:
    return None if value is None else tmpfs_size(value, "writable_layer_size")


IMAGE_COMMAND = True  # ``command=True``: the image's Entrypoint and Cmd


def _command(value: Union[Sequence[str], bool, None]) -> Union[Tuple[str, ...], bool, None]:
    """None (no main command), True (the image's Entrypoint and Cmd) or a non-empty argv."""
    if value is None or value is True:
        return value
    if value is False:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            "command", f"expected a non-empty list of strings (or True: the image's Entrypoint and Cmd), got {value!r}"
        )
    return tuple(
        check_text(os.fspath(a) if isinstance(a, os.PathLike) else a, f"command[{i}]") for i, a in enumerate(value)
    )


def _log(value: Union[bool, str, os.PathLike]) -> Union[bool, str]:
    """False, True (a file in the state directory, gone at close) or a host path (kept)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = check_text(os.fspath(value), "log")
        if not path or path.endswith("/"):
            raise ConfigError("log", f"expected a file path, got {path!r}")
        return os.path.abspath(path)
    raise ConfigError("log", f"expected True, False or a file path, got {type(value).__name__}")


MIN_LOG_SIZE = 128 * 1024  # a record (a 16 KiB line, JSON-escaped) always fits in one file


def _log_max_size(value: Union[int, str]) -> int:
    size = parse_size(value, "log_max_size")
    if size < MIN_LOG_SIZE:
        raise ConfigError("log_max_size", f"{value!r} is below the minimum of {MIN_LOG_SIZE} bytes (128k)")
    return size


def _log_max_files(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("log_max_files", f"expected a whole number of files >= 1, got {value!r}")
    return value


@attrs.frozen(kw_only=True, cache_hash=True)
class ContainerConfig:
    """Everything that describes one container.

    Attributes:
        rootfs: a host directory to use as the root, or None for the host view
            (the host's system directories read-only, fresh /tmp and /run).
        read_only: make the root read-only.
        hostname: the UTS hostname (default: the first 12 hex digits of the id).
        env: environment added to every command, a dict or ``"NAME=VALUE"``
            strings (default: none besides PATH, HOME and TERM).
        mounts: :class:`Mount` binds, tmpfs and volumes, applied after the root
            (parents first).
        user: ``"uid[:gid]"`` or ``"name[:group]"`` resolved in the container's /etc/passwd.
        group_add: supplementary groups every command gets besides its user's
            own (Docker's ``--group-add``): gids, or names in the container's
            /etc/group.  Rootless: refused (ConfigError), setgroups being
            denied in a rootless user namespace.
        cwd: the default working directory of commands (default: the image's
            WorkingDir, else ``/``).
        image: an image reference (``name:tag``, ``name@sha256:...``, an id) in
            ``image_store``: the root is an overlay of its layers with a
            writable layer of the container's own, gone with the container
            (or kept in ``writable_dir``).
        image_store: the store's directory (default: ``images.default_home()``).
        pull: when ``image`` is pulled from its registry: ``Pull.MISSING``
            (``"missing"``, default: when the store lacks it), ``"always"``
            or ``"never"``.
        writable_layer: where the container's writes go: ``WritableLayer.DISK``
            (default: ``containers/ID/upper`` in the store; a read-only root
            gets none) or ``WritableLayer.TMPFS`` (``"tmpfs"``: in memory).
        writable_layer_size: the tmpfs writable layer's size limit (bytes or
            ``"64M"``; default: the kernel's, half of the memory); only with
            ``writable_layer="tmpfs"``.
        writable_dir: a host directory holding the disk writable layer
            (``upper/``, ``work/``) that outlives the container: made at the
            first start if missing, used again by later containers of the same
            image (what they wrote is there), never removed by the library
            (the caller removes it: ``ImageStore.remove_trees``).  Default: the
            container's own ``containers/ID``, gone with it.
        limits: per-process rlimits and the container's cgroup limits, a
            :class:`Limits` (default: none).
        userns: run in a user namespace (always when not root; default True as root too).
        uid_map, gid_map: :class:`IdMapping` lists of the user namespace, given
            together (default: as root, container ids 0-65535 map to host ids
            from 1,000,000,000; rootless, root is you and ids from 1 map to
            your /etc/subuid and /etc/subgid ranges when you have them).
        pid_namespace: ``Namespace.PRIVATE`` (``"private"``: a pid namespace
            of its own, the init its PID 1) or ``Namespace.HOST`` (``"host"``:
            the caller's; ``/proc`` is the host's, bound, and the container's
            processes see it all but may signal or trace only each other: a
            Landlock domain of their own, Linux 6.12 or later).  ``"host"`` needs a
            cgroup (to end every process of the container): rootless, a
            delegated one.
        uts_namespace: ``Namespace.PRIVATE`` (``"private"``: a hostname of its
            own) or ``Namespace.HOST`` (``"host"``: the host's hostname, which
            the container cannot change; ``hostname`` may not be given).
        network: ``Network.NONE`` (loopback only), ``Network.HOST``,
            ``Network.BRIDGE`` (``sbx0`` with NAT), ``Network.bridge(egress=[...])``
            or a named network.
        ports: published ports of a bridge network, ``{HOST: CONTAINER}``:
            ``{8080: 80, "5353/udp": 53, "0.0.0.0:8443": 443}``; a host side
            without an address is bound to 127.0.0.1 (host port 0: any free
            one; ``Container.ports`` says which).
        name: the container's name, which resolves to its address inside its
            network (and is in its ``/etc/hosts``).
        extra_hosts: more lines of the container's ``/etc/hosts``,
            ``{"db.local": "10.0.0.5"}`` (``--add-host NAME:IP``): after a
            bridge container's generated lines; off a bridge the container
            then gets an ``/etc/hosts`` of its own, the localhost lines (with
            ``Network.HOST`` the host's file) and these.
        cap_add, cap_drop: capability names added to or dropped from the
            default set (Docker's); ``"ALL"`` for all (default: none).
        seccomp: the syscall filter of every command: a :class:`Seccomp` policy
            (default: Docker's default profile, ``Seccomp.default()``), or None
            for none.
        command: the container's main command, as ``docker run -d``: an argv
            (with an image: the image's Entrypoint followed by it), or True for
            the image's Entrypoint and Cmd.  The container ends when it ends;
            ``Container.wait()`` returns its Result.  None (default): an idle
            container that only runs what ``run``/``spawn`` start.
        log: keep the main command's stdout and stderr: True (a file in the
            state directory, removed at close) or a host file path (kept after
            the container).  Docker's json-file lines; see ``Container.logs()``.
            Without, its output is discarded (detached: not the host process's terminal).
        log_max_size: the size at which the log file is rotated (bytes or
            ``"10M"``; default 10 MiB, at least 128k).
        log_max_files: how many files the log keeps, the current one included
            (default 3: at most ``log_max_size * log_max_files`` bytes on disk).
    """

    rootfs: Optional[str] = attrs.field(default=None, converter=_host_path)
    read_only: bool = False
    hostname: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = attrs.field(default=None, converter=env_pairs)
    mounts: Tuple[Mount, ...] = attrs.field(default=(), converter=_tuple_of_mounts)
    user: Optional[str] = None
    group_add: Tuple[str, ...] = attrs.field(default=(), converter=_groups)
    cwd: Optional[str] = attrs.field(default=None, converter=_cwd)
    limits: Limits = attrs.field(default=None, converter=_limits)
    userns: bool = True
    uid_map: Optional[Tuple[IdMapping, ...]] = attrs.field(default=None, converter=_id_maps)
    gid_map: Optional[Tuple[IdMapping, ...]] = attrs.field(default=None, converter=_id_maps)
    pid_namespace: Namespace = attrs.field(default=Namespace.PRIVATE, converter=_pid_namespace)
    uts_namespace: Namespace = attrs.field(default=Namespace.PRIVATE, converter=_uts_namespace)
    network: Union[Network, NetworkRef, BridgeNetwork] = attrs.field(default=Network.NONE, converter=container_network)
    ports: Tuple[PortMapping, ...] = attrs.field(default=None, converter=ports_option)
    name: Optional[str] = attrs.field(default=None, converter=container_name)
    extra_hosts: Tuple[Tuple[str, str], ...] = attrs.field(default=None, converter=extra_hosts_option)
    cap_add: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cap_drop: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    seccomp: Optional[Seccomp] = attrs.field(default=DEFAULT, converter=seccomp_option)  # type: ignore[assignment]
    image: Optional[str] = None
    image_store: Optional[str] = attrs.field(default=None, converter=_host_path)
    pull: Pull = attrs.field(default=Pull.MISSING, converter=_pull)
    writable_layer: WritableLayer = attrs.field(default=WritableLayer.DISK, converter=_writable_layer)
    writable_layer_size: Optional[int] = attrs.field(default=None, converter=_writable_layer_size)
    writable_dir: Optional[str] = attrs.field(default=None, converter=_host_path)
    command: Union[Tuple[str, ...], bool, None] = attrs.field(default=None, converter=_command)
    log: Union[bool, str] = attrs.field(default=False, converter=_log)
    log_max_size: int = attrs.field(default=10 << 20, converter=_log_max_size)
    log_max_files: int = attrs.field(default=3, converter=_log_max_files)

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
                raise ConfigError(
                    "hostname", f"{self.hostname!r} is not a valid hostname (RFC 1123, at most 64 characters)"
                )
        if self.hostname is not None and self.uts_namespace is Namespace.HOST:
            raise ConfigError(
                "hostname", "a container in the host's UTS namespace (uts_namespace='host') has the host's"
            )
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
            raise ConfigError(
                "writable_layer_size",
                "only a tmpfs writable layer has a size limit (writable_layer='tmpfs', --writable-layer tmpfs)",
            )
        if self.writable_dir is not None and (
            self.image is None or self.writable_layer is not WritableLayer.DISK or self.read_only
        ):
            raise ConfigError("writable_dir", "only an image container's disk writable layer has a directory")
        if self.writable_dir is not None and not os.path.isabs(check_text(self.writable_dir, "writable_dir")):
            raise ConfigError("writable_dir", f"{self.writable_dir!r} is not an absolute path")
        if self.command is True and self.image is None:
            raise ConfigError(
                "command", "True means the image's Entrypoint and Cmd: give an image (or the command as a list)"
            )
        if self.log is not False and self.command is None:
            raise ConfigError(
                "log", "only a main command's output is logged: give command=[...] (or command=True with an image)"
            )
        if self.ports and isinstance(self.network, Network) and not bridged(self.network):
            raise ConfigError("ports", f"ports are published from a bridge network, not network={self.network.value!r}")
        self.capabilities()

    def capabilities(self) -> frozenset:
        """The capability set commands get (names without ``CAP_``)."""
        return _capability_set(self.cap_add, self.cap_drop)

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
    options = [
        p.replace(annotation=_accepted_type(p.name)) for p in inspect.signature(ContainerConfig).parameters.values()
    ]
    func.__signature__ = inspect.signature(func).replace(parameters=own + options)  # type: ignore[attr-defined]
    func.__annotations__ = {**typing.get_type_hints(func), **{p.name: p.annotation for p in options}}
    func.__doc__ = inspect.cleandoc(func.__doc__ or "") + "\n\n" + options_doc()
    return func


def _option_docs() -> dict:
    """name -> text of every option, from the "Attributes:" section of
    ContainerConfig's docstring (the one place they are written)."""
    lines = inspect.cleandoc(ContainerConfig.__doc__ or "").split("Attributes:\n", 1)[1].splitlines()
    docs: dict = {}
    names: list = []
    for line in lines:
        if line.startswith("    ") and not line.startswith("        ") and ":" in line:
            head, _, text = line.strip().partition(": ")
            names = [n.strip() for n in head.rstrip(":").split(",")]
            for name in names:
                docs[name] = text.strip()
        elif line.strip() and names:
            for name in names:
                docs[name] += " " + line.strip()
    return docs


def _readable(default: Any) -> str:
    """A default as a user writes it: ``'none'`` for Network.NONE, not its repr."""
    if default is DEFAULT:
        return "Seccomp.default()"
    if isinstance(default, enum.Enum):
        return repr(default.value)
    return repr(default)


def options_doc() -> str:
    """The "Args:" section (Google style) of every container option with its default."""
    docs = _option_docs()
    missing = [f.name for f in attrs.fields(ContainerConfig) if f.name not in docs]
    if missing:  # tests import this: an option added without its documentation fails them
        raise AssertionError(f"ContainerConfig's docstring does not document {missing}")
    entries = []
    for field in attrs.fields(ContainerConfig):
        text = docs[field.name]
        if "default" not in text:  # the text says it better when it names its default
            text += f" Default: {_readable(field.default)}."
        entries.append(textwrap.fill(f"{field.name}: {text}", 96, initial_indent="    ", subsequent_indent="        "))
    return "Args:\n" + "\n".join(entries)


def _accepted_type(name: str) -> Any:
    """What the option ``name`` accepts: its converter's parameter type (resolved where the converter
    is defined), else the field's type."""
    converter: Any = attrs.fields_dict(ContainerConfig)[name].converter  # a plain function here
    if converter is not None:
        hints = typing.get_type_hints(converter)
        return hints[next(iter(inspect.signature(converter).parameters))]
    return typing.get_type_hints(ContainerConfig)[name]


def config_of(config: Optional[ContainerConfig], options: Mapping[str, Any]) -> ContainerConfig:
    """``config``, or one made of the options; not both."""
    if config is None:
        return ContainerConfig(**options) if options else _default_config()
    if options:
        raise ConfigError(sorted(options)[0], "give either a ContainerConfig or options, not both")
    return config


@functools.lru_cache(maxsize=1)
def _default_config() -> ContainerConfig:
    """``ContainerConfig()``, made once: it is immutable and its defaults read
    nothing of the host (its validation cost ~12 us per ``sb.run``)."""
    return ContainerConfig()


@functools.lru_cache(maxsize=256)  # (asked ~4 times per start)
def _capability_set(cap_add: Tuple[str, ...], cap_drop: Tuple[str, ...]) -> frozenset:
    add = {normalize_capability(c, "cap_add") for c in cap_add}
    drop = {normalize_capability(c, "cap_drop") for c in cap_drop}
    if "ALL" in drop:
        return frozenset(add - {"ALL"})
    base = set(DEFAULT_CAPABILITIES) | add
    if "ALL" in add:
        base = set(ALL_CAPABILITIES)
    return frozenset(base - drop)
