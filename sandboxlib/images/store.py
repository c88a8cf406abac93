"""The image store: an OCI image layout on disk plus what running images needs.

    HOME/images/{oci-layout,index.json,blobs/sha256/HEX}   the OCI layout
    HOME/layers/KEY/HEX          unpacked layers, once per diff_id (KEY: the id policy)
    HOME/tmp/                    partial writes, renamed into place when complete
    HOME/locks/{gc,index,containers}.lock   flock(2) locks
    HOME/leases/ID               the layers a running container uses (held by a flock)
    HOME/containers/ID/{upper,work}   a container's writable layer on disk

Consistency: a blob or an unpacked layer is renamed into place only when
complete; ``index.json`` is replaced atomically, and only after every blob it
names is in place.  A crash therefore leaves at worst unreferenced blobs and
temporary files, which ``prune()`` removes.  Writers (imports) hold ``gc.lock``
shared for their whole run, so a collection (exclusive) never removes blobs an
import has written but not yet referenced; ``index.lock`` serialises the
read-modify-write of ``index.json``."""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import stat
import tempfile
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import attrs

from ..errors import ConfigError, ImageFormatError, ImageNotFound, SandboxError
from . import reference
from .blobs import Blobs, fsync_dir
from .buildcache import BuildCache, is_cache_entry
from .layercheck import LayerLimits
from .leases import ContainerLeases
from .locks import locked
from .model import OCI_INDEX, OCI_MANIFEST, Image, Layer, parse_config, parse_manifest
from .modes import PRIVATE
from .volumes import Volumes

if TYPE_CHECKING:
    from .unpack import IdPolicy, Owners

__all__ = ["Store", "SubIdFiles", "default_home", "PruneReport"]

DEFAULT_LAYER_LIMITS = LayerLimits()  # frozen: one instance serves as every default

REF_ANNOTATION = "org.opencontainers.image.ref.name"
REPO_DIGEST_ANNOTATION = "io.sandboxlib.image.repo-digest"  # an entry per RepoDigest (name@sha256:...)
log = logging.getLogger("sandboxlib")
ROOT_SHIFT = 1_000_000_000  # idmap.ROOT_DEFAULT_HOST_ID: as root, container ids map to host ids from here


def default_home() -> str:
    """$SANDBOXLIB_HOME, else /var/lib/sandboxlib as root, else
    $XDG_DATA_HOME/sandboxlib or ~/.local/share/sandboxlib."""
    explicit = os.environ.get("SANDBOXLIB_HOME")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/var/lib/sandboxlib"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "sandboxlib")


@attrs.frozen(kw_only=True)
class PruneReport:
    """What ``prune()`` removed."""

    images: Tuple[str, ...]
    blobs: int
    layers: int
    bytes_freed: int


class SubIdFiles(abc.ABC):
    """Work on files owned by a rootless caller's subordinate ids, which
    needs a user namespace that maps them (``sandboxlib.runtime.subids``)."""

    @abc.abstractmethod
    def chown(self, root: str, owners: Owners, policy: IdPolicy) -> None:
        """Give the files below ``root`` the container ``owners`` (by inode) of ``policy``."""

    @abc.abstractmethod
    def empty(self, paths: Sequence[str]) -> None:
        """Remove everything below each directory of ``paths`` (not the directories)."""


