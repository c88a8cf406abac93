"""A ``POST /containers/create`` body -> the library's ``ContainerConfig``
(checked by it) and what the daemon keeps besides (restart policy,
AutoRemove, labels).  A field of the wrong type, or one we cannot honour,
is a 400 naming the field: nothing is made."""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import attrs

from ..config import RLIMITS, BridgeNetwork, ContainerConfig, Limits, Mount, PortMapping
from ..errors import ConfigError
from ..images import Image
from ..network import named
from ..runtime import statedir
from ..security import DEFAULT, Seccomp
from .apierrors import ApiError
from .healthcheck import checked_healthcheck
from .links import checked_links, library_links

__all__ = [
    "CreateRequest",
    "check_volume_driver",
    "endpoint_config",
    "endpoint_network",
    "endpoint_options",
    "known_network",
    "parse_create",
    "port_mappings",
    "with_network",
    "with_update",
]

RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
BUILT_IN_NETWORKS = ("bridge", "host", "none")
ANY_ADDRESS = "0.0.0.0"  # Docker publishes on every address unless HostIp says otherwise


@attrs.frozen
class CreateRequest:
    options: Dict[str, Any]  # ContainerConfig's, checked; each start adds command= and log=
    argv: Optional[Tuple[str, ...]]  # what follows the image's Entrypoint (None: its Cmd)
    path: str  # Docker's Path and Args: the whole command
    args: Tuple[str, ...]
    body: Dict[str, Any]  # Config as inspect shows it
    host_config: Dict[str, Any]
    restart_policy: Tuple[str, int]
    auto_remove: bool
    tty: bool
    open_stdin: bool
    spawned: bool  # the main command is spawned by the daemon (Tty, OpenStdin, an image's Entrypoint replaced)
    network_mode: str  # bridge, host, none or a named network's name
    alias: Optional[str] = None  # its name on a named network (the first of EndpointsConfig's Aliases)
    anonymous_volumes: Tuple[str, ...] = ()  # named by us: a remove with v=1 removes them
    endpoint: Dict[str, Any] = attrs.field(factory=dict)  # EndpointsConfig of its network (inspect shows it)
    links: Tuple[Tuple[str, str], ...] = ()  # HostConfig.Links on a built-in network: (name, alias) each


def _typed(body: dict, key: str, kind, default=None, where: str = ""):
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiError(400, f"{where}{key}: expected {names}, got {type(value).__name__}")
    return value


def _strings(body: dict, key: str, where: str = "") -> Optional[List[str]]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"{where}{key}: expected a list of strings")
    return value


