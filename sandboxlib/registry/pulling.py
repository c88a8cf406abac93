"""Pulling an image: the manifest (``HEAD`` first: an image already in the
store by its repo digest costs one request), an index resolved to one
platform, the config, then each layer the store lacks, in parallel,
streamed into the store's blobs, verified against its digest, checked by
the same layer check as ``load()`` and unpacked by the hostile-input
extractor into ``layers/KEY`` for the caller's default containers while it
arrives (a hostile layer is refused the same way, and nothing of it is
published; the first start then finds the layers unpacked).  Everything
happens in one import transaction: a failure leaves nothing referenced,
and what it wrote is collected.

Processes pulling into one store at once share the work: a blob is
downloaded under a lock that the others wait for, and a pull killed
anywhere leaves only temporary files and unreferenced blobs, which the
next collection (``prune()``, a failed import) removes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import attrs

from ..errors import (
    ConfigError,
    DigestMismatch,
    ImageFormatError,
    ImageNotFound,
    RegistryDataError,
    RegistryError,
    UnsupportedError,
)
from ..images import Image, ImageStore, Layer, importer
from ..images.model import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    load_json,
    parse_config,
    parse_manifest,
)
from ..images.newimage import host_platform
from ..images.unpack import IdPolicy
from .client import SCHEMA1_TYPES, Repository
from .names import RemoteReference, resolve
from .progress import Phase, Progress
from .settings import registry_settings
from .transfer import Cancelled

__all__ = ["pull", "parse_platform"]

DOWNLOADS_PER_REGISTRY = 4  # blobs fetched at once from one registry (containerd's and Docker's default: 3)
LOCK_POLL = 0.05  # seconds between tries of another process's blob lock (a cancel is seen as fast)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
MAX_INDEX_DEPTH = 2


ProgressCallback = Callable[[Progress], None]
log = logging.getLogger("sandboxlib")


def parse_platform(text: Optional[str]) -> Tuple[str, str, Optional[str]]:
    """``os/arch[/variant]`` (default: the host's) -> (os, architecture, variant)."""
    if text is None:
        return host_platform() + (None,)
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError("platform", f"{text!r} is not os/arch[/variant] (e.g. linux/arm64)")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def pull(
    store: ImageStore, ref: str, *, platform: Optional[str] = None, progress: Optional[ProgressCallback] = None
) -> Image:
    """Pull ``ref`` into ``store``; see :meth:`sandboxlib.ImageStore.pull`.  The
    registry's mirrors (the registries file) are tried first, in order; a
    mirror that fails is passed over, the registry itself is tried last."""
    remote = resolve(ref, "ref")
    wanted = parse_platform(platform)
    report = progress or (lambda event: None)
    for source in _mirrors(remote):
        try:
            return _pull_from(store, remote, source, wanted, report)
        except RegistryError as err:
            log.warning("pull of %s: the mirror %s failed, trying the next source: %s", remote, source.registry, err)
    return _pull_from(store, remote, remote, wanted, report)


def _mirrors(remote: RemoteReference) -> List[RemoteReference]:
    """Where the mirrors of ``remote``'s registry keep its repository (``HOST[:PORT][/PREFIX]``)."""
    found = []
    for location in registry_settings().mirrors_of(remote.registry):
        host, _, prefix = location.partition("/")
        repository = f"{prefix}/{remote.repository}" if prefix else remote.repository
        found.append(attrs.evolve(remote, registry=host, repository=repository))
    return found


def _pull_from(store: ImageStore, remote: RemoteReference, source: RemoteReference, wanted, report) -> Image:
    """Pull ``remote`` from ``source`` (its registry or a mirror of it); the image keeps ``remote``'s names."""
    with Repository(source, mirror=source is not remote) as repo:
        target = remote.digest or remote.tag or "latest"
        head_digest, _ = repo.head_manifest(target, ACCEPT)
        known = _already_pulled(store, remote, remote.digest or head_digest, wanted)
        if known is not None:
            return known
        data, media_type = _fetch_manifest(repo, target, remote.digest)
        repo_digest = _digest(data)
        with importer.transaction(store):
            manifest = _image_manifest(repo, data, media_type, wanted)
            digest = _copy_image(store, repo, manifest, report, _unpack_policy(store, wanted))
            names = (remote.store_tag,) if remote.store_tag else ()
            return store.add(digest, names, (remote.repo_digest(repo_digest),))


def _already_pulled(store: ImageStore, remote: RemoteReference, digest: Optional[str], wanted) -> Optional[Image]:
    """The image the store has under this repo digest for this platform, (re)tagged, or None."""
    if digest is None:
        return None
    try:
        image = store.get(remote.repo_digest(digest))
    except ImageNotFound:
        return None
    if (image.os, image.architecture) != wanted[:2]:  # an index pulled before for another platform
        return None
    if remote.store_tag and remote.store_tag not in image.references:
        with store.writing():
            image = store.add(image.digest, (remote.store_tag,))
    return image


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fetch_manifest(repo: Repository, target: str, expected: Optional[str]) -> Tuple[bytes, str]:
    """A manifest or index by tag or digest, checked against the digest asked for or announced."""
    data, media_type, announced = repo.get_manifest(target, ACCEPT)
    actual = _digest(data)
    for claimed in (expected, announced):
        if claimed is not None and claimed.startswith("sha256:") and claimed != actual:
            raise repo.error(200, f"manifest {target} has digest {actual}, expected {claimed}", RegistryDataError)
    if media_type in SCHEMA1_TYPES or (not media_type and b'"schemaVersion": 1' in data):
        raise repo.error(
            200,
            f"manifest {target} is Docker's image manifest schema 1 ({media_type}), which was "
            "deprecated in 2015: push the image again with a current Docker, podman or skopeo",
            RegistryDataError,
        )
    return data, media_type


def _image_manifest(repo: Repository, data: bytes, media_type: str, wanted, depth: int = 0) -> Tuple[bytes, str]:
    """(bytes, digest) of the image manifest for ``wanted`` (os, arch, variant): the
    document itself, or the one its index names for that platform."""
    label = f"{repo.registry}/{repo.repository} manifest {_digest(data)}"
    document = load_json(data, label)
    kind = document.get("mediaType") or media_type
    if kind in MANIFEST_TYPES:
        return data, _digest(data)
    if kind not in INDEX_TYPES:
        raise repo.error(200, f"{label}: unsupported media type {kind!r}", RegistryDataError)
    if depth >= MAX_INDEX_DEPTH or "layers" in document:
        raise repo.error(200, f"{label}: an index nested too deeply or that also carries layers", RegistryDataError)
    entry = _platform_entry(document, wanted)
    if entry is None:
        raise repo.error(
            200, f"{label}: the index has no manifest for {'/'.join(p for p in wanted if p)}", RegistryDataError
        )
    child, child_type = _fetch_manifest(repo, entry["digest"], entry["digest"])
    return _image_manifest(repo, child, entry.get("mediaType") or child_type, wanted, depth + 1)


def _platform_entry(index: dict, wanted) -> Optional[dict]:
    os_name, arch, variant = wanted
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(platform, dict) or not isinstance(entry.get("digest"), str):
            continue
        if (
            platform.get("os") == os_name
            and platform.get("architecture") == arch
            and variant in (None, platform.get("variant"))
        ):
            return entry
    return None


def _unpack_policy(store: ImageStore, wanted) -> Optional[IdPolicy]:
    """The id policy of the caller's default containers, which a pull unpacks
    for; None for another platform's image (not run here) or when the caller
    cannot run containers here (the pull only stores the image)."""
    if wanted[:2] != host_platform():
        return None
    try:
        return store.caller_policy()
    except (UnsupportedError, ConfigError) as err:
        log.info("pull: layers not unpacked (unpacked at a container's first start): %s", err)
        return None


def _copy_image(
    store: ImageStore, repo: Repository, manifest: Tuple[bytes, str], report, policy: Optional[IdPolicy]
) -> str:
    """Config and missing layers into the store; returns the digest of the manifest stored."""
    data, digest = manifest
    label = f"{repo.registry}/{repo.repository} manifest {digest}"
    _unambiguous(data, label)
    (config_digest, _), layers = parse_manifest(data, label)
    config_data = repo.small_blob(config_digest)
    if _digest(config_data) != config_digest:
        raise repo.error(200, f"config {config_digest} has digest {_digest(config_data)}", RegistryDataError)
    diff_ids = parse_config(config_data, f"{label} config")["rootfs"]["diff_ids"]
    if len(diff_ids) != len(layers):
        raise ImageFormatError(label, f"{len(layers)} layers but {len(diff_ids)} diff_ids")
    stored = _layers(store, repo, list(zip(layers, diff_ids)), report, policy)
    store.blobs.put_bytes(config_data, config_digest)
    if [(s[0], s[2]) for s in stored] == [(d, t) for d, _, t in layers]:
        return store.blobs.put_bytes(data, digest)
    # A layer is in the store already in another compression, or its blob is not compressed as its
    # media type says (Docker pushes such layers): the image refers to the blob as it is.
    return importer.write_manifest_raw(store, config_data, stored)


def _unambiguous(data: bytes, label: str) -> None:
    if "manifests" in json.loads(data):
        raise ImageFormatError(label, "a manifest that also carries 'manifests' is ambiguous (CVE-2021-41190)")


def _layers_by_diff_id(store: ImageStore) -> Dict[str, Layer]:
    """The layers of the images in the store (checked when they entered it), by diff_id and by digest."""
    found: Dict[str, Layer] = {}
    for image in store.list():
        for layer in image.layers:
            found[layer.diff_id] = found[layer.digest] = layer
    return found


def _layers(
    store: ImageStore, repo: Repository, layers: list, report, policy: Optional[IdPolicy]
) -> List[Tuple[str, int, str]]:
    """Every layer in the store, the missing ones downloaded in parallel (at most
    DOWNLOADS_PER_REGISTRY at a time) and unpacked as they arrive for
    ``policy`` (if any; others unpack at their first start); (digest, size,
    media type) of each, in order.  Progress is reported from the calling
    thread; the first failure stops the others."""
    present = _layers_by_diff_id(store)
    stored: List[Optional[Tuple[str, int, str]]] = [None] * len(layers)
    todo = []
    for i, ((digest, size, _), diff_id) in enumerate(layers):
        known = present.get(digest) or present.get(diff_id)
        if known is not None and known.diff_id == diff_id:
            report(Progress(digest=digest, phase=Phase.PRESENT, done=size, total=size))
            stored[i] = known.digest, known.size, known.media_type
        else:
            report(Progress(digest=digest, phase=Phase.WAITING, done=0, total=size))
            todo.append(i)
    if todo:
        _download_all(store, repo, layers, todo, stored, report, policy)
    return stored  # type: ignore[return-value]


def _download_all(store, repo, layers, todo, stored, report, policy: Optional[IdPolicy]) -> None:
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    failure: Optional[BaseException] = None

    def work(i: int) -> None:
        try:
            events.put((i, _layer(store, repo, layers[i], events.put, cancel, policy), None))
        except BaseException as err:  # handed to the calling thread
            events.put((i, None, err))

    with ThreadPoolExecutor(
        max_workers=min(DOWNLOADS_PER_REGISTRY, len(todo)), thread_name_prefix="sandboxlib-pull"
    ) as pool:
        for i in todo:
            pool.submit(work, i)
        remaining = len(todo)
        while remaining:  # every worker ends (cancelled if need be) before this returns
            event = events.get()
            if isinstance(event, Progress):
                failure = failure or _report(report, event, cancel)
                continue
            i, result, err = event
            remaining -= 1
            stored[i] = result
            if err is not None and (failure is None or isinstance(failure, Cancelled)):
                failure = err
                cancel.set()
    if failure is not None:
        raise failure


def _report(report, event: Progress, cancel: threading.Event) -> Optional[BaseException]:
    if cancel.is_set():
        return None
    try:
        report(event)
    except BaseException as err:  # the caller's callback: it stops the pull
        cancel.set()
        return err
    return None


def _layer(
    store: ImageStore, repo: Repository, layer, report, cancel: threading.Event, policy: Optional[IdPolicy]
) -> Tuple[str, int, str]:
    """One layer streamed into the store: the blob file, its digest, the layer
    check (diff_id, the unpacker's rules) and its unpacking for ``policy`` in
    one pass; (digest, size, media type)."""
    (digest, size, media_type), diff_id = layer
    with _blob_lock(store, digest, size, report, cancel):
        return _store_layer(store, repo, layer, report, cancel, policy)


@contextlib.contextmanager
def _blob_lock(store: ImageStore, digest: str, size: int, report, cancel: threading.Event) -> Iterator[None]:
    """One download of a blob at a time among the processes sharing the store:
    a flock on ``tmp/pull-HEX.lock`` (the kernel drops it when its holder dies;
    the file goes with tmp/ at the next collection).  Another's download is
    waited for (WAITING), then its blob is checked instead of fetched again."""
    fd = os.open(
        os.path.join(store.tmp, f"pull-{digest.split(':', 1)[1]}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    report(Progress(digest=digest, phase=Phase.WAITING, done=0, total=size))
                    waiting = True
                if cancel.wait(LOCK_POLL):
                    raise Cancelled(digest) from None
        yield
    finally:
        os.close(fd)


def _store_layer(
    store: ImageStore, repo: Repository, layer, report, cancel: threading.Event, policy: Optional[IdPolicy]
) -> Tuple[str, int, str]:
    (digest, size, media_type), diff_id = layer
    source = f"{repo.registry}/{repo.repository} layer {digest}"
    if store.blobs.has(digest):  # another process's download, or an interrupted pull's: checked before use
        report(Progress(digest=digest, phase=Phase.CHECKING, done=0, total=size))
        media_type, _ = importer.check_layer(
            store, digest, media_type=media_type, diff_id=diff_id, source=source, unpack_for=policy
        )
        report(Progress(digest=digest, phase=Phase.DONE, done=size, total=size))
        return digest, size, media_type
    report(Progress(digest=digest, phase=Phase.DOWNLOADING, done=0, total=size))

    def on_read(done: int) -> None:
        phase = Phase.DOWNLOADING if done < size else Phase.VERIFYING
        report(Progress(digest=digest, phase=phase, done=done, total=size))

    with contextlib.closing(repo.download(digest, size, cancel)) as stream:
        stream.on_read = on_read
        try:
            _, _, media_type, _ = importer.store_layer(
                store,
                stream,
                digest=digest,
                size=size,
                media_type=media_type,
                diff_id=diff_id,
                source=source,
                unpack_for=policy,
            )
        except DigestMismatch as err:
            if err.expected != digest:  # the config's diff_id
                raise
            raise repo.error(200, f"blob {digest} has digest {err.actual}", RegistryDataError) from None
        except ImageFormatError as err:
            if "descriptor says" not in err.detail:  # the size: the registry's; else the layer's content
                raise
            raise repo.error(200, f"blob {digest}: {err.detail}", RegistryDataError) from None
    report(Progress(digest=digest, phase=Phase.DONE, done=size, total=size))
    return digest, size, media_type