class Store(ContainerLeases, Volumes, BuildCache):
    """The content-addressed core of the image store: blobs, manifests, names, leases, volumes and
    writable layers; :class:`~sandboxlib.images.ImageStore` adds import, export and unpacking.

    Args:
        path: the store's home directory (see :func:`default_home`).
        layer_limits: what one layer may unpack to, checked when it enters
            this store (:class:`~sandboxlib.images.LayerLimits`).
    """

    def __init__(self, path: Optional[str] = None, *, layer_limits: LayerLimits = DEFAULT_LAYER_LIMITS) -> None:
        if not isinstance(layer_limits, LayerLimits):
            raise ConfigError("layer_limits", f"expected a LayerLimits, got {type(layer_limits).__name__}")
        self.layer_limits = layer_limits
        self.path = os.path.abspath(path or default_home())
        self.layout = os.path.join(self.path, "images")
        self.tmp = os.path.join(self.path, "tmp")
        self.blobs = Blobs(self.layout, self.tmp)
        self._locks = os.path.join(self.path, "locks")
        self._ensure()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def _ensure(self) -> None:
        os.makedirs(self.path, mode=PRIVATE, exist_ok=True)
        self._check_private()
        for d in (self.layout, self.blobs.dir, self._locks, os.path.join(self.path, "layers"), self.tmp):
            os.makedirs(d, mode=PRIVATE, exist_ok=True)
        marker = os.path.join(self.layout, "oci-layout")
        if not os.path.exists(marker):
            self._write_atomic(marker, b'{"imageLayoutVersion": "1.0.0"}')

    def _check_private(self) -> None:
        """The store is the caller's alone: as root its layers hold setuid
        files of the containers' root's host id and device nodes, and every
        container's files are in it.  Refuses a store of another user; one
        that others may enter (a store made before this check, or by hand)
        is made private, its own directories too, and logged."""
        st = os.stat(self.path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise ConfigError(
                "path",
                f"the image store {self.path} must be a directory owned by uid "
                f"{os.geteuid()} (it is owned by uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}): another user could reach its files",
            )
        for path in [self.path, *self._own_dirs()]:
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(os.lstat(path).st_mode)
                if mode & 0o077 and not os.path.islink(path):
                    os.chmod(path, mode & 0o7700)
                    log.warning(
                        "image store: %s had mode %04o (others could enter it); made it %04o", path, mode, mode & 0o7700
                    )

    def _own_dirs(self) -> List[str]:
        """The store's directories above anything a container or an image controls."""
        found = [
            os.path.join(self.path, name)
            for name in ("images", "layers", "locks", "leases", "tmp", "containers", "volumes", "volume-labels")
        ]
        layers = os.path.join(self.path, "layers")
        with contextlib.suppress(FileNotFoundError):
            found += [os.path.join(layers, key) for key in os.listdir(layers)]
        return found

    # -- index.json ------------------------------------------------------------
    def _write_atomic(self, path: str, data: bytes) -> None:
        with self.writing():  # its temporary file must outlive any collection
            self._write_atomic_unlocked(path, data)

    def _write_atomic_unlocked(self, path: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix="meta-", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(os.path.dirname(path))

    def _read_index(self) -> List[dict]:
        path = os.path.join(self.layout, "index.json")
        try:
            with open(path, "rb") as f:
                index = json.load(f)
        except FileNotFoundError:
            return []
        except ValueError as err:
            raise ImageFormatError(path, f"corrupt index: {err}") from None
        return list(index.get("manifests") or [])

    def _write_index(self, entries: List[dict]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        self._write_atomic(
            os.path.join(self.layout, "index.json"), json.dumps(index, indent=1, sort_keys=True).encode()
        )

    @contextlib.contextmanager
    def _index(self) -> Iterator[List[dict]]:
        """The index entries, locked; written back when the block ends without error."""
        with locked(os.path.join(self._locks, "index.lock"), exclusive=True):
            entries = self._read_index()
            yield entries
            self._write_index(entries)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Blobs]:
        """Hold off collection while blobs are added that nothing references yet."""
        with locked(os.path.join(self._locks, "gc.lock"), exclusive=False):
            yield self.blobs

    # -- reading -----------------------------------------------------------------
    def _image(self, manifest_digest: str, names: Tuple[str, ...], repo_digests: Tuple[str, ...] = ()) -> Image:
        source = f"manifest {manifest_digest}"
        (config_digest, _), layers = parse_manifest(self.blobs.read(manifest_digest), source)
        config = parse_config(self.blobs.read(config_digest), f"config {config_digest}")
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layers):
            raise ImageFormatError(source, f"{len(layers)} layers but {len(diff_ids)} diff_ids in the config")
        size = sum(self.blobs.size(d) for d in (manifest_digest, config_digest)) + sum(s for _, s, _ in layers)
        return Image(
            digest=manifest_digest,
            id=config_digest,
            references=names,
            layers=tuple(Layer(digest=d, diff_id=i, size=s, media_type=t) for (d, s, t), i in zip(layers, diff_ids)),
            config=dict(config.get("config") or {}),
            architecture=config.get("architecture", ""),
            os=config.get("os", ""),
            created=config.get("created"),
            size=size,
            repo_digests=repo_digests,
        )

    def _names_by_digest(self, entries: List[dict]) -> Dict[str, List[str]]:
        found: Dict[str, List[str]] = {}
        for entry in entries:
            name = (entry.get("annotations") or {}).get(REF_ANNOTATION)
            found.setdefault(entry["digest"], [])
            if name:
                found[entry["digest"]].append(name)
        return found

    @staticmethod
    def _repo_digests(entries: List[dict], digest: str) -> Tuple[str, ...]:
        found = ((e.get("annotations") or {}).get(REPO_DIGEST_ANNOTATION) for e in entries if e["digest"] == digest)
        return tuple(r for r in found if r)

    def list(self) -> List[Image]:
        """Every image in the store (tagged or not), in index order; not the
        build cache's intermediate images (``buildcache.py``)."""
        entries = self._read_index()
        shown = {e["digest"] for e in entries if not is_cache_entry(e)}
        return [
            self._image(d, tuple(names), self._repo_digests(entries, d))
            for d, names in self._names_by_digest(entries).items()
            if d in shown
        ]

    def get(self, ref: str) -> Image:
        """The image a reference names: ``name:tag``, ``name@sha256:...``, a
        manifest digest or an image id (config digest).  Raises ImageNotFound."""
        entries = self._read_index()
        digest = self._resolve(ref, entries)
        names = self._names_by_digest(entries).get(digest, [])
        return self._image(digest, tuple(names), self._repo_digests(entries, digest))

    def _resolve(self, ref: str, entries: List[dict]) -> str:
        parsed = reference.parse(ref)
        by_digest = self._names_by_digest(entries)
        if parsed.name is None:
            if parsed.digest in by_digest:
                return parsed.digest
            for digest in by_digest:  # an image id
                with contextlib.suppress(ImageFormatError):
                    if parse_manifest(self.blobs.read(digest), digest)[0][0] == parsed.digest:
                        return digest
        elif parsed.digest:
            for entry in entries:  # a RepoDigest (the digest may be a registry's index)
                if (entry.get("annotations") or {}).get(REPO_DIGEST_ANNOTATION) == str(parsed):
                    return entry["digest"]
            if any(n.rpartition(":")[0] == parsed.name for n in by_digest.get(parsed.digest, [])):
                return parsed.digest
        else:
            for digest, names in by_digest.items():
                if str(parsed) in names:
                    return digest
        raise ImageNotFound(ref)

    # -- writing -----------------------------------------------------------------
    def add(self, manifest_digest: str, names: Tuple[str, ...] = (), repo_digests: Tuple[str, ...] = ()) -> Image:
        """Reference a manifest already in the blobs (inside ``writing()``):
        checks that everything it names is present, then points ``names`` at
        it and records ``repo_digests`` (``name@sha256:...``) for it."""
        image = self._image(manifest_digest, ())
        for layer in image.layers:
            if not self.blobs.has(layer.digest):
                raise ImageFormatError(f"manifest {manifest_digest}", f"layer {layer.digest} is missing")
        tags = list(dict.fromkeys(str(reference.parse(n, "names")) for n in names))
        if any(reference.parse(t).digest for t in tags):
            raise ConfigError("names", "an image is named by name:tag, not by a digest")
        repos = [str(reference.parse(r, "repo_digests")) for r in repo_digests]
        with self._index() as entries:
            entries[:] = [e for e in entries if (e.get("annotations") or {}).get(REPO_DIGEST_ANNOTATION) not in repos]
            entries.extend(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": self.blobs.size(manifest_digest),
                    "annotations": {REPO_DIGEST_ANNOTATION: r},
                }
                for r in repos
            )
            self._set_names(entries, manifest_digest, tags)
        return self.get(manifest_digest)

    def _set_names(self, entries: List[dict], digest: str, tags: List[str]) -> None:
        """Move each tag to ``digest``; keep an untagged entry only when it has no tag.
        A tag the image has already is kept once (tagging is idempotent)."""
        tags = list(dict.fromkeys(tags))
        entries[:] = [
            e
            for e in entries
            if (e.get("annotations") or {}).get(REF_ANNOTATION) not in tags
            and not (e["digest"] == digest and not e.get("annotations"))
        ]
        size = self.blobs.size(digest)
        for tag in tags or [None]:
            entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}
            if tag:
                entry["annotations"] = {REF_ANNOTATION: tag}
            entries.append(entry)
        if not tags and any(e["digest"] == digest and e.get("annotations") and not is_cache_entry(e) for e in entries):
            entries.pop()  # already named: no untagged entry needed (a build cache's entry is no name)

    @staticmethod
    def _tag_of(entry: dict) -> Optional[str]:
        return (entry.get("annotations") or {}).get(REF_ANNOTATION)

    def tag(self, source: str, target: str) -> Image:
        """Point the ``name:tag`` ``target`` at the image ``source`` names
        (again: nothing changes)."""
        new = reference.parse(target, "target")
        if new.digest:
            raise ConfigError("target", f"{target!r}: a tag is name:tag, not a digest")
        with self._index() as entries:
            digest = self._resolve(source, entries)
            self._set_names(entries, digest, [str(new), *self._names_by_digest(entries)[digest]])
        return self.get(str(new))

    def remove(self, ref: str) -> List[str]:
        """Remove a reference (by ``name:tag``), or an image with all its names
        (by digest or id), then collect what nothing references any more.
        Returns the references removed."""
        with self._index() as entries:
            digest = self._resolve(ref, entries)
            parsed = reference.parse(ref)
            if parsed.name is not None and parsed.tag:
                gone = [e for e in entries if (e.get("annotations") or {}).get(REF_ANNOTATION) == str(parsed)]
            else:
                gone = [e for e in entries if e["digest"] == digest]
            entries[:] = [e for e in entries if e not in gone]
            if not any(self._tag_of(e) for e in entries if e["digest"] == digest):  # its RepoDigests go too
                entries[:] = [e for e in entries if e["digest"] != digest]
        self.collect()
        return [(e.get("annotations") or {}).get(REF_ANNOTATION) or e["digest"] for e in gone]

    def prune(self) -> PruneReport:
        """Remove untagged images, then every blob, unpacked layer and
        temporary file nothing references, and the writable layers of dead
        containers (see :meth:`collect`)."""
        with self._index() as entries:
            untagged = list(dict.fromkeys(e["digest"] for e in entries if not self._tag_of(e)))
            entries[:] = [e for e in entries if self._tag_of(e)]
        blobs, layers, freed = self.collect()
        return PruneReport(images=tuple(untagged), blobs=blobs, layers=layers, bytes_freed=freed)

    def caller_policy(self) -> IdPolicy:
        """The id policy of the caller's default containers, which a pull
        unpacks for (this base store: rootless, files owned by the caller;
        see ``sandboxlib.ImageStore``)."""
        from .unpack import IdPolicy

        return IdPolicy.for_caller(ROOT_SHIFT)

    def sub_id_files(self) -> Optional[SubIdFiles]:
        """What works on files of the caller's subordinate ids, or None (this
        base store knows nothing of user namespaces: ``sandboxlib.ImageStore``
        runs a short sandbox)."""
        return None

    # -- collection ------------------------------------------------------------
    def _live(self) -> Tuple[Set[str], Set[str]]:
        """(blob digests, diff_ids) reachable from the index."""
        blobs: Set[str] = set()
        diff_ids: Set[str] = set()
        for digest in {e["digest"] for e in self._read_index()}:
            blobs.add(digest)
            with contextlib.suppress(ImageFormatError, OSError):
                image = self._image(digest, ())
                blobs.add(image.id)
                blobs.update(layer.digest for layer in image.layers)
                diff_ids.update(layer.diff_id for layer in image.layers)
        return blobs, diff_ids | self._leased_diff_ids()

    def collect(self) -> Tuple[int, int, int]:
        """Garbage-collect: (blobs removed, layers removed, bytes freed).
        Waits until no import is running (they hold gc.lock shared).  Also
        removes the writable dirs of containers whose owner is gone (rootless,
        not what your sub-ids own there: the next image container's start does)."""
        self.sweep_writable()
        with locked(os.path.join(self._locks, "gc.lock"), exclusive=True):
            live_blobs, live_layers = self._live()
            dead = [d for d in self.blobs.digests() if d not in live_blobs]
            freed = sum(self.blobs.delete(d) for d in dead)
            top = os.path.join(self.path, "layers")
            dead_layers = [
                os.path.join(top, key, name)
                for key in os.listdir(top)
                for name in os.listdir(os.path.join(top, key))
                if "sha256:" + name not in live_layers
            ]
            gone = sum(self._discard(path) for path in dead_layers)
            # No writer is running: all of tmp/ is debris.
            self.remove_trees([os.path.join(self.tmp, name) for name in os.listdir(self.tmp)])
        return len(dead), gone, freed

    def _discard(self, layer: str) -> bool:
        """Move a layer into tmp/ (removed with it): it is never seen half-removed under its name."""
        trash = tempfile.mkdtemp(prefix="gone-", dir=self.tmp)
        try:
            os.rename(layer, os.path.join(trash, "layer"))
        except OSError:
            return False
        return True

    def remove_trees(self, paths: Sequence[str]) -> List[str]:
        """Remove files and trees; returns those left.  Rootless, trees with
        files of the caller's subordinate ids are emptied by ``sub_id_files``
        (one short sandbox for all of them), then removed."""
        from .trees import remove_tree

        left = []
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                try:
                    remove_tree(path)
                except OSError:
                    left.append(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        helper = self.sub_id_files() if left and os.geteuid() != 0 else None
        if helper is None:
            return left
        try:
            helper.empty(left)
        except (OSError, SandboxError) as err:  # left for a later collection
            log.warning("could not empty %s with the sub-id sandbox: %r", left, err)
        for path in left:
            with contextlib.suppress(OSError):
                remove_tree(path)
        return [path for path in left if os.path.lexists(path)]
