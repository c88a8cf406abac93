"""The asyncio front: ``import sandboxlib.aio as sba``.

``async with sba.Container(...) as c``, ``await c.run(argv)``,
``await c.spawn(argv, stdout=sb.PIPE)``, ``await c.call(fn, ...)``,
``await sba.run(argv)``, ``sba.Pool(size=4)`` (``await pool.call(fn, ...)``):
the sync API's options, results and errors, awaited on the running asyncio
loop (asyncio only: no anyio/trio layer)."""

from .container import Container, run
from .pool import Pool
from .process import Process

__all__ = ["Container", "Pool", "Process", "run"]
