"""The network endpoints: the built-in networks ``bridge`` (the library's
default bridge ``sbx0``), ``host`` and ``none``, and the library's named
networks (``Network.create``: a bridge of their own, as root), which
``/networks/create`` makes and ``DELETE`` removes.  A container is
connected to more networks (``connect``) before its start or while it runs
(``Container.connect``: a veth on the other bridge, as root), and leaves
those again (``disconnect``)."""

from __future__ import annotations

import datetime
import functools
import ipaddress
from typing import Any, Dict, List, Optional

import attrs
from aiohttp import web

from ..config import network_name
from ..errors import ConfigError, ContainerStateError, UnsupportedError
from ..network import DEFAULT_BRIDGE, named
from ..runtime import statedir
from .apierrors import ApiError, library_error
from .containers import filters_of
from .create_config import BUILT_IN_NETWORKS, with_network
from .inspect import endpoint, network_id
from .links import checked_links, library_links
from .server import Route, json_body, json_response
from .threads import in_thread

__all__ = ["ROUTES"]

_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _records() -> Dict[str, named.NetworkRecord]:
    return {record.name: record for record in named.records(statedir.state_root())}


def _on(record: Any, name: str) -> bool:
    return record.request.network_mode == name or name in record.joined


def _shape(request: web.Request, name: str, record: Any = None) -> Dict[str, Any]:
    members = {}
    for r in request.app["context"].containers.all():
        if r.running and _on(r, name):
            point = endpoint(r, name)
            members[r.id] = {
                "Name": r.name,
                "EndpointID": point["EndpointID"],
                "MacAddress": "",
                "IPv4Address": f"{point['IPAddress']}/{point['IPPrefixLen']}" if point["IPAddress"] else "",
                "IPv6Address": "",
            }
    config = []
    if record is not None:
        subnet = ipaddress.IPv4Network(record.subnet)
        config = [{"Subnet": record.subnet, "Gateway": str(next(subnet.hosts()))}]
        if record.subnet6:
            config.append({"Subnet": record.subnet6, "Gateway": str(ipaddress.IPv6Network(record.subnet6)[1])})
    return {
        "Name": name,
        "Id": network_id(name),
        "Created": _rfc3339(record.created) if record is not None and record.created else "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": _DRIVERS.get(name, "bridge"),
        "EnableIPv6": bool(record is not None and record.subnet6),
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": bool(record is not None and record.internal),
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": {"com.docker.network.bridge.name": record.bridge if record else DEFAULT_BRIDGE}
        if name not in ("host", "none")
        else {},
        "Labels": request.app["context"].network_labels.get(name, {}),
    }


def _all(request: web.Request) -> List[Dict[str, Any]]:
    records = _records()
    return [_shape(request, name) for name in BUILT_IN_NETWORKS] + [
        _shape(request, name, record) for name, record in records.items()
    ]


def _find(request: web.Request, ref: str) -> Dict[str, Any]:
    """By name, full id or a unique id prefix; 404 else."""
    networks = _all(request)
    for shape in networks:
        if ref in (shape["Name"], shape["Id"]):
            return shape
    found = [s for s in networks if len(ref) >= 3 and s["Id"].startswith(ref)]
    if len(found) != 1:
        raise ApiError(404, f"network {ref} not found")
    return found[0]


def _filtered(shapes: List[Dict[str, Any]], filters: Dict[str, List[str]]) -> List[Dict[str, Any]]:
    def matches(shape: Dict[str, Any], key: str, wanted: List[str]) -> bool:
        if key == "name":
            return any(w in shape["Name"] for w in wanted)
        if key == "id":
            return any(shape["Id"].startswith(w) for w in wanted)
        if key == "driver":
            return shape["Driver"] in wanted
        if key == "type":
            builtin = shape["Name"] in BUILT_IN_NETWORKS
            return ("builtin" in wanted and builtin) or ("custom" in wanted and not builtin)
        if key == "label":
            labels = shape["Labels"]
            return all(labels.get(k) == v if sep else k in labels for k, sep, v in (w.partition("=") for w in wanted))
        raise ApiError(400, f"invalid filter '{key}'")

    return [s for s in shapes if all(matches(s, k, w) for k, w in filters.items())]


