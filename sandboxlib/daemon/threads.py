"""Blocking library calls awaited from the loop, each on a thread of its own.

Not the loop's default executor: its few workers (CPUs + 4) would all be
taken by long waits (a main command's ``wait()``, a followed log), and every
other blocking call of the daemon would queue behind them."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

__all__ = ["in_thread", "deliver"]

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a new daemon thread, awaited (cancelling the await does not stop it)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def run() -> None:
        try:
            value = fn(*args)
        except BaseException as err:  # noqa: BLE001  (handed to the awaiting task)
            deliver(loop, _fail, future, err)
        else:
            deliver(loop, _succeed, future, value)

    threading.Thread(target=run, name=f"sandboxlib daemon {getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await asyncio.shield(future)


def deliver(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    """``fn(*args)`` on the loop's thread, soon; False when the loop has closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # the loop is closed: the daemon is ending
        return False


def _succeed(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
