"""At most once per interval, across threads and processes, with no state in this process: the
mtime of a stamp file says when the work was last due."""

from __future__ import annotations

import os
import time

__all__ = ["due"]


def due(stamp: str, interval: float) -> bool:
    """True when ``interval`` seconds have passed since the last time this
    returned True for ``stamp`` (the path of a file it keeps); two callers
    that race may both get True, so the work must be safe to repeat."""
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < interval:
            return False
        os.utime(stamp, (now, now))
    except FileNotFoundError:
        try:
            os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        except OSError:
            return True  # no stamp can be kept here: the work is done every time
    except OSError:
        return True
    return True
