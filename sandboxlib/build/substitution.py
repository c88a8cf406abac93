"""Docker's variable substitution and quote removal in instruction words:
``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}``
(unset), ``${VAR:+alt}`` (set and not empty), ``${VAR+alt}`` (set),
``${VAR:?message}`` and ``${VAR?message}`` (an error); single quotes keep
everything, double quotes expand variables; the escape character (``\\`` or
the ``# escape`` directive's) makes the next character literal."""

from __future__ import annotations

from typing import List, Mapping, Optional

__all__ = ["SubstitutionError", "expand", "split_words", "expand_words"]

_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME = _NAME_START | set("0123456789")


class SubstitutionError(ValueError):
    """A malformed word or a ``${VAR?message}`` of an unset variable."""


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text, self.env, self.escape, self.pos = text, env, escape, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def word(self, stop: str = "") -> str:
        out: List[str] = []
        while self.pos < len(self.text) and self.peek() not in stop:
            ch = self.take()
            if ch == "'":
                end = self.text.find("'", self.pos)
                if end < 0:
                    raise SubstitutionError(f"unterminated single quote in {self.text!r}")
                out.append(self.text[self.pos : end])
                self.pos = end + 1
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == self.escape:
                out.append(self.take() or ch)
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
        return "".join(out)

    def _double_quoted(self) -> str:
        out: List[str] = []
        while True:
            ch = self.take()
            if not ch:
                raise SubstitutionError(f"unterminated double quote in {self.text!r}")
            if ch == '"':
                return "".join(out)
            if ch == self.escape and self.peek() in ('"', "$", self.escape):
                out.append(self.take())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)

    def _name(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _NAME:
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
        if self.peek() == "{":
            self.pos += 1
            return self._braced()
        if self.peek() and self.peek() in _NAME_START:
            return self.env.get(self._name(), "")
        return "$"

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise SubstitutionError(f"bad substitution in {self.text!r}")
        value: Optional[str] = self.env.get(name)
        if self.peek() == "}":
            self.pos += 1
            return value or ""
        colon = self.peek() == ":"
        if colon:
            self.pos += 1
        op = self.take()
        if op not in ("-", "+", "?"):
            raise SubstitutionError(f"unsupported modifier in ${{{name}...}} of {self.text!r}")
        word = self.word(stop="}")
        if self.take() != "}":
            raise SubstitutionError(f"missing '}}' in {self.text!r}")
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return value if is_set else word  # type: ignore[return-value]
        if op == "+":
            return word if is_set else ""
        if not is_set:
            raise SubstitutionError(f"{name}: {word or 'is not set'}")
        return value  # type: ignore[return-value]


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word with its variables substituted and its quotes removed."""
    return _Lexer(text, env, escape).word()


def split_words(text: str, escape: str = "\\") -> List[str]:
    """Split on blanks outside quotes (quotes and escapes kept, for :func:`expand`)."""
    words: List[str] = []
    current: List[str] = []
    quote = ""
    chars = iter(text)
    for ch in chars:
        if ch == escape and quote != "'":
            current.append(ch + next(chars, ""))
        elif quote:
            current.append(ch)
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            current.append(ch)
            quote = ch
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> List[str]:
    """The words of ``text``, each expanded (Docker's arguments of COPY, EXPOSE, VOLUME...)."""
    return [expand(word, env, escape) for word in split_words(text, escape)]
