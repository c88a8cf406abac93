"""``COPY`` and ``ADD``: the sources (context files, another stage's or
image's files, heredocs, ``ADD``'s local tar archives) written as a layer
tar directly, no container.  Destinations follow Docker's rules (relative
to ``WORKDIR``; a directory when it ends with ``/``, exists as one, or
takes several sources; a directory source's contents go into it), through
the image's own symlinks; new parent directories are 0755 (owned by
``--chown``'s ids), existing ones keep their attributes."""

from __future__ import annotations

import copy
import hashlib
import io
import posixpath
import re
import stat
import tarfile
import tempfile
import time
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Tuple

import attrs

from ..errors import ImageFormatError
from ..images import ImageStore, Layer
from ..images.compression import decompressed, sniff
from ..images.importer import store_layer
from ..runtime.commit import PLAIN
from .cache import SourcesHash
from .context import Context, compile_pattern, has_wildcards
from .imageview import ImageView, Node
from .parser import Heredoc, Instruction

__all__ = [
    "Entry",
    "Group",
    "from_context",
    "from_image",
    "from_heredoc",
    "from_url",
    "content_hash",
    "write_layer",
    "owner_of",
]

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
URL_LIMIT = 1 << 30  # bytes of an ADD URL download
CHUNK = 1 << 20


@attrs.frozen(kw_only=True)
class Entry:
    """One entry below a source: ``rel`` ('' is the source itself), its
    st_mode (type and permissions), mtime, link target, reader, and its own
    owner when it keeps one (an ``ADD``ed archive's); ``open`` gives a
    regular file's bytes as a file (read in chunks: big files stay out of memory)."""

    rel: str
    mode: int
    mtime: float = 0.0
    link: str = ""
    open: Optional[Callable[[], BinaryIO]] = None
    owner: Optional[Tuple[int, int]] = None
    digest: Optional[Callable[[], str]] = None  # the contents' sha256 without reading them (a context file's)


@attrs.frozen(kw_only=True)
class Group:
    """What one source contributes: ``name`` (its base name) and entries; a
    directory (or an extracted archive) puts its entries into the destination."""

    name: str
    is_dir: bool
    entries: Tuple[Entry, ...]


# -- sources ----------------------------------------------------------------------
def from_context(context: Context, srcs: List[str], ins: Instruction, extract: bool) -> List[Group]:
    where = ins.error("")
    groups = []
    for src in srcs:
        for rel in context.matches(src, where):
            found = context.sources(rel, where)
            top = found[0]
            name = posixpath.basename(rel) or "."
            if stat.S_ISDIR(top.st.st_mode):
                entries = tuple(
                    Entry(rel=s.rel, mode=s.st.st_mode, mtime=s.st.st_mtime, link=s.link, open=s.open, digest=s.digest)
                    for s in found
                )
                groups.append(Group(name=name, is_dir=True, entries=entries))
                continue
            assert top.open is not None  # a regular file
            archive = _archive(top.open, ins) if extract else None
            if archive is not None:
                groups.append(Group(name=name, is_dir=True, entries=archive))
            else:
                entry = Entry(rel="", mode=top.st.st_mode, mtime=top.st.st_mtime, open=top.open, digest=top.digest)
                groups.append(Group(name=name, is_dir=False, entries=(entry,)))
    return groups


def _entry_of(view: ImageView, rel: str, node: Node) -> Entry:
    info = node.info
    kind = stat.S_IFDIR if info.isdir() else stat.S_IFLNK if info.issym() else stat.S_IFREG
    opener = (lambda: io.BytesIO(view.read(node))) if kind == stat.S_IFREG else None
    return Entry(
        rel=rel, mode=kind | info.mode, mtime=info.mtime, link=info.linkname if info.issym() else "", open=opener
    )


def from_image(view: ImageView, srcs: List[str], ins: Instruction) -> List[Group]:
    """Sources in another stage's (or image's) tree; the top symlink is followed inside it."""
    groups = []
    for src in srcs:
        if has_wildcards(src):
            regex = compile_pattern(posixpath.normpath("/" + src).lstrip("/"), double_star=False)
            names = [k for k in view.nodes if regex.fullmatch(k)]
        else:
            names = [view.resolve(src)]
        for name in sorted(names):
            node = view.nodes.get(name)
            if node is None and name != "":
                raise ins.error(f"{src!r}: not found in the source image")
            if node is None or node.is_dir:
                entries = [Entry(rel="", mode=stat.S_IFDIR | (node.info.mode if node else 0o755))]
                entries += [_entry_of(view, rel, n) for rel, n in view.below(name) if not n.info.ischr()]
                groups.append(Group(name=posixpath.basename(name), is_dir=True, entries=tuple(entries)))
            elif node.info.isreg() or node.info.islnk():
                groups.append(Group(name=posixpath.basename(name), is_dir=False, entries=(_entry_of(view, "", node),)))
            else:
                raise ins.error(f"{src!r}: not a regular file or directory in the source image")
    return groups