async def _list(request: web.Request) -> web.Response:
    return json_response(_filtered(await in_thread(_all, request), filters_of(request)))


async def _inspect(request: web.Request) -> web.Response:
    return json_response(await in_thread(_find, request, request.match_info["id"]))


def _create_network(name: str, subnet: Optional[str], subnet6: Optional[str], internal: bool) -> None:
    root = statedir.state_root()
    statedir.ensure_root(root)  # (0700, root's: made by a first network as by a first container)
    named.create(root, name, subnet, subnet6, internal=internal)


async def _create(request: web.Request) -> web.Response:
    body = await json_body(request)
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "Name: required")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise ApiError(400, f"Driver: {driver!r}: only bridge networks are supported")
    internal = body.get("Internal") or False
    if not isinstance(internal, bool):
        raise ApiError(400, "Internal: expected a boolean")
    if name in BUILT_IN_NETWORKS + ("default",):
        raise ApiError(403, f"{name} is a pre-defined network and cannot be created")
    try:
        network_name(name)
    except ConfigError as err:
        raise ApiError(400, str(err)) from None
    if name in await in_thread(_records):
        raise ApiError(409, f"network with name {name} already exists")
    configs = (body.get("IPAM") or {}).get("Config") or []
    if not isinstance(configs, list) or not all(
        isinstance(c, dict) and isinstance(c.get("Subnet"), str) for c in configs
    ):
        raise ApiError(400, "IPAM.Config: expected a list of {Subnet}")
    subnets = {":" in c["Subnet"]: c["Subnet"] for c in configs}
    if len(configs) > 2 or len(subnets) < len(configs):
        raise ApiError(400, "IPAM.Config: at most one IPv4 and one IPv6 {Subnet} are supported")
    subnet, subnet6 = subnets.get(False), subnets.get(True)
    if subnet6 and not body.get("EnableIPv6"):
        raise ApiError(400, "IPAM.Config: an IPv6 subnet needs EnableIPv6")
    if body.get("EnableIPv6") and subnet6 is None:
        subnet6 = named.default_subnet6(name)
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ApiError(400, "Labels: expected an object")
    try:
        await in_thread(_create_network, name, subnet, subnet6, internal)
    except (ConfigError, UnsupportedError, PermissionError) as err:
        raise ApiError(400 if isinstance(err, ConfigError) else 403, f"creating network {name}: {err}") from None
    request.app["context"].network_labels[name] = {str(k): str(v) for k, v in labels.items()}
    request.app["context"].events.emit("network", "create", network_id(name), {"name": name, "type": "bridge"})
    return json_response({"Id": network_id(name), "Warning": ""}, 201)


async def _remove(request: web.Request) -> web.Response:
    name = (await in_thread(_find, request, request.match_info["id"]))["Name"]
    if name in BUILT_IN_NETWORKS:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be removed")
    context = request.app["context"]
    users = [r.name for r in context.containers.all() if r.running and _on(r, name)]
    if users:
        raise ApiError(403, f"error while removing network: network {name} id {network_id(name)} has active endpoints")
    try:
        await in_thread(named.remove, statedir.state_root(), name)
    except ContainerStateError as err:
        raise ApiError(403, f"error while removing network: {err}") from None
    except ConfigError as err:
        raise library_error(err) from None
    context.network_labels.pop(name, None)
    context.events.emit("network", "destroy", network_id(name), {"name": name, "type": "bridge"})
    return web.Response(status=204)


async def _connect(request: web.Request) -> web.Response:
    """A container joins the network (``Container.connect`` while it runs, at its
    start otherwise) or leaves it; a created one on a built-in network moves instead."""
    name = (await in_thread(_find, request, request.match_info["id"]))["Name"]
    body = await json_body(request)
    ref = body.get("Container")
    if not isinstance(ref, str):
        raise ApiError(400, "Container: required")
    context = request.app["context"]
    record = context.containers.get(ref)
    joining = request.path.endswith("/connect")
    if joining:
        await _join(record, name, _aliases(body), _address(body), _links(body))
    else:
        await _leave(record, name)
    context.events.emit("network", "connect" if joining else "disconnect", network_id(name), {"container": record.id})
    return web.Response(status=200)


