"""``_ping``, ``/version``, ``/info``, and Docker's own answers for what a
single-node engine without swarm has not (swarm, services, nodes, ...)."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from typing import List

import psutil
from aiohttp import web

from ..version import __version__
from .apierrors import error_response
from .inspect import container_summary, image_summary
from .server import API_VERSION, MIN_API_VERSION, Route, json_response
from .volumes import volume_json

__all__ = ["ROUTES"]

_PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}
NOT_A_SWARM_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)


async def _ping(request: web.Request) -> web.Response:
    body = b"" if request.method == "HEAD" else b"OK"
    return web.Response(body=body, headers={**_PING_HEADERS, "Content-Type": "text/plain; charset=utf-8"})


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


async def _version(request: web.Request) -> web.Response:
    details = {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": _arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }
    return json_response(
        {
            "Platform": {"Name": f"sandboxlib {__version__}"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
            **details,
        }
    )


async def _info(request: web.Request) -> web.Response:
    context = request.app["context"]
    records = context.containers.all()
    images = [] if not os.path.exists(os.path.join(context.store_path, "images")) else context.store().list()
    rootless = os.geteuid() != 0
    return json_response(
        {
            "ID": "sandboxlib",
            "Containers": len(records),
            "ContainersRunning": sum(r.state == "running" for r in records),
            "ContainersPaused": sum(r.state == "paused" for r in records),
            "ContainersStopped": sum(not r.running for r in records),
            "Images": len(images),
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "sandboxlib store"]],
            "DockerRootDir": context.store_path,
            "Plugins": {"Volume": [], "Network": ["host", "null"], "Log": ["json-file"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "PidsLimit": True,
            "IPv4Forwarding": False,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": 0,
            "SystemTime": "",
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1",
            "KernelVersion": platform.release(),
            "OperatingSystem": platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
            if hasattr(platform, "freedesktop_os_release")
            else "Linux",
            "OSType": "linux",
            "Architecture": platform.machine(),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": psutil.virtual_memory().total,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": {"sandboxlib": {"path": "sbx-init"}},
            "DefaultRuntime": "sandboxlib",
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False},
            "LiveRestoreEnabled": False,
            "Isolation": "",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=userns"]
            + (["name=rootless"] if rootless else []),
            "Warnings": None,
        }
    )


async def _disk_usage(request: web.Request) -> web.Response:
    """``docker system df``: the images, containers and volumes, and the layers' size."""
    context = request.app["context"]
    store = context.store()
    images = await asyncio.to_thread(store.list)
    names = await asyncio.to_thread(store.volumes)
    return json_response(
        {
            "LayersSize": sum(image.size for image in images),
            "Images": [image_summary(image) for image in images],
            "Containers": [container_summary(record) for record in context.containers.all()],
            "Volumes": [{**volume_json(store, n), "UsageData": {"Size": -1, "RefCount": -1}} for n in names],
            "BuildCache": [],
        }
    )


async def _not_a_swarm_manager(request: web.Request) -> web.Response:
    return error_response(503, NOT_A_SWARM_MANAGER)


async def _no_plugins(request: web.Request) -> web.Response:
    return json_response([])


ROUTES: List[Route] = [
    ("GET", "/_ping", _ping),
    ("HEAD", "/_ping", _ping),
    ("GET", "/version", _version),
    ("GET", "/info", _info),
    ("GET", "/system/df", _disk_usage),
    ("GET", "/plugins", _no_plugins),
] + [
    (method, path, _not_a_swarm_manager)
    for prefix in ("swarm", "services", "nodes", "secrets", "configs", "tasks")
    for method in ("GET", "POST", "DELETE")
    for path in (f"/{prefix}", f"/{prefix}/{{rest:.*}}")
]