def from_heredoc(heredoc: Heredoc, env: Dict[str, str]) -> Group:
    text = heredoc.content
    if heredoc.expand:
        text = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)
    data = text.encode()
    entry = Entry(rel="", mode=stat.S_IFREG | 0o644, open=lambda: io.BytesIO(data))
    return Group(name=heredoc.name, is_dir=False, entries=(entry,))


def from_url(url: str, checksum: Optional[str], ins: Instruction) -> Group:
    """``ADD URL``: the file downloaded (httpx, redirects followed, at most
    ``URL_LIMIT`` bytes) and checked against ``--checksum=sha256:...``; mode
    0600, as Docker makes it."""
    import httpx  # (a registry's dependency: imported only here)

    if not checksum or not re.fullmatch(r"sha256:[0-9a-f]{64}", checksum):
        raise ins.error(f"ADD {url} needs --checksum=sha256:<64 hex digits> (a download is checked, or refused)")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > URL_LIMIT:
                    raise ins.error(f"{url}: larger than {URL_LIMIT} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as err:
        raise ins.error(f"{url}: download failed: {err}") from None
    data = b"".join(chunks)
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != checksum:
        raise ins.error(f"{url}: checksum mismatch: expected {checksum}, got {actual}")
    name = posixpath.basename(url.split("?", 1)[0].rstrip("/")) or "download"
    return Group(
        name=name, is_dir=False, entries=(Entry(rel="", mode=stat.S_IFREG | 0o600, open=lambda: io.BytesIO(data)),)
    )


def _archive(opener: Callable[[], BinaryIO], ins: Instruction) -> Optional[Tuple[Entry, ...]]:
    """An ``ADD``ed local file that is a tar (plain, gzip, bzip2, xz, zstd): its entries, else None."""
    with opener() as f:
        data = f.read()
    try:
        stream = decompressed(io.BytesIO(data), sniff(data[:6]), "ADD archives")
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            members = []
            contents: Dict[str, bytes] = {}
            for member in tar:
                rel = posixpath.normpath("/" + member.name).lstrip("/")
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise ins.error(f"the archive's entry {member.name!r} leads out of the destination")
                if member.isreg():
                    f = tar.extractfile(member)
                    contents[rel] = f.read() if f else b""
                members.append((rel, member))
    except (tarfile.TarError, EOFError, OSError, ImageFormatError):
        return None
    entries = []
    for rel, member in members:
        owner = (member.uid, member.gid)
        if member.isdir():
            entries.append(Entry(rel=rel, mode=stat.S_IFDIR | member.mode, mtime=member.mtime, owner=owner))
        elif member.issym():
            entries.append(
                Entry(rel=rel, mode=stat.S_IFLNK | 0o777, mtime=member.mtime, link=member.linkname, owner=owner)
            )
        elif member.isreg() or member.islnk():
            key = rel if member.isreg() else posixpath.normpath("/" + member.linkname).lstrip("/")
            body = contents.get(key, b"")
            entries.append(
                Entry(
                    rel=rel,
                    mode=stat.S_IFREG | member.mode,
                    mtime=member.mtime,
                    open=lambda b=body: io.BytesIO(b),
                    owner=owner,
                )
            )
    return (Entry(rel="", mode=stat.S_IFDIR | 0o755),) + tuple(e for e in entries if e.rel not in ("", "."))


# -- the cache's content hash --------------------------------------------------------
def _mode(entry: Entry, chmod: Optional[int]) -> int:
    if chmod is None or stat.S_ISLNK(entry.mode):
        return entry.mode
    return stat.S_IFMT(entry.mode) | chmod


def content_hash(groups: Iterable[Group], owner: Tuple[int, int], chmod: Optional[int]) -> str:
    digest = SourcesHash()
    for group in groups:
        digest.add(f"{group.name}\0{int(group.is_dir)}", 0, (0, 0))
        for entry in group.entries:
            mode, ids = _mode(entry, chmod), entry.owner or owner
            if entry.digest is not None:
                content = entry.digest()
            elif entry.open is not None:
                sha = hashlib.sha256()
                with entry.open() as f:
                    for chunk in iter(lambda f=f: f.read(CHUNK), b""):
                        sha.update(chunk)
                content = sha.hexdigest()
            else:
                content = ""
            digest.add(entry.rel, mode, ids, entry.link, content)
    return digest.hexdigest()


def owner_of(spec: Optional[str], view: Optional[ImageView], ins: Instruction) -> Tuple[int, int]:
    """``--chown=user[:group]`` as ids, names looked up in the image's /etc/passwd and /etc/group."""
    if not spec:
        return (0, 0)
    user, _, group = spec.partition(":")

    def lookup(name: str, table: str) -> int:
        if name.isdigit():
            return int(name)
        data = view.read_path(table) if view is not None else None
        for line in (data or b"").decode(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        raise ins.error(f"--chown: no {'user' if table == '/etc/passwd' else 'group'} {name!r} in the image's {table}")

    uid = lookup(user, "/etc/passwd")
    if group:
        return uid, lookup(group, "/etc/group")
    if user.isdigit():
        return uid, uid
    data = view.read_path("/etc/passwd") if view is not None else None
    for line in (data or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == user and fields[3].isdigit():
            return uid, int(fields[3])
    return uid, uid


# -- the layer ------------------------------------------------------------------------
def _dir_info(path: str, owner: Tuple[int, int], node: Optional[Node]) -> tarfile.TarInfo:
    if node is not None and node.is_dir:
        info = copy.copy(node.info)  # (TarInfo.replace: Python 3.11.4 and later)
        info.name = path
        return info
    info = tarfile.TarInfo(path)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    info.uid, info.gid = owner
    return info


def write_layer(
    store: ImageStore,
    view: ImageView,
    groups: List[Group],
    dest: str,
    dest_is_dir: bool,
    owner: Tuple[int, int],
    chmod: Optional[int],
    label: str,
) -> Layer:
    """The layer of a copy (inside ``store.writing()``)."""
    into_dir = dest_is_dir or view.is_dir(dest)
    base = view.resolve(dest)
    planned: Dict[str, Tuple[Entry, Optional[Tuple[int, int]]]] = {}
    for group in groups:
        # as Docker: a symlink at the destination is followed (inside the image's root)
        top = base if (group.is_dir or not into_dir) else view.resolve(posixpath.join(dest, group.name))
        for entry in group.entries:
            if entry.rel == "":
                path = top
                if group.is_dir:
                    if view.get(path) is not None and view.nodes[path].is_dir:
                        continue  # an existing directory keeps its attributes
                    entry = Entry(rel="", mode=stat.S_IFDIR | 0o755, mtime=time.time())  # as Docker makes it
            else:
                parent = view.resolve(posixpath.join("/" + top, posixpath.dirname(entry.rel)))
                path = posixpath.join(parent, posixpath.basename(entry.rel)).lstrip("/")
            if path:
                planned[path] = (entry, entry.owner or owner)
    with tempfile.TemporaryFile(dir=store.tmp) as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            written = set()
            for path in sorted(planned, key=lambda p: p.split("/")):
                parts = path.split("/")
                for i in range(1, len(parts)):
                    parent = "/".join(parts[:i])
                    if parent not in written and parent not in planned:
                        tar.addfile(_dir_info(parent, owner, view.get(parent)))
                        written.add(parent)
                entry, ids = planned[path]
                _add(tar, path, entry, ids, chmod)
                written.add(path)
        f.seek(0)
        digest, size, _, diff_id = store_layer(
            store, f, digest=None, size=None, media_type=PLAIN, diff_id=None, source=label
        )
    return Layer(digest=digest, diff_id=diff_id, size=size, media_type=PLAIN)


def _add(tar: tarfile.TarFile, path: str, entry: Entry, owner: Tuple[int, int], chmod: Optional[int]) -> None:
    info = tarfile.TarInfo(path)
    mode = _mode(entry, chmod)
    info.mode = stat.S_IMODE(mode)
    info.mtime = int(entry.mtime)
    info.uid, info.gid = owner
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, entry.link
        tar.addfile(info)
    else:
        assert entry.open is not None
        with entry.open() as f:
            info.size = f.seek(0, io.SEEK_END)
            f.seek(0)
            tar.addfile(info, f)
