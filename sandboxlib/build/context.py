"""The build context: ``.dockerignore`` with BuildKit's rules, and the
files a ``COPY``/``ADD`` names, read in place (the context is never copied)
and never through a symlink that leads out of it.

BuildKit's rules (moby/patternmatcher), not gitignore's: a pattern is
cleaned and anchored at the context's root (``foo`` is only ``./foo``, not
``a/foo``, where gitignore would match at any depth: so pathspec's
gitwildmatch does not fit); ``*`` and ``?`` stay within one path component,
``**`` spans any number; a pattern that matches a directory excludes what is
below it; ``!`` re-includes; the last matching pattern decides."""

from __future__ import annotations

import os
import posixpath
import re
import stat
from typing import BinaryIO, Callable, Iterator, List, Optional, Tuple

import attrs

from ..errors import BuildError
from ..native.binding import open_in_root
from .filehashes import FileHashes

__all__ = ["Ignore", "load_ignore", "Source", "Context", "compile_pattern", "has_wildcards"]

_WILD = re.compile(r"[*?\[]")


def has_wildcards(path: str) -> bool:
    return bool(_WILD.search(path))


def compile_pattern(pattern: str, double_star: bool = True) -> re.Pattern:
    """A path pattern (Go's filepath.Match, plus ``**`` for .dockerignore) as an anchored regex."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if double_star and pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    i += 1
                out.append(".*" if i >= len(pattern) else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unterminated [ in {pattern!r}")
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]")
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


@attrs.frozen
class Ignore:
    """The rules of a .dockerignore file: (regex, exclusion) in order."""

    rules: Tuple[Tuple[re.Pattern, bool], ...] = ()

    def ignored(self, rel: str) -> bool:
        """Whether the context path ``rel`` (no leading ``/``) is excluded."""
        parents = []
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parents.append("/".join(parts[:i]))
        matched = False
        for regex, exclusion in self.rules:
            if regex.fullmatch(rel) or any(regex.fullmatch(p) for p in parents):
                matched = not exclusion
        return matched

    @property
    def has_exceptions(self) -> bool:
        return any(exclusion for _, exclusion in self.rules)


def load_ignore(context: str, dockerfile: str) -> Ignore:
    """``<Dockerfile>.dockerignore`` beside the Dockerfile, else the context's ``.dockerignore``."""
    for path in (dockerfile + ".dockerignore", os.path.join(context, ".dockerignore")):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        rules = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if exclusion else line).lstrip("/")
            if pattern in ("", "."):
                continue
            try:
                rules.append((compile_pattern(pattern), exclusion))
            except ValueError as err:
                raise BuildError(path, number, str(err)) from None
        return Ignore(tuple(rules))
    return Ignore()


@attrs.frozen(kw_only=True)
class Source:
    """One entry to copy: ``rel`` (its path below the copy's destination,
    '' for the destination itself), its lstat, link target, and how to open it."""

    rel: str
    st: os.stat_result
    link: str = ""
    open: Optional[Callable[[], BinaryIO]] = None
    digest: Optional[Callable[[], str]] = None  # the contents' sha256, remembered by stat


class Context:
    """A build context directory, opened once; every path is resolved inside it."""

    def __init__(self, path: str, ignore: Ignore, hashes: FileHashes) -> None:
        self.path = path
        self.ignore = ignore
        self.hashes = hashes
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def _checked(self, src: str, where: BuildError) -> str:
        """A source path made relative to the context; ``..`` out of it is refused."""
        rel = posixpath.normpath("/" + src).lstrip("/") if src.startswith("/") else posixpath.normpath(src)
        if rel == ".." or rel.startswith("../"):
            raise BuildError(where.file, where.line, f"{src!r} is outside the build context")
        return "" if rel == "." else rel

    def matches(self, src: str, where: BuildError) -> List[str]:
        """The context paths a source names (a glob: each match; none is an error)."""
        rel = self._checked(src, where)
        if not has_wildcards(rel):
            if rel and self.ignore.ignored(rel):
                raise BuildError(where.file, where.line, f"{src!r}: excluded by .dockerignore")
            return [rel]
        regex = compile_pattern(rel, double_star=False)
        depth = rel.count("/")
        found = [p for p, _ in self._walk("", self.fd, depth) if p.count("/") == depth and regex.fullmatch(p)]
        found = [p for p in found if not self.ignore.ignored(p)]
        if not found:
            raise BuildError(where.file, where.line, f"no source files were specified: {src!r} matches nothing")
        return sorted(found)

    def _walk(
        self, prefix: str, dir_fd: int, depth: int = 1 << 30, base: str = ""
    ) -> Iterator[Tuple[str, os.stat_result]]:
        """(path below ``dir_fd``, lstat), parents first, never following a symlink; an ignored
        directory is not entered unless a ``!`` rule could bring something below it back
        (``base``: the context path of ``dir_fd``)."""
        for name in sorted(os.listdir(dir_fd)):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            path = f"{prefix}{name}"
            yield path, st
            if stat.S_ISDIR(st.st_mode) and not self.ignore.has_exceptions and self.ignore.ignored(base + path):
                continue
            if stat.S_ISDIR(st.st_mode) and depth > 0:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                try:
                    yield from self._walk(path + "/", fd, depth - 1, base)
                finally:
                    os.close(fd)

    def _opener(self, rel: str) -> Callable[[], BinaryIO]:
        return lambda: os.fdopen(open_in_root(self.fd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")

    def _digest(self, st: os.stat_result, opener: Callable[[], BinaryIO]) -> Callable[[], str]:
        return lambda: self.hashes.digest(st, opener)

    def sources(self, rel: str, where: BuildError) -> List[Source]:
        """What copying the context path ``rel`` copies: a file (the top
        symlink followed inside the context), or a directory's contents
        (symlinks below kept as symlinks), .dockerignore applied."""
        try:
            fd = open_in_root(self.fd, rel or ".", os.O_PATH | os.O_CLOEXEC)
        except OSError as err:
            raise BuildError(
                where.file, where.line, f"{rel!r}: not found in the build context ({err.strerror})"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):
                real = os.readlink(f"/proc/self/fd/{fd}")
                inside = os.path.relpath(real, os.path.realpath(self.path))
                if not stat.S_ISREG(st.st_mode):
                    raise BuildError(where.file, where.line, f"{rel!r}: not a regular file or directory")
                opener = self._opener(inside)
                return [Source(rel="", st=st, open=opener, digest=self._digest(st, opener))]
            dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            base = rel + "/" if rel else ""
            found = [Source(rel="", st=st)]
            for path, entry in self._walk("", dir_fd, base=base):
                full = base + path
                if self.ignore.ignored(full):
                    continue
                if stat.S_ISLNK(entry.st_mode):
                    found.append(Source(rel=path, st=entry, link=os.readlink(path, dir_fd=dir_fd)))
                elif stat.S_ISREG(entry.st_mode):
                    opener = self._opener(full)
                    found.append(Source(rel=path, st=entry, open=opener, digest=self._digest(entry, opener)))
                elif stat.S_ISDIR(entry.st_mode):
                    found.append(Source(rel=path, st=entry))
            return found
        finally:
            os.close(dir_fd)
