"""Standard streams of a command: what the child gets, what we keep."""

from __future__ import annotations

import io
import os
import subprocess
from typing import List, Optional, Tuple, Union

__all__ = ["PIPE", "DEVNULL", "STDOUT", "StdioSpec", "resolve_stdio"]


class _Special(int):
    """subprocess's special stdio value (it is equal to it, so either works),
    named in reprs: ``help(sb.run)`` shows ``stdout=PIPE``, not ``-1``."""

    def __new__(cls, value: int, name: str) -> _Special:
        self = super().__new__(cls, value)
        self._name = name
        return self

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self):  # pickles as the plain int (Pool and call() send options across processes)
        return int, (int(self),)


PIPE = _Special(subprocess.PIPE, "PIPE")
DEVNULL = _Special(subprocess.DEVNULL, "DEVNULL")
STDOUT = _Special(subprocess.STDOUT, "STDOUT")

StdioSpec = Union[None, int, io.IOBase]


def _fd_of(spec: StdioSpec, which: int) -> int:
    if spec is None:
        return which  # inherit ours
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"invalid stdio value {spec!r}")
        return spec
    return spec.fileno()


def resolve_stdio(
    stdin: StdioSpec, stdout: StdioSpec, stderr: StdioSpec
) -> Tuple[List[int], List[Optional[int]], List[int]]:
    """Returns (child fds, our pipe ends or None, fds to close once sent).

    Pipe ends we keep are close-on-exec raw fds; the caller wraps them."""
    child: List[int] = []
    ours: List[Optional[int]] = [None, None, None]
    to_close: List[int] = []
    try:
        for which, spec in enumerate((stdin, stdout, stderr)):
            if spec == PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                theirs, ours[which] = (r, w) if which == 0 else (w, r)
                child.append(theirs)
                to_close.append(theirs)
            elif spec == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                child.append(fd)
                to_close.append(fd)
            elif spec == STDOUT and which == 2:
                child.append(child[1])
            else:
                child.append(_fd_of(spec, which))
    except BaseException:
        for fd in to_close + [fd for fd in ours if fd is not None]:
            os.close(fd)
        raise
    return child, ours, to_close
