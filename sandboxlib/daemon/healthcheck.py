"""Docker's health checks: a running container's ``Config.Healthcheck`` (or its
image's ``HEALTHCHECK``) run in it every ``Interval``, its results as
inspect's ``State.Health`` (starting, healthy, unhealthy; the last five
results).  Durations are nanoseconds, as in Docker's API; zero is Docker's
default (30 s interval and timeout, 3 retries, no start period)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, Dict, List, Optional, Tuple

import attrs

from .. import aio
from ..aio.loop import readable
from ..errors import SandboxError
from ..streams import DEVNULL, STDOUT
from .apierrors import ApiError

__all__ = ["Health", "checked_healthcheck", "start", "watch"]

SECOND = 1_000_000_000
MINIMUM_DURATION = 1_000_000  # Docker's: a shorter interval would run checks back to back
KEPT_RESULTS = 5  # as Docker's
OUTPUT_LIMIT = 4096  # the bytes of a check's output kept, as Docker's


@attrs.define(eq=False)
class Health:
    status: str = "starting"
    failing_streak: int = 0
    log: List[Dict[str, Any]] = attrs.field(factory=list)
    task: Optional[asyncio.Task] = None

    def json(self) -> Dict[str, Any]:
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": list(self.log)}

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


def checked_healthcheck(check: Any) -> Optional[Dict[str, Any]]:
    """A create body's (or an image's) Healthcheck, checked; None when there is none to run."""
    if check is None:
        return None
    if not isinstance(check, dict):
        raise ApiError(400, "Healthcheck: expected an object")
    test = check.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise ApiError(400, "Healthcheck.Test: expected a list of strings")
    for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
        value = check.get(key) or 0  # (docker-py sends null for what it leaves out)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ApiError(400, f"Healthcheck.{key}: expected a non-negative integer")
        if key != "Retries" and 0 < value < MINIMUM_DURATION:
            raise ApiError(400, f"Healthcheck.{key}: {value} ns is less than 1ms (0 is the default)")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise ApiError(400, f"Healthcheck.Test: {test[0]!r} is not NONE, CMD or CMD-SHELL")
    if test[:1] in ([], ["NONE"]) or len(test) < 2:
        return None
    return check


def _argv(test: List[str]) -> List[str]:
    return ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]


async def watch(box: aio.Container, check: Dict[str, Any], health: Health, now) -> None:
    """Run ``check`` in ``box`` until cancelled (the run's end); ``now``: the daemon's RFC 3339 clock."""
    interval = (check.get("Interval") or 30 * SECOND) / SECOND
    timeout = (check.get("Timeout") or 30 * SECOND) / SECOND
    retries = check.get("Retries") or 3
    grace = (check.get("StartPeriod") or 0) / SECOND
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        await asyncio.sleep(interval)
        start = now()
        code, output = await _run_check(box, _argv(check["Test"]), timeout)
        health.log = [*health.log, {"Start": start, "End": now(), "ExitCode": code, "Output": output}][-KEPT_RESULTS:]
        if code == 0:
            health.status, health.failing_streak = "healthy", 0
        elif loop.time() - began >= grace or health.status != "starting":
            health.failing_streak += 1
            if health.failing_streak >= retries:
                health.status = "unhealthy"


async def _run_check(box: aio.Container, argv: List[str], timeout: float) -> Tuple[int, str]:
    """(exit code or -1, its output's first OUTPUT_LIMIT bytes).  The output goes
    through a pipe of ours, the rest of it read and dropped: the container decides
    what its check prints (``cat /dev/zero`` until the timeout), and holding it
    all grew the daemon by as much (1.2 GB for 400 MB printed)."""
    reader, writer = os.pipe()
    kept = bytearray()
    reading = asyncio.ensure_future(_keep_start(reader, kept))
    try:
        try:
            result = await box.run(argv, stdin=DEVNULL, stdout=writer, stderr=STDOUT, timeout=timeout)
        finally:
            os.close(writer)
        await asyncio.wait([reading], timeout=0.1)  # (what is left in the pipe; a process the check left may hold it)
    except SandboxError as err:
        return -1, str(err)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        os.close(reader)
    if result.timed_out:
        return -1, f"Health check exceeded timeout ({timeout:g}s)"
    return result.exit_code, kept.decode(errors="replace")


async def _keep_start(fd: int, kept: bytearray) -> None:
    """Read ``fd`` to its end, keeping its first OUTPUT_LIMIT bytes in ``kept``."""
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await readable(fd)
            continue
        if not chunk:
            return
        kept += chunk[: max(0, OUTPUT_LIMIT - len(kept))]


def start(box: aio.Container, check: Optional[Dict[str, Any]], now) -> Optional[Health]:
    """A run's health, its checks running; None without a check."""
    if check is None:
        return None
    health = Health()
    health.task = asyncio.get_running_loop().create_task(watch(box, check, health, now))
    health.task.add_done_callback(lambda task: task.cancelled() or task.exception())  # (no "never retrieved")
    return health
