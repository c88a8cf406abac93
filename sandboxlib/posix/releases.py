"""Releases registered as resources are acquired, run in reverse order.

What ``contextlib.ExitStack`` does with ``callback()`` and ``close()``, which
is all a container's resources use, without its layers: a wrapper function
per callback, a deque, and ``__exit__``'s exception bookkeeping (~40 Python
calls per ``sb.run``; this one: none but the callbacks)."""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["Releases"]


class Releases:
    """``callback(fn, *args)`` registers ``fn(*args)``; ``close()`` calls them,
    last registered first, each even when an earlier one raised; then raises
    the last exception raised, every earlier one in its ``__context__``
    chain.  Callbacks registered while closing run too."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: List[Tuple[Callable[..., Any], tuple]] = []

    def callback(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending.append((fn, args))

    def close(self) -> None:
        pending = self._pending
        outer = sys.exc_info()[1]  # being handled where close() is called: not ours to chain
        error: Optional[BaseException] = None
        while pending:
            fn, args = pending.pop()
            try:
                fn(*args)
            except BaseException as err:  # noqa: BLE001 - raised once every release ran
                if error is not None:
                    _chain(err, error, outer)
                error = err
        if error is not None:
            context = error.__context__
            try:
                raise error
            except BaseException:
                error.__context__ = context  # (the raise made it ``outer``)
                raise
            finally:
                error = None  # (no cycle through this frame)


def _chain(err: BaseException, earlier: BaseException, outer: Optional[BaseException]) -> None:
    """Make ``earlier`` the context at the end of ``err``'s chain, above
    ``outer`` (ExitStack's ``_fix_exception_context``, which leaves a chain
    that ends in None alone: the earlier error was lost when no exception
    was being handled around close())."""
    while True:
        context = err.__context__
        if context is earlier:
            return
        if context is None or context is outer:
            break
        err = context
    err.__context__ = earlier
