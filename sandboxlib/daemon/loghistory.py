"""A container's log across its runs.  The library's log writer begins its
file anew at each start, so before a restart the daemon appends the
finished run's records to ``LOG.history`` (bounded: past ``MAX_HISTORY``
the older half goes), and ``docker logs`` reads that history first."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import shutil
from typing import Any, Callable, Iterator, Optional, Tuple

from ..runtime.logs import read_log

__all__ = ["keep_previous_run", "with_history"]

MAX_HISTORY = 30 << 20  # as much as the default log keeps (3 files of 10 MiB)
Entries = Iterator[Tuple[str, bytes]]


def _history(log_path: str) -> str:
    return log_path + ".history"  # (the writer's rotations are LOG.1, LOG.2, ...: never this)


def keep_previous_run(log_path: str, max_files: int) -> None:
    """Move the last run's files (oldest first) to the end of the history."""
    names = [f"{log_path}.{n}" for n in range(max_files - 1, 0, -1)] + [log_path]
    with open(_history(log_path), "ab") as history:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                with open(name, "rb") as run:
                    shutil.copyfileobj(run, history)
                os.unlink(name)
    _bound(_history(log_path))


def _bound(path: str) -> None:
    size = os.path.getsize(path)
    if size <= MAX_HISTORY:
        return
    with open(path, "rb") as f:
        f.seek(size - MAX_HISTORY // 2)
        f.readline()  # to the start of a record
        kept = f.read()
    with open(path + ".tmp", "wb") as f:
        f.write(kept)
    os.replace(path + ".tmp", path)


def with_history(log_path: str, current: Callable[..., Entries], tail: Optional[int], **options: Any) -> Entries:
    """The history's records, then the current run's (``current(tail=..., **options)``);
    ``tail`` counts across both."""
    if not os.path.exists(_history(log_path)):
        return current(tail=tail, **options)
    older_options = {k: v for k, v in options.items() if k in ("timestamps", "since")}
    if tail is None:
        return itertools.chain(read_log(_history(log_path), 1, **older_options), current(tail=None, **options))
    now = sum(1 for _ in current(tail=tail, **{**options, "follow": False}))
    wanted = tail - now
    older: Any = (
        collections.deque(read_log(_history(log_path), 1, **older_options), maxlen=wanted) if wanted > 0 else ()
    )
    return itertools.chain(older, current(tail=tail, **options))
