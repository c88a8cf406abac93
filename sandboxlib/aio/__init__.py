"""The asyncio front: ``import sandboxlib.aio as sba``.

``async with sba.Container(...) as c``, ``await c.run(argv)``,
``await c.spawn(argv, stdout=sb.PIPE)``, ``await c.call(fn, ...)``,
``await sba.run(argv)``, ``sba.Pool(size=4)`` (``await pool.call(fn, ...)``):
the sync API's options, results and errors, awaited on the running asyncio
loop, or under trio through anyio (``sandboxlib[anyio]``; ``Pool``: asyncio only)."""

from .container import Container, run
from .pool import Pool
from .process import Process

__all__ = ["Container", "Pool", "Process", "run"]
