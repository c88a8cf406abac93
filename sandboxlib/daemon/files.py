"""A container's files, running or stopped (``filesystems.py``): ``archive``
(``docker cp``: HEAD for a path's stat, GET a tar of it, PUT a tar into a
directory) and ``commit``.  Paths resolve inside the container's root
(``..`` and symlinks cannot leave it); a hostile tar is refused whole."""

from __future__ import annotations

import base64
import datetime
import functools
import io
import json
import os
import stat
import tarfile
from typing import Any, Dict, List, Optional

from aiohttp import web

from ..errors import ContainerStateError, ImageFormatError, SandboxError
from ..images.layercheck import LayerCheck, LayerLimits
from .apierrors import ApiError, library_error
from .exports import streamed_tar
from .filesystems import files_of
from .registry_of_containers import ContainerRecord
from .server import MAX_BODY, Route, json_body, json_response
from .threads import in_thread

__all__ = ["ROUTES"]

MAX_ARCHIVE = 1 << 30  # a PUT archive body (held in memory: the library's put_archive takes bytes)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GO_DIR, _GO_SYMLINK = 1 << 31, 1 << 27  # Go's os.ModeDir and os.ModeSymlink, as the CLI decodes a stat


def _record(request: web.Request) -> ContainerRecord:
    return request.app["context"].containers.get(request.match_info["id"])


def _path(request: web.Request) -> str:
    path = request.query.get("path")
    if not path:
        raise ApiError(400, "path: required")
    return path


async def _in_files(record: ContainerRecord, path: str, request: Optional[web.Request] = None) -> web.StreamResponse:
    """The path's stat header; with ``request`` (a GET) a tar of it after, streamed."""
    try:
        async with files_of(record) as box:
            found, link = await in_thread(box.sync.path_stat, path)
            headers = {"X-Docker-Container-Path-Stat": _stat_header(path, found, link)}
            if request is None:
                return web.Response(status=200, headers=headers)
            return await streamed_tar(request, functools.partial(box.sync.write_archive, path), headers)
    except FileNotFoundError:
        raise ApiError(404, f"Could not find the file {path} in container {record.name}") from None
    except (SandboxError, OSError) as err:
        raise ApiError(400, f"{path}: {err}") from None


def _stat_header(path: str, found: os.stat_result, link: str) -> str:
    """Docker's ``X-Docker-Container-Path-Stat``: base64 JSON, Go's mode bits."""
    mode = stat.S_IMODE(found.st_mode)
    mode |= _GO_DIR if stat.S_ISDIR(found.st_mode) else _GO_SYMLINK if stat.S_ISLNK(found.st_mode) else 0
    fields = {
        "name": path.rstrip("/").rpartition("/")[2] or "/",
        "size": found.st_size,
        "mode": mode,
        "mtime": _rfc3339(found.st_mtime),
        "linkTarget": link,
    }
    return base64.b64encode(json.dumps(fields).encode()).decode()


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _head(request: web.Request) -> web.StreamResponse:
    return await _in_files(_record(request), _path(request))


async def _get(request: web.Request) -> web.StreamResponse:
    return await _in_files(_record(request), _path(request), request)


async def _put(request: web.Request) -> web.Response:
    record = _record(request)
    path = _path(request)
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > MAX_ARCHIVE:
            raise ApiError(413, f"archive larger than {MAX_ARCHIVE} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    await in_thread(_check_archive, data, path)
    try:
        async with files_of(record) as box:
            await in_thread(box.sync.put_archive, path, data)
    except FileNotFoundError:
        raise ApiError(404, f"Could not find the file {path} in container {record.name}") from None
    except ImageFormatError as err:
        raise ApiError(400, f"refused archive: {err}") from None
    except (SandboxError, OSError) as err:
        raise ApiError(400, f"{path}: {err}") from None
    return web.Response(status=200)


def _check_archive(data: bytes, path: str) -> None:
    """The whole tar followed as the unpacker will (traversals, links out, bad names),
    before anything is written: a refused archive leaves nothing behind."""
    label = f"archive for {path}"
    check = LayerCheck(label, LayerLimits(), devices=os.geteuid() == 0)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                check.entry(member)
    except (tarfile.TarError, EOFError) as err:
        if data.startswith(ZSTD_MAGIC):
            return  # the library decompresses zstd (tarfile cannot), and its unpacker refuses what it must

        raise ApiError(400, f"{label}: not a tar archive: {err}") from None
    except ImageFormatError as err:
        raise ApiError(400, f"refused archive: {err}") from None


_CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "WORKDIR", "USER", "EXPOSE", "LABEL")


def _changes(request: web.Request, body: Dict[str, Any]) -> Dict[str, object]:
    """``docker commit --change`` lines (Dockerfile instructions) and a config body, as config keys."""
    changes: Dict[str, object] = {}
    for key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Labels"):
        if body.get(key) is not None:
            changes[key] = body[key]
    for line in request.query.getall("changes", []):
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction not in _CHANGE_KEYS:
            raise ApiError(400, f"changes: {instruction} is not supported ({', '.join(_CHANGE_KEYS)})")
        value: Any = rest.strip()
        if instruction in ("CMD", "ENTRYPOINT"):
            value = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            changes[instruction.capitalize() if instruction == "CMD" else "Entrypoint"] = value
        elif instruction == "ENV":
            changes.setdefault("Env", []).append(value.replace(" ", "=", 1) if "=" not in value else value)  # type: ignore[union-attr]
        elif instruction == "WORKDIR":
            changes["WorkingDir"] = value
        elif instruction == "USER":
            changes["User"] = value
        elif instruction == "EXPOSE":
            changes["ExposedPorts"] = {p if "/" in p else f"{p}/tcp": {} for p in value.split()}
        else:
            name, _, label = value.partition("=")
            changes.setdefault("Labels", {})[name] = label.strip('"')  # type: ignore[index]
    return changes


async def _commit(request: web.Request) -> web.Response:
    context = request.app["context"]
    ref_id = request.query.get("container")
    if not ref_id:
        raise ApiError(400, "container: required")
    record = context.containers.get(ref_id)
    body = await json_body(request, required=False)
    repo, tag = request.query.get("repo"), request.query.get("tag")
    ref = f"{repo}:{tag or 'latest'}" if repo else None
    changes = _changes(request, body)
    for last in (False, True):  # (again when the container ended during a running one's commit)
        try:
            async with files_of(record) as box:
                image = await in_thread(lambda: box.sync.commit(ref, changes=changes or None))
            break
        except ContainerStateError as err:
            if last or record.removed or record.removing:
                raise ApiError(409, str(err)) from None
            await record.wait_for(lambda: not record.running or record.removed)
        except SandboxError as err:
            raise library_error(err) from None
    if image.id != record.image_id:  # (a commit of no change is its image itself)
        context.image_parents[image.id] = record.image_id
    context.events.emit("container", "commit", record.id, record.attributes())
    return json_response({"Id": image.id}, 201)


ROUTES: List[Route] = [
    ("HEAD", "/containers/{id}/archive", _head),
    ("GET", "/containers/{id}/archive", _get),
    ("PUT", "/containers/{id}/archive", _put),
    ("POST", "/commit", _commit),
]
assert MAX_BODY < MAX_ARCHIVE
