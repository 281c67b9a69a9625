"""/_ping, /version, /info, /system/df, /build/prune."""

from __future__ import annotations

from aiohttp import web

from bocker_engine.api.toolkit import COMMON_HEADERS, Router, daemon_of, json_response
from bocker_engine.engine import system_info

PING_HEADERS = {
    **COMMON_HEADERS,
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Swarm": "inactive",
    "Content-Type": "text/plain",
}


async def ping(request: web.Request) -> web.StreamResponse:
    # Every CLI command starts with this: no content_type setter (it parses), one dict.
    return web.Response(body=b"" if request.method == "HEAD" else b"OK", headers=PING_HEADERS)


async def version(request: web.Request) -> web.StreamResponse:
    return json_response(system_info.version())


async def info(request: web.Request) -> web.StreamResponse:
    return json_response(daemon_of(request).system_info())


async def system_df(request: web.Request) -> web.StreamResponse:
    return json_response(await daemon_of(request).disk_usage(request.query.getall("type", [])))


async def build_prune(request: web.Request) -> web.StreamResponse:
    # No builder yet, so no build cache: what dockerd answers when its cache is empty.
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


def setup(router: Router) -> None:
    router.add("GET", "/system/df", system_df)
    router.add("POST", "/build/prune", build_prune)
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
