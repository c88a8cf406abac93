"""``POST /build``: Docker's legacy builder endpoint (``DOCKER_BUILDKIT=0
docker build``, docker-py's ``images.build``) on the library's
``ImageStore.build``.  The body is the context as a tar (gzip too), kept in
a file of the daemon's state directory, checked whole (the image store's
layer check: traversals, links out, bad names; only files, directories and
links) before a directory is made of it; a refused context leaves nothing.
Progress is the legacy builder's JSON lines: ``{"stream": "Step 1/2 :
..."}``, the ``RUN``s' output, ``{"aux": {"ID": ...}}``, ``Successfully
built`` and ``tagged``; a failure is an ``{"error", "errorDetail"}`` line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from typing import Any, Dict, List, Optional

from aiohttp import web

from ..build import BuildEvent
from ..build import ImageStore as BuildingStore
from ..config.network import extra_hosts_option
from ..errors import BuildStepFailed, ConfigError, ImageFormatError, SandboxError
from ..images.compression import decompressed, sniff
from ..images.layercheck import LayerCheck, LayerLimits
from ..images.unpack import DIR_FLAGS, IdPolicy, unpack_into
from .apierrors import ApiError
from .server import Route, flush_headers, json_response, query_bool
from .threads import deliver, in_thread

__all__ = ["ROUTES"]

MAX_CONTEXT = 8 << 30  # bytes of a context's tar
_NETWORKS = ("bridge", "host", "none")
_KINDS = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)


def _json_query(request: web.Request, name: str) -> Dict[str, str]:
    text = request.query.get(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ApiError(400, f"{name}: invalid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{name}: expected a JSON object")
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _options(request: web.Request) -> Dict[str, Any]:
    """The query, checked before the body is read."""
    if request.query.get("remote"):
        raise ApiError(400, "remote: building from a URL or git repository is not supported: send the context")
    network = request.query.get("networkmode") or "default"
    if network == "default":
        network = request.app["context"].default_network
    if network not in _NETWORKS:
        raise ApiError(400, f"networkmode: {network!r}: expected default, bridge, host or none")
    return {
        "tag": request.query.getall("t", []),
        "dockerfile": request.query.get("dockerfile") or None,
        "build_args": _json_query(request, "buildargs"),
        "target": request.query.get("target") or None,
        "no_cache": query_bool(request, "nocache"),
        "labels": _json_query(request, "labels"),
        "network": network,
        "extra_hosts": _extra_hosts(request),
        "cache_from": _cache_from(request),
    }


def _extra_hosts(request: web.Request) -> Dict[str, str]:
    """``extrahosts``: ``NAME:IP`` items, repeated or comma-separated (``--add-host``)."""
    hosts = {}
    for text in request.query.getall("extrahosts", []):
        for item in filter(None, text.split(",")):
            name, sep, address = item.partition(":")
            if not sep:
                raise ApiError(400, f"extrahosts: {item!r} is not NAME:IP")
            hosts[name] = address
    try:
        extra_hosts_option(hosts)
    except ConfigError as err:
        raise ApiError(400, f"extrahosts: {err}") from None
    return hosts


def _cache_from(request: web.Request) -> Optional[List[str]]:
    """``cachefrom``: a JSON list of image names (None: not given)."""
    text = request.query.get("cachefrom")
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ApiError(400, f"cachefrom: invalid JSON: {err}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "cachefrom: expected a JSON list of image names")
    return value


def _check_context(path: str) -> None:
    """Every member followed as an unpacker would, before anything is extracted."""
    check = LayerCheck("build context", LayerLimits(), devices=False)
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if member.type not in _KINDS:
                    raise ApiError(400, f"refused build context: {member.name!r} is not a file, directory or link")
                check.entry(member)
    except (tarfile.TarError, EOFError) as err:
        raise ApiError(400, f"build context: not a tar archive: {err}") from None
    except ImageFormatError as err:
        raise ApiError(400, f"refused build context: {err}") from None


def _build(store_path: str, archive: str, directory: str, options: Dict[str, Any], report) -> Any:
    """On a thread of its own (it outlives a client that goes away): build, clean up."""
    try:
        return BuildingStore(store_path).build(directory, progress=report, **options)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.unlink(archive)


def _check_dockerfile(directory: str, name: Optional[str]) -> None:
    """An empty Dockerfile is an error status before any stream, as dockerd's
    (clients such as docker-py tell a refused build by it)."""
    name = name or "Dockerfile"
    with contextlib.suppress(OSError):
        if os.lstat(os.path.join(directory, name)).st_size == 0:
            raise ApiError(400, f"the Dockerfile ({name}) cannot be empty")


def _extract(archive: str, directory: str) -> None:
    """The context (checked whole already) through the images' hostile-input
    extractor, owned by us; tar's own extraction has no such guard before
    Python 3.11.4's filters."""
    with open(archive, "rb") as f:
        kind = sniff(f.read(8))
        f.seek(0)
        root_fd = os.open(directory, DIR_FLAGS)
        try:
            policy = IdPolicy(squash=(os.geteuid(), os.getegid()))
            unpack_into(decompressed(f, kind, "build contexts"), root_fd, policy, "build context", whiteouts=False)
        finally:
            os.close(root_fd)


