"""The image endpoints: list, inspect, pull (``/images/create``, a JSON
progress stream), push, save (``get``), load, tag, remove, prune, history."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from typing import Any, Dict, List

from aiohttp import web

from ..errors import ImageNotFound, SandboxError
from ..images import Image
from .apierrors import ApiError, library_error, no_such_image
from .containers import filters_of
from .inspect import image_json, image_summary
from .server import Route, flush_headers, json_response, query_bool
from .threads import deliver, in_thread

__all__ = ["ROUTES"]

_DONE = object()


def _context(request: web.Request):
    return request.app["context"]


async def _image(request: web.Request) -> Image:
    return await _context(request).image(request.match_info["name"])


async def _list(request: web.Request) -> web.Response:
    images = await asyncio.to_thread(_context(request).store().list)
    filters = filters_of(request)
    wanted = []
    for image in images:
        if "dangling" in filters and (filters["dangling"][0] in ("true", "1")) != (not image.references):
            continue
        if "reference" in filters and not any(
            r == w or r.partition(":")[0] == w for r in image.references for w in filters["reference"]
        ):
            continue
        if not image.references and not query_bool(request, "all") and "dangling" not in filters:
            continue
        wanted.append(image)
    return json_response([image_summary(i) for i in wanted])


async def _inspect(request: web.Request) -> web.Response:
    image = await _image(request)
    return json_response(image_json(image, parent=_context(request).image_parents.get(image.id, "")))


async def _history(request: web.Request) -> web.Response:
    image = await _image(request)
    rows = [
        {"Id": "<missing>", "Created": 0, "CreatedBy": "", "Tags": None, "Size": layer.size, "Comment": ""}
        for layer in reversed(image.layers)
    ]
    if rows:
        rows[0].update(Id=image.id, Tags=list(image.references))
    return json_response(rows)


async def _progress_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await flush_headers(response, request)
    return response


async def _line(response: web.StreamResponse, message: Dict[str, Any]) -> None:
    await response.write(json.dumps(message).encode() + b"\r\n")


async def _pull(request: web.Request) -> web.StreamResponse:
    context = _context(request)
    name = request.query.get("fromImage")
    if not name:
        if request.query.get("fromSrc"):
            return await _import(request)
        raise ApiError(400, "fromImage: required")
    tag = request.query.get("tag")
    ref = name if not tag or "@" in name else f"{name}{'@' if tag.startswith('sha256:') else ':'}{tag}"
    platform = request.query.get("platform") or None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def progress(report) -> None:
        deliver(loop, queue.put_nowait, report)

    def pull() -> Image:
        try:
            return context.store().pull(ref, platform=platform, progress=progress)
        finally:
            deliver(loop, queue.put_nowait, _DONE)

    pulling = asyncio.ensure_future(in_thread(pull))
    response = await _progress_stream(request)
    await _line(response, {"status": f"Pulling from {name}", "id": tag or "latest"})
    while (report := await queue.get()) is not _DONE:
        await _line(
            response,
            {
                "status": report.phase.value.capitalize(),
                "progressDetail": {"current": report.done, "total": report.total} if report.total else {},
                "id": report.digest[7:19],
            },
        )
    try:
        image = await pulling
    except SandboxError as err:
        message = str(err)
        await _line(response, {"errorDetail": {"message": message}, "error": message})
    else:
        context.events.emit("image", "pull", ref, {"name": ref})
        await _line(response, {"status": f"Digest: {image.digest}"})
        await _line(response, {"status": f"Status: Downloaded newer image for {ref}"})
    await response.write_eof()
    return response


async def _push(request: web.Request) -> web.StreamResponse:
    context = _context(request)
    name = request.match_info["name"]
    tag = request.query.get("tag")
    ref = f"{name}:{tag}" if tag else name
    await context.image(ref)
    response = await _progress_stream(request)
    await _line(response, {"status": f"The push refers to repository [{name}]"})
    try:
        digest = await in_thread(context.store().push, ref)
    except SandboxError as err:
        await _line(response, {"errorDetail": {"message": str(err)}, "error": str(err)})
    else:
        context.events.emit("image", "push", ref, {"name": ref})
        await _line(response, {"status": f"{tag or 'latest'}: digest: {digest}"})
    await response.write_eof()
    return response


async def _save(request: web.Request) -> web.StreamResponse:
    context = _context(request)
    names = request.query.getall("names", []) if "name" not in request.match_info else [request.match_info["name"]]
    if not names:
        raise ApiError(400, "names: at least one image")
    for name in names:
        await context.image(name)
    fd, path = tempfile.mkstemp(prefix="save-", suffix=".tar", dir=context.state_dir)
    os.close(fd)
    try:
        await in_thread(context.store().save, names, path)
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with open(path, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        os.unlink(path)


async def _body_to_file(request: web.Request, prefix: str) -> str:
    """The request's body in a file of the daemon's state directory (the caller removes it)."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".tar", dir=_context(request).state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                await asyncio.to_thread(f.write, chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


