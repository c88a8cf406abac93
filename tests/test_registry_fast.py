"""Fast pulls and pushes: layers downloaded in parallel (up to the
per-registry limit), each checked while it streams in (one pass), pushes
that mount blobs from another repository of the registry, and chunked
uploads of large blobs (through the fault proxy, which sees every request)."""

from __future__ import annotations

import gzip
import io
import os
import random

import pytest

import sandboxlib as sb
from sandboxlib.errors import ImageFormatError
from sandboxlib.images import importer
from sandboxlib.registry import client, pulling

from .imagekit import add_image, busybox_layers, layer_tar
from .registryd import FaultProxy
from .test_registry import CONFIG, EXPECTED, pushed, registry  # noqa: F401 (fixtures)
from .test_registry_transfer import layer_descriptors


@pytest.mark.parametrize("limit, expected", [(4, 3), (2, 2)])
def test_layers_download_in_parallel(registry, pushed, tmp_path, monkeypatch, limit, expected):
    """Three layers that each take half a second: all three at once, or the limit."""
    monkeypatch.setattr(pulling, "DOWNLOADS_PER_REGISTRY", limit)
    ref, digest = pushed
    layers = layer_descriptors(registry, ref)
    proxy = FaultProxy(registry.host, {layer: "slow" for layer, _ in layers})
    try:
        events = []
        image = sb.ImageStore(str(tmp_path / "store")).pull(
            ref.replace(registry.host, proxy.host), progress=events.append
        )
    finally:
        proxy.close()
    assert image.digest == digest and proxy.most_blob_gets == expected
    for layer, size in layers:  # each layer's reports in order, from the calling thread
        phases = [e.phase.value for e in events if e.digest == layer]
        assert phases[:2] == ["waiting", "downloading"] and phases[-2:] == ["verifying", "done"]
        done = [e.done for e in events if e.digest == layer]
        assert done == sorted(done) and done[-1] == size


class Counting(io.RawIOBase):
    """A stream that tells how much of it was read."""

    def __init__(self, data: bytes) -> None:
        self.data, self.done = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.data.read(size)
        self.done += len(chunk)
        return chunk


def _big_tar(files: int, size: int = 512 << 10) -> bytes:
    rng = random.Random(files)
    return layer_tar({f"f{i}": rng.randbytes(size) for i in range(files)})


def _big_layer(files: int = 8) -> bytes:
    return gzip.compress(_big_tar(files), compresslevel=1)


def test_layer_is_checked_as_it_streams(tmp_path, monkeypatch):
    """The layer check sees each tar header while the blob is still arriving,
    and the stored blob is never read back."""
    blob = _big_layer()
    stream = Counting(blob)
    seen = []
    real = importer.LayerCheck.entry
    monkeypatch.setattr(
        importer.LayerCheck, "entry", lambda check, member: (seen.append(stream.done), real(check, member))
    )
    monkeypatch.setattr(importer, "check_layer", None)  # the second pass of before: gone
    store = sb.ImageStore(str(tmp_path / "store"))
    with store.writing():
        digest, size, media_type, _ = importer.store_layer(
            store, stream, digest=None, size=None, media_type=None, diff_id=None, source="big"
        )
    assert size == os.path.getsize(store.blobs.path(digest)) == len(blob)
    assert len(seen) == 8 and seen[0] < len(blob) // 4 and seen[-1] < len(blob)
    assert media_type.endswith("+gzip")


def test_hostile_layer_with_a_wrong_digest_is_a_digest_mismatch(tmp_path):
    """A blob that is not what it claims is refused for that first, whatever its content."""
    from sandboxlib.errors import DigestMismatch

    store = sb.ImageStore(str(tmp_path / "store"))
    bad = b"not a tar at all" * 100
    with store.writing(), pytest.raises(DigestMismatch):
        importer.store_layer(
            store, io.BytesIO(bad), digest="sha256:" + "0" * 64, size=None, media_type=None, diff_id=None, source="lie"
        )
    with store.writing(), pytest.raises(ImageFormatError):
        importer.store_layer(
            store, io.BytesIO(bad), digest=None, size=None, media_type=None, diff_id=None, source="junk"
        )
    assert os.listdir(store.blobs.dir) == [] and os.listdir(store.tmp) == []


def test_push_mounts_blobs_from_another_repository(registry, pushed, tmp_path):
    ref, digest = pushed
    store = sb.ImageStore(str(tmp_path / "store"))
    store.pull(ref)
    proxy = FaultProxy(registry.host, {})
    try:
        dest = f"{proxy.host}/team/mounted:1"
        store.tag(ref, f"{proxy.host}/team/app:1")  # the image known in team/app of the proxy's address
        assert store.push(ref, dest) == digest
    finally:
        proxy.close()
    posts = [path for method, path in proxy.requests if method == "POST"]
    assert len(posts) == 4 and all("mount=sha256" in path and "from=team%2Fapp" in path for path in posts)
    assert not [m for m, path in proxy.requests if m in ("PUT", "PATCH") and "/blobs/" in path]
    fresh = sb.ImageStore(str(tmp_path / "fresh"))
    assert fresh.pull(f"{registry.host}/team/mounted:1").digest == digest


def test_large_blobs_are_uploaded_in_chunks(registry, busybox_root, tmp_path, monkeypatch):
    monkeypatch.setattr(client, "CHUNKED_UPLOAD_ABOVE", 64 << 10)
    monkeypatch.setattr(client, "UPLOAD_CHUNK", 256 << 10)
    src = sb.ImageStore(str(tmp_path / "src"))
    big = _big_tar(files=2)
    add_image(src, busybox_layers(busybox_root) + [big], ["big:1"], config=CONFIG)
    proxy = FaultProxy(registry.host, {})
    try:
        digest = src.push("big:1", f"{proxy.host}/team/big:1")
    finally:
        proxy.close()
    patches = [path for method, path in proxy.requests if method == "PATCH"]
    assert len(patches) >= len(big) // (256 << 10)  # the big layer in several, the others above 64 KiB too
    store = str(tmp_path / "store")
    image = sb.ImageStore(store).pull(f"{registry.host}/team/big:1")
    assert image.digest == digest
    assert sb.run(None, image=image.digest, image_store=store).stdout == EXPECTED


def test_second_push_uploads_only_the_new_layer(registry, pushed, busybox_root, tmp_path):
    """An image sharing all but its last layer with one the registry has: only that
    layer and the config go up (each blob HEADed first), blobs several at a time."""
    src = sb.ImageStore(str(tmp_path / "src"))
    layers = busybox_layers(busybox_root)
    image = add_image(src, layers[:-1] + [_big_tar(files=1, size=4096)], ["next:2"], config=CONFIG)
    proxy = FaultProxy(registry.host, {})
    try:
        assert src.push("next:2", f"{proxy.host}/team/app:2") == image.digest
    finally:
        proxy.close()
    uploaded = {path.split("digest=")[1] for method, path in proxy.requests if method == "PUT" and "digest=" in path}
    assert uploaded == {image.layers[-1].digest.replace(":", "%3A"), image.id.replace(":", "%3A")}
    assert len([1 for method, path in proxy.requests if method == "HEAD" and "/blobs/" in path]) == 4