def _line(value: Dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\r\n"


def _stream_of(event: BuildEvent) -> Optional[Dict[str, Any]]:
    """The legacy builder's line of a library event (None: it prints none)."""
    if event.kind == "step":
        return {"stream": f"Step {event.step}/{event.total} : {event.text}\n"}
    if event.kind == "cached":
        return {"stream": " ---> Using cache\n"}
    if event.kind == "output" and event.stream == "stderr":  # red, as the legacy builder's
        return {"stream": f"\x1b[91m{event.text}\n\x1b[0m"}
    if event.kind == "output":
        return {"stream": event.text + "\n"}
    if event.kind == "warning":
        return {"stream": f"[Warning] {event.text}\n"}
    return None


def _legacy_message(err: BaseException) -> str:
    """A failure as the legacy builder words it where clients match the text
    (docker-py's tests, CI scripts grepping for "returned a non-zero code")."""
    if isinstance(err, BuildStepFailed):
        return f"The command '{' '.join(err.argv)}' returned a non-zero code: {err.exit_code}"
    return str(err)


async def _receive(request: web.Request, path: str) -> None:
    size = 0
    with open(path, "wb") as file:
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > MAX_CONTEXT:
                raise ApiError(413, f"build context larger than {MAX_CONTEXT} bytes")
            await asyncio.to_thread(file.write, chunk)


async def _post(request: web.Request) -> web.StreamResponse:
    context = request.app["context"]
    options = _options(request)
    fd, archive = tempfile.mkstemp(prefix="build-", suffix=".tar", dir=context.state_dir)
    os.close(fd)
    try:
        await _receive(request, archive)
        await in_thread(_check_context, archive)
        directory = tempfile.mkdtemp(prefix="build-", dir=context.state_dir)
    except BaseException:
        os.unlink(archive)
        raise
    try:
        try:
            await in_thread(_extract, archive, directory)
        except (SandboxError, OSError, tarfile.TarError) as err:
            raise ApiError(400, f"build context: {err}") from None
        _check_dockerfile(directory, options["dockerfile"])
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        os.unlink(archive)
        raise
    lines: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def report(event: BuildEvent) -> None:
        line = _stream_of(event)
        if line is not None:
            deliver(loop, lines.put_nowait, line)

    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await flush_headers(response, request)
    job = asyncio.ensure_future(in_thread(_build, context.store_path, archive, directory, options, report))
    while not (job.done() and lines.empty()):
        getter = asyncio.ensure_future(lines.get())
        await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            await response.write(_line(getter.result()))
        else:
            getter.cancel()
    try:
        image = job.result()
    except (SandboxError, OSError, tarfile.TarError) as err:
        message = _legacy_message(err)
        await response.write(_line({"errorDetail": {"message": message}, "error": message}))
    else:
        await response.write(_line({"aux": {"ID": image.id}}))
        await response.write(_line({"stream": f"Successfully built {image.id.split(':')[-1][:12]}\n"}))
        for tag in options["tag"]:
            tag = tag if ":" in tag.rpartition("/")[2] else f"{tag}:latest"
            await response.write(_line({"stream": f"Successfully tagged {tag}\n"}))
            context.events.emit("image", "tag", image.id, {"name": tag})
    await response.write_eof()
    return response


async def _prune(request: web.Request) -> web.Response:
    """``POST /build/prune``: the build cache's steps (the ``all``, ``keep-storage``
    and ``filters`` options are not applied: every step goes)."""
    keys, freed = await in_thread(request.app["context"].store().prune_build_cache)
    return json_response({"CachesDeleted": keys or None, "SpaceReclaimed": freed})


ROUTES: List[Route] = [("POST", "/build", _post), ("POST", "/build/prune", _prune)]
