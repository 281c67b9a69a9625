"""GET /containers/{id}/stats: dockerd's stream (one frame a second) and one-shot answers.

As dockerd does, unless `one-shot=true` the first sample only primes `precpu_stats`, so even the
first frame (and the single frame of `stream=false`) gives the CLI a CPU%. dockerd takes both
from its collector's ticks (1-2 s); here the priming sample is read at once and the first frame
half a second later, then frames follow the shared collector's tick, each at least half a second
after the one before so that every CPU% spans a real interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from bocker_engine.api.streams import flush_headers
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool, stream_response
from bocker_engine.engine import stats as st
from bocker_engine.errors import InvalidParameter

FIRST_GAP = 0.5
MIN_PRIME_GAP = 0.5


async def stats(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    c = d.containers.get(request.match_info["id"])
    stream = qbool(request, "stream", True)
    one_shot = qbool(request, "one-shot")
    if stream and one_shot:
        raise InvalidParameter("cannot have stream=true and one-shot=true")
    collector: st.StatsCollector = d.stats
    if not stream and not c.state.Running:
        return json_response(st.frame(c, None, None))
    pre = await asyncio.to_thread(collector.sample, c) if not one_shot else None
    if pre is not None:
        # The first frame's interval is the stream's own (half a second), not the collector's
        # next tick, which may be a moment away: the CPU% needs a real interval.
        await asyncio.sleep(FIRST_GAP)
    sample = await asyncio.to_thread(collector.sample, c)
    if not stream:
        return json_response(st.frame(c, sample, pre))
    resp = stream_response(200)
    resp.content_type = "application/json"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    flush_headers(request)
    sub = collector.subscribe(c.id)
    try:
        while True:
            await resp.write(json.dumps(st.frame(c, sample, pre), separators=(",", ":")).encode() + b"\n")
            pre = sample
            sample = await _next(sub, pre)
            if d.containers.containers.get(c.id) is not c:
                break  # removed: dockerd ends the stream
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
    finally:
        collector.unsubscribe(sub)


async def _next(sub: st.StatsSubscriber, pre: st.Sample | None) -> st.Sample:
    while True:
        sample = await sub.queue.get()
        if pre is None or pre.stats is None or sample.stats is None or sample.at - pre.at >= MIN_PRIME_GAP:
            return sample


def setup(router: Router) -> None:
    router.add("GET", "/containers/{id}/stats", stats)
