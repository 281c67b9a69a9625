"""The aiohttp application: the handler modules' routes, the catch-all 404, and the debug
middlewares. Error mapping and API versions are in each route's wrapper
(toolkit.py), which handlers share."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from aiohttp import web

from bocker_engine.api import build, containers, distribution, events, images, networks, stats, swarm, system, volumes
from bocker_engine.api.backend import Backend
from bocker_engine.api.toolkit import BACKEND, JSON, Handler, Router, error_response, new_app

log = logging.getLogger(__name__)


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Debug aid (BOCKER_TIMING=1): how long each request takes in the daemon."""
    import time

    t = time.perf_counter()
    try:
        return await handler(request)
    finally:
        log.info("%s %s %.1f ms", request.method, request.path, (time.perf_counter() - t) * 1000)


async def _not_found(request: web.Request) -> web.StreamResponse:
    return error_response(404, "page not found")


def _recorder(path: str) -> Any:
    """Test support: append every JSON response to `path`, to validate against the swagger."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if isinstance(resp, web.Response) and resp.content_type == JSON and resp.body is not None:
            route = request.match_info.route.resource
            canonical = route.canonical if route is not None else request.path
            canonical = re.sub(r"^/v\{api_version\}", "", canonical)
            entry = {
                "method": request.method,
                "route": canonical,
                "path": request.path,
                "status": resp.status,
                "body": json.loads(resp.text or "null"),
            }
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        return resp

    return record


def create_app(backend: Backend) -> web.Application:
    middlewares: list[Any] = []
    if os.environ.get("BOCKER_TIMING"):
        middlewares.insert(0, timing_middleware)
    if os.environ.get("BOCKER_API_RECORD"):
        middlewares.insert(0, _recorder(os.environ["BOCKER_API_RECORD"]))
    app = new_app(middlewares=middlewares, client_max_size=1 << 30)
    app[BACKEND] = backend
    router = Router(app)
    system.setup(router)
    containers.setup(router)
    images.setup(router)
    build.setup(router)
    distribution.setup(router)
    networks.setup(router)
    swarm.setup(router)
    volumes.setup(router)
    events.setup(router)
    stats.setup(router)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
