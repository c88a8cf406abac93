"""Docker's JSON shapes of containers and images (inspect and list), from
the daemon's records and the image store."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import ipaddress
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from ..images import Image
from .create_config import BUILT_IN_NETWORKS
from .registry_of_containers import ContainerRecord

__all__ = [
    "container_json",
    "container_summary",
    "docker_state",
    "endpoint",
    "endpoints",
    "image_json",
    "image_summary",
    "network_id",
]


def docker_state(record: ContainerRecord) -> str:
    return {"removing": "removing"}.get(record.state, record.state)


def _ports(record: ContainerRecord) -> Dict[str, Any]:
    """Docker's ``NetworkSettings.Ports``: every exposed or bound port, with where
    it is published while the container runs (null when not published)."""
    if record.request.network_mode in ("host", "none"):
        return {}  # as dockerd: a host network's ports are the host's
    ports: Dict[str, Any] = dict.fromkeys(record.request.body.get("ExposedPorts") or {})
    ports.update(dict.fromkeys(record.request.host_config.get("PortBindings") or {}))
    if record.running and record.box is not None:
        for key, (address, port) in record.box.sync.ports.items():
            ports[key] = [{"HostIp": address, "HostPort": str(port)}]
    return ports


def summary_ports(record: ContainerRecord) -> List[Dict[str, Any]]:
    """``docker ps``'s PORTS: ``[{"IP", "PrivatePort", "PublicPort", "Type"}]``."""
    found = []
    for key, hosts in _ports(record).items():
        port, _, protocol = key.partition("/")
        for host in hosts or [{}]:
            entry: Dict[str, Any] = {"PrivatePort": int(port), "Type": protocol or "tcp"}
            if host:
                entry.update(IP=host["HostIp"], PublicPort=int(host["HostPort"]))
            found.append(entry)
    return found


def network_id(name: str) -> str:
    """A network's id: a stable hash of its name (one source for the network endpoints and inspect)."""
    return hashlib.sha256(f"sandboxlib network {name}".encode()).hexdigest()


def endpoint(record: ContainerRecord, network: Optional[str] = None) -> Dict[str, Any]:
    """The container on its network (or on ``network``, which it joined), as Docker's ``EndpointSettings``."""
    running = record.running and record.box is not None
    if network is None or network == record.request.network_mode:
        network = record.request.network_mode
        configured = record.request.endpoint
    else:
        # (connect's aliases, then the name the daemon adds for the library)
        configured = {
            **record.joined_at.get(network, {}),
            "Aliases": [a for a in record.joined.get(network, ()) if a != record.name],
        }
    found = record.box.sync.endpoints.get(network) if running else None  # type: ignore[union-attr]
    interface = ipaddress.IPv4Interface(found.address) if found else None
    interface6 = ipaddress.IPv6Interface(found.address6) if found and found.address6 else None
    # as dockerd 20.10: the aliases asked for, and while it runs on a network of its own, its short id
    aliases = [*(configured.get("Aliases") or ()), *([record.id[:12]] if running else ())]
    return {
        "IPAMConfig": configured.get("IPAMConfig"),
        "Links": configured.get("Links"),
        "Aliases": list(dict.fromkeys(aliases)) or None if network not in BUILT_IN_NETWORKS else None,
        "NetworkID": network_id(network),
        "EndpointID": hashlib.sha256(f"{record.id} {record.runs} {network}".encode()).hexdigest() if interface else "",
        "Gateway": found.gateway if found else "",
        "IPAddress": str(interface.ip) if interface else "",
        "IPPrefixLen": interface.network.prefixlen if interface else 0,
        "IPv6Gateway": (found.gateway6 or "") if found else "",
        "GlobalIPv6Address": str(interface6.ip) if interface6 else "",
        "GlobalIPv6PrefixLen": interface6.network.prefixlen if interface6 else 0,
        # (while it runs, its interface's; before, the one asked for)
        "MacAddress": found.mac_address if found else configured.get("MacAddress") or "",
        "DriverOpts": configured.get("DriverOpts"),
    }


def endpoints(record: ContainerRecord) -> Dict[str, Dict[str, Any]]:
    """Every network of the container: the one it was created on, then those it joined."""
    return {
        record.request.network_mode: endpoint(record),
        **{name: endpoint(record, name) for name in record.joined},
    }


def container_json(record: ContainerRecord, links: Sequence[str] = ()) -> Dict[str, Any]:
    """``links``: its legacy links as dockerd shows them (``/NAME:/PARENT/ALIAS``)."""
    request = record.request
    networks = endpoints(record)
    # Docker's top-level fields are the default bridge's (joined or not), else empty
    network = networks.get("bridge") or {}
    default = bool(network)
    return {
        "Id": record.id,
        "Created": record.created,
        "Path": request.path,
        "Args": list(request.args),
        "State": {
            "Status": docker_state(record),
            "Running": record.state in ("running", "paused"),
            "Paused": record.state == "paused",
            "Restarting": record.state == "restarting",
            "OOMKilled": record.oom_killed,
            "Dead": record.state == "dead",
            "Pid": record.pid,
            "ExitCode": record.exit_code,
            "Error": record.error,
            "StartedAt": record.started_at,
            "FinishedAt": record.finished_at,
            **({"Health": record.health.json()} if record.health is not None else {}),
        },
        "Image": record.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": record.log_path,
        "Name": "/" + record.name,
        "RestartCount": record.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {**request.host_config, "Links": list(links) or None},
        "Mounts": _mounts(request),
        "Config": {**request.body, "Hostname": request.body.get("Hostname") or record.id[:12]},
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": False,
            "Ports": _ports(record),
            "SandboxKey": "",
            "EndpointID": network["EndpointID"] if default else "",
            "Gateway": network["Gateway"] if default else "",
            "IPAddress": network["IPAddress"] if default else "",
            "IPPrefixLen": network["IPPrefixLen"] if default else 0,
            "GlobalIPv6Address": network["GlobalIPv6Address"] if default else "",
            "GlobalIPv6PrefixLen": network["GlobalIPv6PrefixLen"] if default else 0,
            "IPv6Gateway": network["IPv6Gateway"] if default else "",
            "MacAddress": network["MacAddress"] if default else "",
            "Networks": networks,
        },
    }


