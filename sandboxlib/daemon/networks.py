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
from typing import Any, Dict, List, Optional, Tuple

import attrs
from aiohttp import web

from ..config import NetworkAddresses, network_name
from ..errors import ConfigError, ContainerStateError, UnsupportedError
from ..network import DEFAULT_BRIDGE, named
from ..runtime import statedir
from .apierrors import ApiError, library_error
from .containers import filters_of
from .create_config import BUILT_IN_NETWORKS, endpoint_config, endpoint_network, endpoint_options, with_network
from .inspect import endpoint, network_id
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
                "MacAddress": point["MacAddress"],
                "IPv4Address": f"{point['IPAddress']}/{point['IPPrefixLen']}" if point["IPAddress"] else "",
                "IPv6Address": f"{point['GlobalIPv6Address']}/{point['GlobalIPv6PrefixLen']}"
                if point["GlobalIPv6Address"]
                else "",
            }
    config = _ipam_config(record) if record is not None else []
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


def _ipam_config(record: named.NetworkRecord) -> List[Dict[str, Any]]:
    """Docker's ``IPAM.Config``: each subnet with its gateway, and its IP range and
    auxiliary addresses when it has them."""
    pool = named.pool_of(record)
    config: List[Dict[str, Any]] = [{"Subnet": record.subnet, "Gateway": str(pool.gateway)}]
    if record.ip_range:
        config[0]["IPRange"] = record.ip_range
    if record.aux_addresses:
        config[0]["AuxiliaryAddresses"] = dict(record.aux_addresses)
    if record.subnet6:
        config.append({"Subnet": record.subnet6, "Gateway": str(pool.gateway6)})
        if record.ip_range6:
            config[1]["IPRange"] = record.ip_range6
    return config


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


def _create_network(
    name: str, subnet: Optional[str], subnet6: Optional[str], internal: bool, addresses: NetworkAddresses
) -> None:
    root = statedir.state_root()
    statedir.ensure_root(root)  # (0700, root's: made by a first network as by a first container)
    named.create(root, name, subnet, subnet6, internal=internal, addresses=addresses)


def _pools(body: dict) -> Tuple[Optional[dict], Optional[dict]]:
    """``IPAM.Config``: at most one IPv4 and one IPv6 pool ({Subnet, IPRange, Gateway, AuxiliaryAddresses})."""
    configs = (body.get("IPAM") or {}).get("Config") or []
    if not isinstance(configs, list) or not all(
        isinstance(c, dict) and isinstance(c.get("Subnet"), str) for c in configs
    ):
        raise ApiError(400, "IPAM.Config: expected a list of {Subnet}")
    pools = {":" in c["Subnet"]: c for c in configs}
    if len(configs) > 2 or len(pools) < len(configs):
        raise ApiError(400, "IPAM.Config: at most one IPv4 and one IPv6 {Subnet} are supported")
    if (pools.get(True) or {}).get("AuxiliaryAddresses"):
        raise ApiError(400, "IPAM.Config: AuxiliaryAddresses of an IPv6 subnet are not supported")
    return pools.get(False), pools.get(True)


def _addresses(pool: Optional[dict], pool6: Optional[dict]) -> NetworkAddresses:
    """The library's options for the pools' IPRange, Gateway and AuxiliaryAddresses."""
    four, six = pool or {}, pool6 or {}
    try:
        return NetworkAddresses(
            gateway=four.get("Gateway") or None,
            ip_range=four.get("IPRange") or None,
            aux_addresses=four.get("AuxiliaryAddresses") or None,
            gateway6=six.get("Gateway") or None,
            ip_range6=six.get("IPRange") or None,
        )
    except ConfigError as err:
        raise ApiError(400, f"IPAM.Config: {err}") from None


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
    pool, pool6 = _pools(body)
    addresses = _addresses(pool, pool6)
    subnet, subnet6 = (pool or {}).get("Subnet"), (pool6 or {}).get("Subnet")
    if subnet6 and not body.get("EnableIPv6"):
        raise ApiError(400, "IPAM.Config: an IPv6 subnet needs EnableIPv6")
    if body.get("EnableIPv6") and subnet6 is None:
        subnet6 = named.default_subnet6(name)
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ApiError(400, "Labels: expected an object")
    try:
        await in_thread(_create_network, name, subnet, subnet6, internal, addresses)
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
        config = _typed_endpoint(body)
        await _join(record, name, endpoint_config(config, name, "EndpointConfig."))
    else:
        await _leave(record, name)
    context.events.emit("network", "connect" if joining else "disconnect", network_id(name), {"container": record.id})
    return web.Response(status=200)


def _typed_endpoint(body: dict) -> dict:
    config = body.get("EndpointConfig")
    if config is not None and not isinstance(config, dict):
        raise ApiError(400, "EndpointConfig: expected an object")
    return config or {}


async def _join(record: Any, name: str, endpoint: Dict[str, Any]) -> None:
    """``endpoint``: connect's ``EndpointConfig``, checked (``create_config.endpoint_config``)."""
    mode = record.request.network_mode
    aliases = endpoint["Aliases"] or []
    if _on(record, name):
        raise ApiError(403, f"endpoint with name {record.name} already exists in network {name}")
    if name in ("host", "none") or (record.running and mode == "host"):
        raise ApiError(400, f"container cannot be connected to network {name} with network mode {mode}")
    if not record.running and mode in BUILT_IN_NETWORKS:  # (created: it moves, as before its first start)
        record.request = with_network(record.request, name, endpoint)
        record.request = attrs.evolve(record.request, alias=(aliases or [None])[0])
        return
    endpoint_network(name, endpoint)  # (bad addresses: a 400 now, not at a start)
    names = [*aliases, record.name]
    if record.running:  # (the library's errors: Docker-shaped by the server)
        connect = record.box.sync.connect
        await in_thread(functools.partial(connect, name, aliases=names, **endpoint_options(endpoint)))
    record.joined[name] = names
    record.joined_at[name] = endpoint  # (what it asked for: each start joins so)


async def _leave(record: Any, name: str) -> None:
    if name in record.joined:
        if record.running:
            await in_thread(record.box.sync.disconnect, name)
        del record.joined[name]
        record.joined_at.pop(name, None)
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