def _aliases(body: dict) -> List[str]:
    config = body.get("EndpointConfig")
    aliases = (config.get("Aliases") if isinstance(config, dict) else None) or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ApiError(400, "EndpointConfig.Aliases: expected a list of names")
    return aliases


def _links(body: dict) -> List[str]:
    """``EndpointConfig.Links`` (``NAME:ALIAS`` each), checked."""
    config = body.get("EndpointConfig")
    given = (config.get("Links") if isinstance(config, dict) else None) or []
    checked_links(given, "EndpointConfig.Links")
    return given


def _address(body: dict) -> Optional[str]:
    """``--ip``: EndpointConfig.IPAMConfig.IPv4Address."""
    config = body.get("EndpointConfig")
    ipam = (config.get("IPAMConfig") if isinstance(config, dict) else None) or {}
    address = ipam.get("IPv4Address") if isinstance(ipam, dict) else None
    if address is not None and not isinstance(address, str):
        raise ApiError(400, "EndpointConfig.IPAMConfig.IPv4Address: expected a string")
    return address or None


async def _join(
    record: Any, name: str, aliases: List[str], address: Optional[str] = None, links: Optional[List[str]] = None
) -> None:
    mode = record.request.network_mode
    if _on(record, name):
        raise ApiError(403, f"endpoint with name {record.name} already exists in network {name}")
    if name in ("host", "none") or (record.running and mode == "host"):
        raise ApiError(400, f"container cannot be connected to network {name} with network mode {mode}")
    if not record.running and mode in BUILT_IN_NETWORKS:  # (created: it moves, as before its first start)
        record.request = with_network(record.request, name, address, links)
        endpoint = {
            "Aliases": aliases or None,
            "DriverOpts": None,
            "IPAMConfig": address and {"IPv4Address": address},
            "Links": links or None,
        }
        record.request = attrs.evolve(record.request, alias=(aliases or [None])[0], endpoint=endpoint)
        return
    if address and not record.running:
        raise ApiError(400, "--ip for a network joined at the container's start is not supported (connect it running)")
    names = [*aliases, record.name]
    if record.running:  # (the library's errors: Docker-shaped by the server)
        connect = functools.partial(
            record.box.sync.connect, name, aliases=names, address=address, links=library_links(links)
        )
        await in_thread(connect)
    record.joined[name] = names
    if address:
        record.joined_at[name] = address
    if links:
        record.joined_links[name] = links


async def _leave(record: Any, name: str) -> None:
    if name in record.joined:
        if record.running:
            await in_thread(record.box.sync.disconnect, name)
        del record.joined[name]
        record.joined_at.pop(name, None)
        record.joined_links.pop(name, None)
        return
    if name != record.request.network_mode:
        raise ApiError(400, f"container {record.id} is not connected to network {name}")
    if record.running:  # (off its bridge: Container.disconnect; the library's errors Docker-shaped by the server)
        await in_thread(record.box.sync.disconnect, name)
    record.request = with_network(record.request, "none")


async def _prune(request: web.Request) -> web.Response:
    context = request.app["context"]
    used = {n for r in context.containers.all() for n in (r.request.network_mode, *r.joined)}
    deleted = []
    for name in await in_thread(_records):
        if name not in used:
            try:
                await in_thread(named.remove, statedir.state_root(), name)
            except (ContainerStateError, ConfigError):
                continue  # (in use by a container of the library's, outside this daemon)
            context.network_labels.pop(name, None)
            deleted.append(name)
    return json_response({"NetworksDeleted": deleted})


ROUTES: List[Route] = [
    ("GET", "/networks", _list),
    ("POST", "/networks/create", _create),
    ("POST", "/networks/prune", _prune),
    ("GET", "/networks/{id}", _inspect),
    ("DELETE", "/networks/{id}", _remove),
    ("POST", "/networks/{id}/connect", _connect),
    ("POST", "/networks/{id}/disconnect", _connect),
]
