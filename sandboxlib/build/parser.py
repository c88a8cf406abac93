"""Dockerfile text -> instructions: parser directives (``# syntax``,
``# escape``), comments, line continuations, flags, the exec (JSON) and
shell forms and heredocs (``<<EOF``, ``<<-EOF``, ``<<"EOF"``), each
instruction with its file and line for errors.  Substitution of variables is
not done here (``substitution.py``): it depends on the build's state."""

from __future__ import annotations

import json
import re
from typing import Dict, List, Optional, Tuple

import attrs

from ..errors import BuildError

__all__ = ["Heredoc", "Instruction", "Dockerfile", "parse", "parse_line", "KEYWORDS"]

KEYWORDS = frozenset(
    "FROM RUN CMD LABEL MAINTAINER EXPOSE ENV ADD COPY ENTRYPOINT VOLUME USER WORKDIR ARG ONBUILD "
    "STOPSIGNAL HEALTHCHECK SHELL".split()
)
HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?:=(\S*))?$")


@attrs.frozen(kw_only=True)
class Heredoc:
    """A here-document: ``name`` (its terminator), its text, and whether
    variables in it are expanded (an unquoted terminator)."""

    name: str
    content: str
    expand: bool
    strip_tabs: bool


@attrs.frozen(kw_only=True)
class Instruction:
    """One instruction as written: ``keyword`` (upper case), ``flags``
    (``--name=value``, in order), ``args`` (the rest, continuations
    joined), ``exec_form`` (the JSON array, if the rest is one), its
    heredocs, and where it is (``file``, ``line``)."""

    keyword: str
    flags: Tuple[Tuple[str, Optional[str]], ...]
    args: str
    exec_form: Optional[Tuple[str, ...]]
    heredocs: Tuple[Heredoc, ...]
    file: str
    line: int
    original: str

    def flag(self, name: str) -> Optional[str]:
        for key, value in self.flags:
            if key == name:
                return value if value is not None else "true"
        return None

    def error(self, message: str) -> BuildError:
        return BuildError(self.file, self.line, f"{self.keyword}: {message}")


@attrs.frozen(kw_only=True)
class Dockerfile:
    directives: Dict[str, str]
    escape: str
    instructions: Tuple[Instruction, ...]


def _directives(lines: List[str], file: str) -> Tuple[Dict[str, str], int]:
    """The parser directives at the top, and the index of the first line after them.
    They end at the first line that is not one (a comment, a blank line, an instruction)."""
    found: Dict[str, str] = {}
    for i, line in enumerate(lines):
        match = _DIRECTIVE.fullmatch(line.strip())
        if not match:
            return found, i
        name = match.group(1).lower()
        if name in found:
            raise BuildError(file, i + 1, f"the parser directive {name!r} is given twice")
        found[name] = match.group(2)
    return found, len(lines)


def parse(text: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile; raises BuildError naming file and line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    directives, start = _directives(lines, file)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise BuildError(file, 1, f"invalid escape token {escape!r}: it must be \\ or `")
    continuation = re.compile(re.escape(escape) + r"[ \t\r]*$")
    instructions: List[Instruction] = []
    i = start
    while i < len(lines):
        first = i
        line = lines[i].rstrip("\r")
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = []
        while continuation.search(line):
            parts.append(continuation.sub("", line))
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1  # comments and empty lines inside a continuation are dropped
            if i >= len(lines):
                line = ""
                break
            line = lines[i].rstrip("\r")
            i += 1
        parts.append(line)
        joined = "".join(parts).strip()
        keyword = joined.split(None, 1)[0].upper()
        heredocs: List[Heredoc] = []
        if keyword in HEREDOC_KEYWORDS:
            for strip, quote, name in _HEREDOC.findall(joined):
                body = []
                while True:
                    if i >= len(lines):
                        raise BuildError(file, first + 1, f"{keyword}: here-document {name!r} is not terminated")
                    raw = lines[i].rstrip("\r")
                    i += 1
                    if (raw.lstrip("\t") if strip else raw) == name:
                        break
                    body.append(raw.lstrip("\t") if strip else raw)
                content = "".join(b + "\n" for b in body)
                heredocs.append(Heredoc(name=name, content=content, expand=not quote, strip_tabs=bool(strip)))
        instructions.append(parse_line(joined, file, first + 1, tuple(heredocs)))
    return Dockerfile(directives=directives, escape=escape, instructions=tuple(instructions))


def parse_line(text: str, file: str, line: int, heredocs: Tuple[Heredoc, ...] = ()) -> Instruction:
    """One instruction's text (continuations joined): keyword, flags, form."""
    word, _, rest = text.strip().partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    keyword = word.upper()
    if keyword not in KEYWORDS:
        raise BuildError(file, line, f"unknown instruction {word!r}")
    rest = rest.strip()
    flags: List[Tuple[str, Optional[str]]] = []
    if keyword != "ONBUILD":
        while rest.startswith("--"):
            token, _, after = rest.partition(" ")
            match = _FLAG.fullmatch(token)
            if not match:
                raise BuildError(file, line, f"{keyword}: malformed flag {token!r}")
            flags.append((match.group(1), match.group(2)))
            rest = after.strip()
    exec_form = None
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            exec_form = tuple(value)
    return Instruction(
        keyword=keyword,
        flags=tuple(flags),
        args=rest,
        exec_form=exec_form,
        heredocs=heredocs,
        file=file,
        line=line,
        original=text.strip(),
    )