def parse_create(body: dict, image: Image, store: str, default_network: str = "none") -> CreateRequest:
    """Everything checked before anything is made; ``default_network``: the
    daemon's for NetworkMode ``""``/``default``."""
    host = _go_names(_typed(body, "HostConfig", dict, {}))
    entrypoint = _strings(body, "Entrypoint")
    if entrypoint == [""]:  # docker run --entrypoint "": none at all
        entrypoint = []
    cmd = _strings(body, "Cmd")
    image_entrypoint = list(image.config.get("Entrypoint") or [])
    argv: Optional[Tuple[str, ...]] = tuple(cmd) if cmd else None
    spawned = False
    if entrypoint is None:
        whole = image_entrypoint + list(argv if argv is not None else image.config.get("Cmd") or [])
    else:  # as Docker: a given Entrypoint replaces the image's, and the image's Cmd goes with it
        whole = entrypoint + (cmd or [])
        argv = tuple(whole)
        # the library puts the image's own Entrypoint in front of a command= : the daemon spawns this one
        spawned = bool(image_entrypoint)
    if not whole:
        raise ApiError(400, "no command specified")
    tty = bool(_typed(body, "Tty", bool, False))
    open_stdin = bool(_typed(body, "OpenStdin", bool, False))
    network = _typed(host, "NetworkMode", str, "", "HostConfig.")
    if network in ("", "default"):
        network = default_network
    if network.startswith("container:"):
        raise ApiError(400, "HostConfig.NetworkMode: container:NAME (another container's network) is not supported")
    ports = _typed(host, "PortBindings", dict, {}, "HostConfig.")
    exposed = body.get("ExposedPorts") or image.config.get("ExposedPorts") or {}
    publish_all = bool(_typed(host, "PublishAllPorts", bool, False, "HostConfig."))
    mappings = port_mappings(ports, exposed if publish_all else {})
    if mappings and network == "none":
        raise ApiError(400, "conflicting options: port publishing and the container type network mode")
    legacy_links = checked_links(host.get("Links"), "HostConfig.Links")
    if legacy_links and network == "host":
        raise ApiError(400, "conflicting options: host type networking can't be used with links")
    policy, retries = _restart_policy(host, "HostConfig.")
    auto_remove = bool(_typed(host, "AutoRemove", bool, False, "HostConfig."))
    if auto_remove and policy not in ("", "no"):
        raise ApiError(400, "can't create 'AutoRemove' container with restart policy")
    if _typed(host, "Privileged", bool, False, "HostConfig."):
        raise ApiError(400, "HostConfig.Privileged: privileged containers are not supported")
    env = {}
    unset = []  # a name without "=": shown as given, set to nothing (as Docker's)
    for item in _strings(body, "Env") or []:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        else:
            unset.append(name)
    endpoint = _endpoint(body, network)
    modes = _namespace_modes(host)
    volume_driver = _typed(host, "VolumeDriver", str, "", "HostConfig.")
    mounts = _mounts(host, _typed(body, "Volumes", dict, {}))
    for mount in mounts:
        if mount.kind.value == "volume":
            check_volume_driver(volume_driver, str(mount.source))
    options = {
        "image": image.id,
        "image_store": store,
        "hostname": _typed(body, "Hostname", str, None) or None,
        "env": env,
        "user": _typed(body, "User", str, None) or None,
        "group_add": _strings(host, "GroupAdd", "HostConfig.") or (),
        "cwd": _typed(body, "WorkingDir", str, None) or None,
        "mounts": mounts,
        "read_only": bool(_typed(host, "ReadonlyRootfs", bool, False, "HostConfig.")),
        "network": endpoint_network(network, endpoint),
        "pid_namespace": modes["PidMode"] or "private",
        "uts_namespace": modes["UTSMode"] or "private",
        "ports": mappings if network != "host" else (),  # (as dockerd: a host network's ports are the host's)
        "cap_add": _strings(host, "CapAdd", "HostConfig.") or (),
        "cap_drop": _strings(host, "CapDrop", "HostConfig.") or (),
        "seccomp": _seccomp(host),
        "limits": _limits(host),
        **_log_options(host),
    }
    try:
        ContainerConfig(**options)  # (checked now: nothing is made of a bad request)
    except ConfigError as err:
        raise ApiError(400, str(err)) from None
    labels = _typed(body, "Labels", dict, {})
    if not all(isinstance(v, str) for v in labels.values()):
        raise ApiError(400, "Labels: expected an object of strings")
    shown = {
        "Hostname": options["hostname"] or (socket.gethostname() if modes["UTSMode"] else ""),
        "Domainname": "",
        "User": body.get("User") or "",
        "AttachStdin": bool(body.get("AttachStdin")),
        "AttachStdout": bool(body.get("AttachStdout")),
        "AttachStderr": bool(body.get("AttachStderr")),
        "Tty": tty,
        "OpenStdin": open_stdin,
        "StdinOnce": bool(body.get("StdinOnce")),
        "Env": _merged_env(image, env) + [n for n in unset if n not in env],
        "Cmd": cmd if cmd is not None else (image.config.get("Cmd") if entrypoint is None else None),
        "Image": body.get("Image", ""),
        "Volumes": body.get("Volumes"),
        "WorkingDir": options["cwd"] or image.config.get("WorkingDir") or "",
        "Entrypoint": entrypoint if entrypoint is not None else image.config.get("Entrypoint"),
        "Labels": {**(image.config.get("Labels") or {}), **labels},
        "ExposedPorts": body.get("ExposedPorts") or image.config.get("ExposedPorts"),
        "StopSignal": body.get("StopSignal") or image.config.get("StopSignal"),
        "StopTimeout": _typed(body, "StopTimeout", int, None),
        "Healthcheck": body.get("Healthcheck") or image.config.get("Healthcheck"),
    }
    checked_healthcheck(shown["Healthcheck"])
    host_shown = {
        **DEFAULT_HOST_CONFIG,
        **_accepted_as_given(host),
        **modes,
        "Binds": host.get("Binds"),
        "NetworkMode": network,
        "PortBindings": ports,
        "RestartPolicy": {"Name": policy or "no", "MaximumRetryCount": retries},
        "AutoRemove": auto_remove,
        "LogConfig": {
            "Type": (host.get("LogConfig") or {}).get("Type") or "json-file",
            "Config": (host.get("LogConfig") or {}).get("Config") or {},
        },
        "CapAdd": host.get("CapAdd"),
        "CapDrop": host.get("CapDrop"),
        "GroupAdd": host.get("GroupAdd"),
        "VolumesFrom": _strings(host, "VolumesFrom", "HostConfig."),
        "Privileged": False,
        "ReadonlyRootfs": options["read_only"],
        "Memory": host.get("Memory") or 0,
        "MemorySwap": host.get("MemorySwap") or 0,
        "CpuShares": host.get("CpuShares") or 0,
        "CpusetCpus": host.get("CpusetCpus") or "",
        "NanoCpus": host.get("NanoCpus") or 0,
        "PidsLimit": host.get("PidsLimit"),
        "Ulimits": host.get("Ulimits"),
        "SecurityOpt": host.get("SecurityOpt"),
        "Tmpfs": host.get("Tmpfs"),
        "Mounts": host.get("Mounts"),
        "VolumeDriver": volume_driver,
        "DeviceCgroupRules": host.get("DeviceCgroupRules"),
        "CpuRealtimePeriod": host.get("CpuRealtimePeriod") or 0,
        "CpuRealtimeRuntime": host.get("CpuRealtimeRuntime") or 0,
    }
    return CreateRequest(
        options=options,
        argv=argv,
        path=whole[0],
        args=tuple(whole[1:]),
        body=shown,
        host_config=host_shown,
        restart_policy=(policy or "no", retries),
        auto_remove=auto_remove,
        tty=tty,
        open_stdin=open_stdin,
        spawned=spawned or tty or open_stdin,
        anonymous_volumes=_anonymous(host, options["mounts"]),
        network_mode=network,
        alias=(endpoint["Aliases"] or [None])[0],
        endpoint=endpoint,
        # (on a user-defined network, dockerd ignores them: the CLI sends them as EndpointsConfig's Links)
        links=tuple(legacy_links) if network in BUILT_IN_NETWORKS else (),
    )


