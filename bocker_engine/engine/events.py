"""The event log: what `docker events` streams (create, start, die, destroy, tag, ...).

Like dockerd's daemon/events: the last 1024 events are kept to answer `since`/`until`, and
every subscriber has its own bounded queue. Publishing never waits: a subscriber whose queue is
full (a client that stopped reading) is dropped and its stream ends, so a slow reader can
neither slow the engine nor grow the daemon's memory. (dockerd waits up to 100 ms per event
for such a reader and then drops that event for it; ending the stream instead tells the client
it missed something.)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bocker_engine.engine.filters import Filters

HISTORY = 1024
QUEUE_SIZE = 1024

Event = dict[str, Any]


class Subscriber:
    """One `GET /events` client: its filter and its queue (None in the queue: dropped)."""

    def __init__(self, match: Callable[[Event], bool]) -> None:
        self.match = match
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.dropped = False


class Events:
    def __init__(self) -> None:
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self.subscribers: set[Subscriber] = set()

    def publish(self, type_: str, action: str, actor_id: str, attributes: dict[str, str]) -> Event:
        now = time.time_ns()
        ev: Event = {}
        if type_ in ("container", "image"):
            # Legacy fields that older clients still read; dockerd sets `from` for containers only.
            ev["status"] = action
            ev["id"] = actor_id
            if type_ == "container" and attributes.get("image"):
                ev["from"] = attributes["image"]
        ev.update(
            {
                "Type": type_,
                "Action": action,
                "Actor": {"ID": actor_id, "Attributes": attributes},
                "scope": "local",
                "time": now // 1_000_000_000,
                "timeNano": now,
            }
        )
        self.history.append(ev)
        for sub in list(self.subscribers):
            if not sub.match(ev):
                continue
            if sub.queue.qsize() >= QUEUE_SIZE:
                self._drop(sub)
            else:
                sub.queue.put_nowait(ev)
        return ev

    def _drop(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.dropped = True
        sub.queue.put_nowait(None)

    def subscribe(self, filters: Filters, since_ns: int = 0, until_ns: int = 0) -> tuple[list[Event], Subscriber]:
        """The buffered events in [since, until] that match, and a live subscription, taken
        together so that no event falls between the two."""
        match = event_matcher(filters)
        buffered: list[Event] = []
        if since_ns or until_ns:
            for ev in self.history:
                if ev["timeNano"] < since_ns or (until_ns and ev["timeNano"] > until_ns):
                    continue
                if match(ev):
                    buffered.append(ev)
        sub = Subscriber(match)
        self.subscribers.add(sub)
        return buffered, sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    @property
    def listeners(self) -> int:
        return len(self.subscribers)


# ---- filters (moby daemon/events/filter.go) ------------------------------------------------


def _exact(filters: Filters, key: str, value: str) -> bool:
    values = filters.get(key)
    return not values or value in values


def _fuzzy(filters: Filters, key: str, value: str) -> bool:
    values = filters.get(key)
    return not values or any(value == v or value.startswith(v) for v in values)


def _strip_tag(image: str) -> str:
    from bocker_engine.errors import EngineError
    from bocker_engine.registry.reference import parse

    try:
        return parse(image).familiar_name
    except (EngineError, ValueError):
        return image


def _match_image(filters: Filters, ev: Event) -> bool:
    values = filters.get("image")
    if not values:
        return True
    actor = ev["Actor"]
    name = actor["Attributes"].get("name" if ev["Type"] == "image" else "image", "")
    candidates = {actor["ID"], name, _strip_tag(actor["ID"]), _strip_tag(name)}
    return any(c in values for c in candidates)


def _match_labels(filters: Filters, attributes: dict[str, str]) -> bool:
    values = filters.get("label")
    if not values:
        return True
    for v in values:
        k, sep, want = v.partition("=")
        if k not in attributes or (sep and attributes[k] != want):
            return False
    return True


_FUZZY_EVENTS = ("health_status", "exec_create", "exec_start")


def event_matcher(filters: Filters) -> Callable[[Event], bool]:
    """Keys AND together, values of one key OR; names and IDs match by prefix like dockerd."""
    if not filters:
        return lambda ev: True

    def match(ev: Event) -> bool:
        actor = ev["Actor"]
        name = actor["Attributes"].get("name", "")
        if any(v in _FUZZY_EVENTS for v in filters.get("event", [])):
            if not _fuzzy(filters, "event", ev["Action"]):
                return False
        elif not _exact(filters, "event", ev["Action"]):
            return False
        if not _exact(filters, "type", ev["Type"]) or not _exact(filters, "scope", ev["scope"]):
            return False
        for key in ("daemon", "container", "volume", "network", "plugin", "node", "service", "secret", "config"):
            if key in filters and not (_fuzzy(filters, key, actor["ID"]) or _fuzzy(filters, key, name)):
                return False
        return _match_image(filters, ev) and _match_labels(filters, actor["Attributes"])

    return match