async def _import(request: web.Request) -> web.StreamResponse:
    """``docker import``: ``fromSrc=-``, a root file system tarball as the body; ``repo``,
    ``tag`` and ``changes`` (Dockerfile instructions) as the query gives them."""
    context = _context(request)
    if request.query["fromSrc"] != "-":
        raise ApiError(400, "fromSrc: only '-' (the tarball as the request's body) is supported, not a URL")
    repo, tag = request.query.get("repo"), request.query.get("tag")
    ref = f"{repo}:{tag}" if repo and tag else repo or None
    path = await _body_to_file(request, "import-")
    try:
        image = await in_thread(
            lambda: context.store().import_rootfs(path, ref, changes=request.query.getall("changes", []))
        )
    except SandboxError as err:
        raise ApiError(400, str(err)) from None
    finally:
        os.unlink(path)
    context.events.emit("image", "import", image.id, {"name": ref or image.id})
    response = await _progress_stream(request)
    await _line(response, {"status": image.id})
    await response.write_eof()
    return response


async def _load(request: web.Request) -> web.StreamResponse:
    context = _context(request)
    path = await _body_to_file(request, "load-")
    try:
        images = await in_thread(context.store().load_carried, path)
    except SandboxError as err:  # as dockerd: an error line in the answer (docker-py's ImageLoadError)
        response = await _progress_stream(request)
        await _line(response, {"errorDetail": {"message": str(err)}, "error": str(err)})
        await response.write_eof()
        return response
    finally:
        os.unlink(path)
    lines = []
    for image, names in images:  # the archive's names only, as dockerd's
        for name in names or (image.id,):
            kind = "Loaded image" if names else "Loaded image ID"
            lines.append({"stream": f"{kind}: {name}\n"})
            context.events.emit("image", "load", image.id, {"name": name})
    response = await _progress_stream(request)  # chunked, as dockerd's: docker-py reads it line by line
    for line in lines:
        await _line(response, line)
    await response.write_eof()
    return response


async def _tag(request: web.Request) -> web.Response:
    context = _context(request)
    source = request.match_info["name"]
    repo = request.query.get("repo")
    if not repo:
        raise ApiError(400, "repo: required")
    target = f"{repo}:{request.query.get('tag') or 'latest'}"
    await context.image(source)
    try:
        await asyncio.to_thread(context.store().tag, source, target)
    except SandboxError as err:
        raise library_error(err) from None
    context.events.emit("image", "tag", target, {"name": target})
    return web.Response(status=201)


async def _remove(request: web.Request) -> web.Response:
    context = _context(request)
    name = request.match_info["name"]
    image = await context.image(name)
    if not query_bool(request, "force"):
        for record in context.containers.all():
            if record.image_id == image.id:
                raise ApiError(
                    409,
                    f'conflict: unable to remove repository reference "{name}" (must force) - '
                    f"container {record.id[:12]} is using its referenced image {image.id[7:19]}",
                )
    try:
        gone = await asyncio.to_thread(context.store().remove, name)
    except ImageNotFound:
        raise no_such_image(name) from None
    answer: List[Dict[str, str]] = [{"Untagged": ref} for ref in gone if not ref.startswith("sha256:")]
    remaining = [i for i in await asyncio.to_thread(context.store().list) if i.id == image.id]
    if not remaining:
        answer.append({"Deleted": image.id})
    context.events.emit("image", "delete", image.id, {"name": name})
    return json_response(answer)


async def _prune(request: web.Request) -> web.Response:
    report = await asyncio.to_thread(_context(request).store().prune)
    return json_response(
        {"ImagesDeleted": [{"Deleted": d} for d in report.images] or None, "SpaceReclaimed": report.bytes_freed}
    )


ROUTES: List[Route] = [
    ("GET", "/images/json", _list),
    ("POST", "/images/create", _pull),
    ("POST", "/images/load", _load),
    ("GET", "/images/get", _save),
    ("POST", "/images/prune", _prune),
    ("GET", "/images/{name:.+}/json", _inspect),
    ("GET", "/images/{name:.+}/history", _history),
    ("GET", "/images/{name:.+}/get", _save),
    ("POST", "/images/{name:.+}/tag", _tag),
    ("POST", "/images/{name:.+}/push", _push),
    ("DELETE", "/images/{name:.+}", _remove),
]
