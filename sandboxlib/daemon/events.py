"""``GET /events``: what happens to containers and images, as Docker's event
messages, to every subscriber (a queue each), filtered per subscriber."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Deque, Dict, List, Optional, Set

from aiohttp import web

from .apierrors import ApiError
from .server import Route

__all__ = ["Events", "ROUTES"]


class Events:
    KEPT = 256  # the latest events, replayed to a subscriber's ``since`` (as dockerd keeps them)

    def __init__(self) -> None:
        self._subscribers: Set[asyncio.Queue] = set()
        self._kept: Deque[dict] = collections.deque(maxlen=self.KEPT)

    def emit(self, kind: str, action: str, actor_id: str, attributes: Optional[Dict[str, str]] = None) -> None:
        now = time.time_ns()
        message = {
            "Type": kind,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if kind == "container":  # (the fields of API < 1.22, which the CLI's formatter still reads)
            message.update(status=action, id=actor_id, **{"from": (attributes or {}).get("image", "")})
        self._kept.append(message)
        for queue in self._subscribers:
            queue.put_nowait(message)

    def subscribe(self, since: Optional[float] = None) -> asyncio.Queue:
        """A queue of the events from now on (``since``: from that time, those kept first)."""
        queue: asyncio.Queue = asyncio.Queue()
        if since is not None:
            for message in self._kept:
                if message["timeNano"] >= since * 1e9:
                    queue.put_nowait(message)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)


def _filters(request: web.Request) -> Dict[str, List[str]]:
    text = request.query.get("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ApiError(400, f"invalid filters: {err}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid filters: expected an object")
    # Docker sends {"type": {"container": true}} (a set as a map), or lists
    return {k: list(v) if isinstance(v, (list, dict)) else [str(v)] for k, v in raw.items()}


def _matches(message: dict, filters: Dict[str, List[str]]) -> bool:
    actor = message["Actor"]
    checks = {
        "type": [message["Type"]],
        "event": [message["Action"]],
        "container": [actor["ID"], actor["ID"][:12], actor["Attributes"].get("name", "")]
        if message["Type"] == "container"
        else None,
        "image": [actor["Attributes"].get("image", ""), actor["ID"]],
        "label": [f"{k}={v}" for k, v in actor["Attributes"].items()] + list(actor["Attributes"]),
    }
    for key, wanted in filters.items():
        seen = checks.get(key)
        if seen is None or not any(w in seen for w in wanted):
            return False
    return True


async def _events(request: web.Request) -> web.StreamResponse:
    events: Events = request.app["context"].events
    filters = _filters(request)
    until, since = request.query.get("until"), request.query.get("since")
    try:
        deadline = float(until) if until else None
        start = float(since) if since else None
    except ValueError:
        raise ApiError(400, "since and until are seconds since the epoch") from None
    queue = events.subscribe(start)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            try:
                message = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            if _matches(message, filters):
                await response.write(json.dumps(message).encode() + b"\n")
        await response.write_eof()
        return response
    finally:
        events.unsubscribe(queue)


ROUTES: List[Route] = [("GET", "/events", _events)]