def _mounts(request) -> List[Dict[str, Any]]:
    """Docker's Mounts: those of HostConfig's Binds, then of its Mounts."""
    host_config = request.host_config
    found = []
    for spec in host_config.get("Binds") or []:
        parts = spec.split(":")
        volume = not parts[0].startswith("/")
        found.append(
            {
                "Type": "volume" if volume else "bind",
                "Name": parts[0] if volume else "",
                "Source": parts[0],
                "Destination": parts[1],
                "Mode": parts[2] if len(parts) > 2 else "",
                "RW": "ro" not in (parts[2] if len(parts) > 2 else ""),
                "Propagation": "rprivate",
            }
        )
    targets = {str(m.target): m for m in request.options.get("mounts") or ()}
    for item in host_config.get("Mounts") or []:
        kind, target = item.get("Type", "volume"), str(item.get("Target"))
        entry = {
            "Type": kind,
            "Source": item.get("Source") or "",
            "Destination": target,
            "Mode": "",
            "RW": not item.get("ReadOnly"),
            "Propagation": "rprivate" if kind == "bind" else "",
        }
        if kind == "volume":  # (an anonymous one's name is the one the daemon gave it)
            name = item.get("Source") or str(getattr(targets.get(target), "source", ""))
            store = str(request.options.get("image_store") or "")
            entry.update(Name=name, Source=os.path.join(store, "volumes", name), Driver="local", Mode="z")
        found.append(entry)
    return found


def _epoch(stamp: Optional[str]) -> int:
    if not stamp:
        return 0
    try:  # (seconds are enough: fractions and zones of any length are dropped, the time is UTC)
        moment = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0
    return calendar.timegm(moment.timetuple())


def human_duration(seconds: float) -> str:
    """As Docker's ``units.HumanDuration`` (``docker ps``'s STATUS)."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(minutes / 60 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    return f"{hours // (24 * 7)} weeks"


def _ago(stamp: str) -> str:
    return human_duration(max(0.0, time.time() - _epoch(stamp)))


def _status(record: ContainerRecord) -> str:
    if record.state == "running":
        health = record.health.status if record.health is not None else None
        shown = {None: "", "starting": " (health: starting)"}.get(health, f" ({health})")  # (dockerd's)
        return f"Up {_ago(record.started_at)}{shown}"
    if record.state == "paused":
        return f"Up {_ago(record.started_at)} (Paused)"
    if record.state == "restarting":
        return f"Restarting ({record.exit_code}) {_ago(record.finished_at)} ago"
    if record.state == "created":
        return "Created"
    if record.state == "removing":
        return "Removal In Progress"
    return f"Exited ({record.exit_code}) {_ago(record.finished_at)} ago"


def container_summary(record: ContainerRecord, link_names: Sequence[str] = ()) -> Dict[str, Any]:
    """``link_names``: more names of it, those of the legacy links to it (``/PARENT/ALIAS``)."""
    request = record.request
    return {
        "Id": record.id,
        "Names": ["/" + record.name, *link_names],
        "Image": record.image,
        "ImageID": record.image_id,
        "Command": " ".join([request.path, *request.args]),
        "Created": _epoch(record.created),
        "Ports": summary_ports(record),
        "Labels": request.body.get("Labels") or {},
        "State": docker_state(record),
        "Status": _status(record),
        "HostConfig": {"NetworkMode": request.network_mode},
        "NetworkSettings": {"Networks": endpoints(record)},
        "Mounts": _mounts(request),
    }


def _tags(image: Image) -> List[str]:
    return list(image.references)


def image_summary(image: Image) -> Dict[str, Any]:
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": _tags(image),
        "RepoDigests": list(image.repo_digests),
        "Created": _epoch(image.created),
        "Size": image.size,
        "SharedSize": -1,
        "VirtualSize": image.size,
        "Labels": image.config.get("Labels") or {},
        "Containers": -1,
    }


def image_json(image: Image, *, parent: str = "") -> Dict[str, Any]:
    return {
        "Id": image.id,
        "RepoTags": _tags(image),
        "RepoDigests": list(image.repo_digests),
        "Parent": parent,
        "Comment": "",
        "Created": image.created or "1970-01-01T00:00:00Z",
        "Container": "",
        "DockerVersion": "",
        "Author": "",
        "Config": {
            "Env": image.config.get("Env"),
            "Cmd": image.config.get("Cmd"),
            "Entrypoint": image.config.get("Entrypoint"),
            "WorkingDir": image.config.get("WorkingDir") or "",
            "User": image.config.get("User") or "",
            "Labels": image.config.get("Labels"),
            "ExposedPorts": image.config.get("ExposedPorts"),
            "Volumes": image.config.get("Volumes"),
            "StopSignal": image.config.get("StopSignal"),
        },
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