def check_volume_driver(driver: str, name: str) -> None:
    """Docker's built-in ``local`` driver is the only one (no volume plugins):
    another is refused as dockerd refuses a plugin it cannot find."""
    if driver not in ("", "local"):
        raise ApiError(404, f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')


def _restart_policy(body: dict, where: str) -> Tuple[str, int]:
    restart = _typed(body, "RestartPolicy", dict, {}, where)
    policy = _typed(restart, "Name", str, "", f"{where}RestartPolicy.")
    retries = _typed(restart, "MaximumRetryCount", int, 0, f"{where}RestartPolicy.")
    if policy not in RESTART_POLICIES:
        raise ApiError(400, f"{where}RestartPolicy.Name: invalid restart policy {policy!r}")
    return policy, retries


UPDATABLE_RESOURCES = ("Memory", "MemorySwap", "NanoCpus", "PidsLimit", "CpuShares", "CpusetCpus")


def with_volumes_from(request: CreateRequest, mounts_of: Callable[[str], Sequence[Mount]]) -> CreateRequest:
    """HostConfig.VolumesFrom (``NAME[:ro|:rw]``): the volumes and binds of those
    containers (``mounts_of(NAME)``, a 404 if there is none) at their paths,
    read-only with ``:ro``; a path the request mounts itself keeps its own."""
    added: List[Mount] = []
    mounts = list(request.options["mounts"])
    for spec in request.host_config.get("VolumesFrom") or ():
        name, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise ApiError(400, f"HostConfig.VolumesFrom: {spec!r}: the mode is ro or rw")
        targets = {os.path.normpath(str(m.target)) for m in mounts + added}
        for mount in mounts_of(name):
            if mount.kind.value in ("volume", "bind") and os.path.normpath(str(mount.target)) not in targets:
                added.append(attrs.evolve(mount, read_only=mount.read_only or mode == "ro"))
    if not added:
        return request
    return attrs.evolve(request, options={**request.options, "mounts": mounts + added})


def with_update(request: CreateRequest, body: dict) -> CreateRequest:
    """``docker update``: a new restart policy, new cgroup limits (those of
    UPDATABLE_RESOURCES; 0 or absent: unchanged; the caller applies them to a
    running container).  Other resources are a 400."""
    given = {k: v for k, v in body.items() if v not in (None, 0, "", [], {})}
    others = sorted(k for k in given if k != "RestartPolicy" and k not in UPDATABLE_RESOURCES)
    if others:
        raise ApiError(400, f"{', '.join(others)}: updating a container's resources is not supported")
    resources = {k: v for k, v in given.items() if k in UPDATABLE_RESOURCES}
    if resources:
        host = {**request.host_config, **resources}
        request = attrs.evolve(request, host_config=host, options={**request.options, "limits": _limits(host)})
    if body.get("RestartPolicy") is None:
        return request
    policy, retries = _restart_policy(body, "")
    if request.auto_remove and policy not in ("", "no"):
        raise ApiError(400, "Restart policy cannot be updated because AutoRemove is enabled for the container")
    shown = {"Name": policy or "no", "MaximumRetryCount": retries}
    return attrs.evolve(
        request, restart_policy=(policy or "no", retries), host_config={**request.host_config, "RestartPolicy": shown}
    )


# Docker's HostConfig as inspect shows it, for what a request leaves out (or what the
# daemon does not apply: MemorySwappiness stays null, PidMode "", ...): the values in effect.
DEFAULT_HOST_CONFIG: Dict[str, Any] = {
    "ContainerIDFile": "",
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CgroupnsMode": "private",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "PublishAllPorts": False,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "ConsoleSize": [0, 0],
    "Isolation": "",
    "CgroupParent": "",
    "BlkioWeight": 0,
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwappiness": None,
    "OomKillDisable": False,
    "Init": None,
}


def _go_names(host: dict) -> dict:
    """HostConfig's keys as dockerd reads them: Go's JSON matches a field's
    name case-insensitively (docker-py sends ``CPURealtimePeriod`` for
    ``CpuRealtimePeriod``)."""
    names = {key.lower(): key for key in DEFAULT_HOST_CONFIG}
    return {names.get(key.lower(), key): value for key, value in host.items()}


def _accepted_as_given(host: dict) -> Dict[str, Any]:
    """HostConfig fields whose only values we accept are what every container has
    anyway: shown as given.  Init: the library's init is always there; Isolation:
    Linux has one; Runtime "runc": the default runtime's name; CgroupnsMode
    "private": each container has a cgroup namespace of its own."""
    shown: Dict[str, Any] = {}
    init = _typed(host, "Init", bool, None, "HostConfig.")
    if init is not None:
        shown["Init"] = init
    for key, allowed in (("Isolation", ("", "default")), ("Runtime", ("", "runc")), ("CgroupnsMode", ("", "private"))):
        value = _typed(host, key, str, "", "HostConfig.")
        if value not in allowed:
            message = f"unknown or invalid runtime name: {value}" if key == "Runtime" else f"{value!r} is not supported"
            raise ApiError(400, message if key == "Runtime" else f"HostConfig.{key}: {message}")
        if value:
            shown[key] = value
    publish_all = _typed(host, "PublishAllPorts", bool, False, "HostConfig.")
    shown["PublishAllPorts"] = publish_all
    return shown


def _namespace_modes(host: dict) -> Dict[str, str]:
    """PidMode and UTSMode: "" (the container's own namespace) or "host" (the
    daemon's: ``pid_namespace``, ``uts_namespace``)."""
    modes = {}
    for key in ("PidMode", "UTSMode"):
        value = _typed(host, key, str, "", "HostConfig.")
        if value.startswith("container:"):
            raise ApiError(400, f"HostConfig.{key}: {value!r}: another container's namespace is not supported")
        if value not in ("", "host"):
            raise ApiError(400, f"HostConfig.{key}: invalid {key[:-4]} mode: {value}")
        modes[key] = value
    return modes


def _log_options(host: dict) -> Dict[str, Any]:
    """HostConfig.LogConfig: json-file with its max-size and max-file, or none (the output
    is still kept for attaches, but ``docker logs`` refuses it, as dockerd's)."""
    log = _typed(host, "LogConfig", dict, {}, "HostConfig.")
    driver = _typed(log, "Type", str, "", "HostConfig.LogConfig.")
    if driver not in ("", "json-file", "none"):
        raise ApiError(400, f"logger: no log driver named '{driver}' is registered")
    options: Dict[str, Any] = {}
    for key, value in (_typed(log, "Config", dict, {}, "HostConfig.LogConfig.") or {}).items():
        if key == "max-size":
            options["log_max_size"] = value
        elif key == "max-file" and str(value).isdigit():
            options["log_max_files"] = int(value)
        else:
            raise ApiError(400, f"HostConfig.LogConfig.Config: {key}={value!r} is not supported (max-size, max-file)")
    return options


def _endpoint(body: dict, network: str) -> Dict[str, Any]:
    """``NetworkingConfig.EndpointsConfig`` of ``network`` (``--network-alias``,
    driver options, ``--ip``, ``--ip6``, ``--link-local-ip``, ``--mac-address``:
    also the older ``Config.MacAddress``), checked; the library gives a container one name on its
    network (the first alias).  As dockerd (API < 1.44): more than one entry is
    refused, one of another network is ignored."""
    where = "NetworkingConfig."
    endpoints = _typed(_typed(body, "NetworkingConfig", dict, {}), "EndpointsConfig", dict, {}, where)
    if len(endpoints) > 1:
        raise ApiError(400, f"Container cannot be connected to network endpoints: {', '.join(endpoints)}")
    key = "default" if "default" in endpoints else network  # (the CLI's name when NetworkMode is the default)
    endpoint = _typed(endpoints, key, dict, {}, f"{where}EndpointsConfig.")
    configured = endpoint_config(endpoint, network, f"{where}EndpointsConfig.{network}.")
    configured["MacAddress"] = configured["MacAddress"] or _typed(body, "MacAddress", str, "")
    return configured


def endpoint_config(endpoint: dict, network: str, where: str) -> Dict[str, Any]:
    """An ``EndpointSettings`` body (create's ``EndpointsConfig`` entry, connect's
    ``EndpointConfig``) checked, as inspect shows what was asked for."""
    options = _typed(endpoint, "DriverOpts", dict, {}, where)
    if not all(isinstance(v, str) for v in options.values()):
        raise ApiError(400, f"{where}DriverOpts: expected string values")
    ipam = _typed(endpoint, "IPAMConfig", dict, {}, where)
    asked = {
        "IPv4Address": _typed(ipam, "IPv4Address", str, "", f"{where}IPAMConfig."),
        "IPv6Address": _typed(ipam, "IPv6Address", str, "", f"{where}IPAMConfig."),
        "LinkLocalIPs": _strings(ipam, "LinkLocalIPs", f"{where}IPAMConfig.") or [],
    }
    if (asked["IPv4Address"] or asked["IPv6Address"]) and network in BUILT_IN_NETWORKS:
        raise ApiError(400, "user specified IP address is supported on user defined networks only")
    links = endpoint.get("Links")
    checked_links(links, f"{where}Links")
    return {
        "Aliases": _strings(endpoint, "Aliases", where),
        "DriverOpts": options or None,
        "IPAMConfig": {k: v for k, v in asked.items() if v} or None,
        "MacAddress": _typed(endpoint, "MacAddress", str, "", where),
        "Links": links or None,
    }


def endpoint_options(endpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The library's options for what an endpoint config asks for (``Network.bridge``'s,
    ``Container.connect``'s): ``address``, ``address6``, ``mac_address``, ``link_local``,
    ``links``."""
    ipam = endpoint.get("IPAMConfig") or {}
    return {
        "address": ipam.get("IPv4Address") or None,
        "address6": ipam.get("IPv6Address") or None,
        "mac_address": endpoint.get("MacAddress") or None,
        "link_local": tuple(ipam.get("LinkLocalIPs") or ()),
        "links": library_links(endpoint.get("Links")),
    }


def endpoint_network(network: str, endpoint: Dict[str, Any]) -> Any:
    """``network=``: the name, or with what the endpoint asks for (``--ip``,
    ``--mac-address``, links on a user-defined network, ...) the library's
    ``Network.bridge(network=, address=, ...)``."""
    options = endpoint_options(endpoint)
    if network in BUILT_IN_NETWORKS:
        options["links"] = {}  # (legacy links there are the environment and hosts lines of daemon/links.py)
    if network == "host" and options["mac_address"]:
        raise ApiError(400, "conflicting options: mac-address and the network mode")
    if not any(options.values()) or network in ("host", "none"):  # (as dockerd: none has no interface to give them)
        return network
    try:
        return BridgeNetwork(network=None if network == "bridge" else network, **options)
    except ConfigError as err:
        raise ApiError(400, str(err)) from None


def known_network(name: str) -> None:
    """ConfigError (a failed start's 400) unless the library has a network named ``name``."""
    if not any(record.name == name for record in named.records(statedir.state_root())):
        raise ConfigError("HostConfig.NetworkMode", f"network {name} not found")


def with_network(request: CreateRequest, network: str, endpoint: Optional[Dict[str, Any]] = None) -> CreateRequest:
    """The request of a created container connected to ``network`` (as ``endpoint``,
    an :func:`endpoint_config`, asks) before its start."""
    options = {**request.options, "network": endpoint_network(network, endpoint or {})}
    if network in ("host", "none"):
        options["ports"] = ()
    try:
        ContainerConfig(**options)
    except ConfigError as err:
        raise ApiError(400, str(err)) from None
    host_config = {**request.host_config, "NetworkMode": network}
    return attrs.evolve(
        request, options=options, host_config=host_config, network_mode=network, alias=None, endpoint=endpoint or {}
    )


def _port_key(key: str) -> Tuple[int, str]:
    port, _, protocol = key.partition("/")
    protocol = protocol or "tcp"
    if not port.isdigit() or not 0 < int(port) < 65536 or protocol not in ("tcp", "udp"):
        raise ApiError(400, f"HostConfig.PortBindings: {key!r} is not PORT[/tcp|udp]")
    return int(port), protocol


def port_mappings(bindings: Dict[str, Any], publish_all: Dict[str, Any]) -> Tuple[PortMapping, ...]:
    """``PortBindings`` (``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``; an empty
    HostPort: one the kernel picks) and, for ``PublishAllPorts``, every exposed port
    on one the kernel picks -> the library's ``ports=``."""
    found: List[PortMapping] = []
    for key, hosts in bindings.items():
        port, protocol = _port_key(key)
        if hosts is None:
            continue
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            raise ApiError(400, f"HostConfig.PortBindings[{key!r}]: expected a list of {{HostIp, HostPort}}")
        for host in hosts or [{}]:
            text = str(host.get("HostPort") or "0")
            if not text.isdigit() or int(text) > 65535:
                raise ApiError(
                    400, f"HostConfig.PortBindings[{key!r}]: HostPort {text!r} is not a port (ranges are not supported)"
                )
            found.append(PortMapping(str(host.get("HostIp") or ANY_ADDRESS), int(text), port, protocol))
    bound = {m.key for m in found}
    for key in publish_all:
        port, protocol = _port_key(key)
        if f"{port}/{protocol}" not in bound:
            found.append(PortMapping(ANY_ADDRESS, 0, port, protocol))
    return tuple(found)


def _merged_env(image: Image, env: Dict[str, str]) -> List[str]:
    merged = dict(item.partition("=")[::2] for item in image.config.get("Env") or [])
    merged.update(env)
    return [f"{k}={v}" for k, v in merged.items()]


def _anonymous(host: dict, mounts: List[Mount]) -> Tuple[str, ...]:
    """The volumes of ``mounts`` named by us (not by Binds or a Mount's Source)."""
    named = {spec.split(":")[0] for spec in _strings(host, "Binds", "HostConfig.") or []}
    named |= {str(item.get("Source")) for item in host.get("Mounts") or [] if item.get("Source")}
    return tuple(str(m.source) for m in mounts if m.kind.value == "volume" and str(m.source) not in named)


def _mounts(host: dict, volumes: dict) -> List[Mount]:
    """HostConfig's Binds, Mounts and Tmpfs, then an anonymous volume for each path
    of Config's Volumes that none of them mounts (as Docker's).  Binds and volumes
    are idmapped: as root, the container's root acts on them as the host's root,
    as with a root dockerd (rootless, the library binds them plainly: the
    container's root is the daemon's user already)."""
    mounts = []
    try:
        for spec in _strings(host, "Binds", "HostConfig.") or []:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not parts[0]:
                raise ApiError(
                    400, f"HostConfig.Binds: {spec!r} is not /HOST:/CONTAINER[:ro] or VOLUME:/CONTAINER[:ro]"
                )
            options = parts[2].split(",") if len(parts) == 3 else []
            if parts[0].startswith("/"):
                mounts.append(Mount.bind(parts[0], parts[1], read_only="ro" in options, idmap=True))
            else:
                mounts.append(Mount.volume(parts[0], parts[1], read_only="ro" in options, idmap=True))
        for i, item in enumerate(_typed(host, "Mounts", list, [], "HostConfig.")):
            if not isinstance(item, dict):
                raise ApiError(400, f"HostConfig.Mounts[{i}]: expected an object")
            kind, target = item.get("Type", "volume"), item.get("Target")
            if not isinstance(target, str):
                raise ApiError(400, f"HostConfig.Mounts[{i}].Target: expected a string")
            if kind == "bind":
                source = str(item.get("Source", ""))
                mounts.append(Mount.bind(source, target, read_only=bool(item.get("ReadOnly")), idmap=True))
            elif kind == "tmpfs":
                size = (item.get("TmpfsOptions") or {}).get("SizeBytes")
                mounts.append(Mount.tmpfs(target, size=size or None))
            elif kind == "volume":
                name = item.get("Source") or secrets.token_hex(32)  # an anonymous volume: named by us
                mounts.append(Mount.volume(str(name), target, read_only=bool(item.get("ReadOnly")), idmap=True))
            else:
                raise ApiError(400, f"HostConfig.Mounts[{i}].Type: {kind!r} is not supported (bind, tmpfs, volume)")
        for target, opts in _typed(host, "Tmpfs", dict, {}, "HostConfig.").items():
            size = next((o[5:] for o in str(opts).split(",") if o.startswith("size=")), None)
            mounts.append(Mount.tmpfs(target, size=size))
        targets = {os.path.normpath(str(m.target)) for m in mounts}
        for target in volumes:
            if os.path.normpath(target) not in targets:
                mounts.append(Mount.volume(secrets.token_hex(32), target, idmap=True))
        for mount in mounts:
            mount.check("mount")
    except ConfigError as err:
        raise ApiError(400, f"HostConfig: {err}") from None
    return mounts


def _seccomp(host: dict):
    policy: Any = DEFAULT
    for item in _strings(host, "SecurityOpt", "HostConfig.") or []:
        key, sep, value = item.partition("=")
        if not sep:
            key, sep, value = item.partition(":")
        if key == "seccomp" and value == "unconfined":
            policy = None
        elif key == "seccomp":
            try:
                policy = Seccomp.from_json(json.loads(value))
            except (ValueError, ConfigError) as err:
                raise ApiError(400, f"HostConfig.SecurityOpt: seccomp profile: {err}") from None
        elif key == "no-new-privileges":
            pass  # always set, for every command
        else:
            raise ApiError(400, f"HostConfig.SecurityOpt: {item!r} is not supported (seccomp=..., no-new-privileges)")
    return policy


def _limits(host: dict) -> Limits:
    values: Dict[str, Any] = {}
    memory = _typed(host, "Memory", int, 0, "HostConfig.")
    if memory:
        values["memory"] = memory
    swap = _typed(host, "MemorySwap", int, 0, "HostConfig.")
    if swap:
        values["memory_swap"] = swap
    nano = _typed(host, "NanoCpus", int, 0, "HostConfig.")
    if nano:
        values["cpus"] = nano / 1e9
    pids = _typed(host, "PidsLimit", int, 0, "HostConfig.")
    if pids and pids > 0:
        values["pids"] = pids
    shares = _typed(host, "CpuShares", int, 0, "HostConfig.")
    if shares:
        values["cpu_shares"] = shares
    cpuset = _typed(host, "CpusetCpus", str, "", "HostConfig.")
    if cpuset:
        values["cpuset_cpus"] = cpuset
    rules = _strings(host, "DeviceCgroupRules", "HostConfig.")
    if rules:
        values["device_rules"] = rules
    for key, name in (("CpuRealtimePeriod", "cpu_rt_period_us"), ("CpuRealtimeRuntime", "cpu_rt_runtime_us")):
        value = _typed(host, key, int, 0, "HostConfig.")
        if value:  # (0: not set, as dockerd)
            values[name] = value
    for i, item in enumerate(_typed(host, "Ulimits", list, [], "HostConfig.")):
        if not isinstance(item, dict) or item.get("Name") not in RLIMITS:
            raise ApiError(400, f"HostConfig.Ulimits[{i}]: expected {{Name, Soft, Hard}} with Name one of {RLIMITS}")
        values[item["Name"]] = (item.get("Soft", 0), item.get("Hard", item.get("Soft", 0)))
    try:
        return Limits.from_dict(values)
    except ConfigError as err:
        raise ApiError(400, f"HostConfig: {err}") from None
