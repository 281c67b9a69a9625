"""GET /events: replay from the buffer (since/until), then stream live, one flushed JSON object
per event (the CLI prints each as it arrives)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from bocker_engine.api.streams import flush_headers
from bocker_engine.api.toolkit import Router, daemon_of, stream_response
from bocker_engine.engine import filters as flt
from bocker_engine.errors import InvalidParameter


def _event_time(request: web.Request, name: str) -> int:
    """dockerd's timetypes.ParseTimestamps: "seconds[.nanos]" (the CLI converts durations and
    dates itself); docker-py sends integers. Go durations and RFC 3339 are accepted too."""
    raw = request.query.get(name, "")
    if not raw:
        return 0
    sec, dot, frac = raw.partition(".")
    if sec.lstrip("-").isdigit() and (not dot or frac.isdigit()):
        nanos = int(frac.ljust(9, "0")[:9]) if dot else 0
        return max(0, int(sec) * 1_000_000_000 + nanos)
    return int(flt.parse_timestamp(raw) * 1e9)


async def events(request: web.Request) -> web.StreamResponse:
    since = _event_time(request, "since")
    until = _event_time(request, "until")
    if until and until < since:
        raise InvalidParameter(
            f"`since` time ({request.query.get('since')}) cannot be after `until` time ({request.query.get('until')})"
        )
    filters = flt.parse(request.query.get("filters"))
    bus = daemon_of(request).events
    buffered, sub = bus.subscribe(filters, since, until)
    try:
        resp = stream_response(200)
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        flush_headers(request)
        for ev in buffered:
            await resp.write(_encode(ev))
        now = time.time_ns()
        if until and until <= now:
            await resp.write_eof()
            return resp
        deadline = asyncio.get_running_loop().time() + (until - now) / 1e9 if until else None
        while True:
            timeout = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if timeout is not None and timeout <= 0:
                break
            try:
                live = await asyncio.wait_for(sub.queue.get(), timeout)
            except TimeoutError:
                break
            if live is None:  # dropped: it fell too far behind
                break
            await resp.write(_encode(live))
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
    finally:
        bus.unsubscribe(sub)


def _encode(ev: dict[str, object]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


def setup(router: Router) -> None:
    router.add("GET", "/events", events)
