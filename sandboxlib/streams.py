"""Standard streams of a command: what the child gets, what we keep."""
from __future__ import annotations

import io
import os
import subprocess
from typing import List, Optional, Tuple, Union

__all__ = ["PIPE", "DEVNULL", "STDOUT", "StdioSpec", "resolve_stdio"]

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

StdioSpec = Union[None, int, io.IOBase]


def _fd_of(spec: StdioSpec, which: int) -> int:
    if spec is None:
        return which            # inherit ours
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"invalid stdio value {spec!r}")
        return spec
    return spec.fileno()


def resolve_stdio(stdin: StdioSpec, stdout: StdioSpec, stderr: StdioSpec
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
