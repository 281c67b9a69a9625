"""The event log: what `docker events` streams (create, start, die, destroy, tag, ...)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

HISTORY = 1024


class Events:
    def __init__(self) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, type_: str, action: str, actor_id: str, attributes: dict[str, str]) -> None:
        now = time.time_ns()
        ev: dict[str, Any] = {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": attributes},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if type_ in ("container", "image"):
            # Legacy fields that older clients still read.
            ev["status"] = action
            ev["id"] = actor_id
            if "image" in attributes:
                ev["from"] = attributes["image"]
        self.history.append(ev)
        for q in list(self.subscribers):
            q.put_nowait(ev)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(q)
