"""The aiohttp application: routing with version prefixes, error mapping, dockerd's headers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bocker_engine import API_VERSION, MIN_API_VERSION, __version__
from bocker_engine.errors import EngineError, InvalidParameter, NotModified

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")
SERVER_HEADER = f"Docker/{__version__}-bocker (linux)"
JSON = "application/json"


def _vtuple(v: str) -> tuple[int, int]:
    major, _, minor = v.partition(".")
    return int(major), int(minor or 0)


# The daemon object (bocker_engine.daemon.Daemon); typed Any to keep the api layer free of the wiring.
DAEMON: web.AppKey[Any] = web.AppKey("daemon", object)


def daemon_of(request: web.Request) -> Any:
    return request.app[DAEMON]


def api_version(request: web.Request) -> tuple[int, int]:
    v: tuple[int, int] = request.get("api_version", _vtuple(API_VERSION))
    return v


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON body with Content-Type exactly `application/json` (the CLI compares with ==)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    resp = web.Response(body=body, status=status, headers=headers)
    resp.content_type = JSON
    # aiohttp adds "; charset=utf-8" to text types only when charset is set; keep it unset.
    return resp


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)


def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """dockerd's BoolValue: "", 0, no, false, none are false (any case); absent is `default`."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in ("", "0", "no", "false", "none")


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        try:
            return int(float(raw))
        except ValueError:
            raise InvalidParameter(f"invalid value for {name}: {raw!r}") from None


async def read_json(request: web.Request, default: Any = None) -> Any:
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InvalidParameter(f"invalid JSON: {e}") from None


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Debug aid (BOCKER_TIMING=1): how long each request takes in the daemon."""
    import time

    t = time.perf_counter()
    try:
        return await handler(request)
    finally:
        log.info("%s %s %.1f ms", request.method, request.path, (time.perf_counter() - t) * 1000)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotModified:
        return web.Response(status=304)
    except EngineError as e:
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.path, e.message)
        return error_response(e.status, e.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(404, "page not found")
    except web.HTTPException:
        raise
    except (ConnectionResetError, BrokenPipeError):
        raise
    except Exception as e:
        log.exception("%s %s", request.method, request.path)
        return error_response(500, f"{type(e).__name__}: {e}")


def _common_headers(headers: Any) -> None:
    headers["Api-Version"] = API_VERSION
    headers["Ostype"] = "linux"
    headers["Docker-Experimental"] = "false"
    headers["Server"] = SERVER_HEADER


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if response.status != 101:
        _common_headers(response.headers)


def _version_handler(inner: Handler) -> Handler:
    """Accept `/v1.xx/...` paths: check the version, remember it for version-dependent output."""

    async def handler(request: web.Request) -> web.StreamResponse:
        v = request.match_info.get("api_version")
        if v:
            try:
                vt = _vtuple(v)
            except ValueError:
                return error_response(404, "page not found")
            if vt > _vtuple(API_VERSION):
                return error_response(
                    400, f"client version {v} is too new. Maximum supported API version is {API_VERSION}"
                )
            if vt < _vtuple(MIN_API_VERSION):
                return error_response(
                    400,
                    f"client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, "
                    "please upgrade your client to a newer version",
                )
            request["api_version"] = vt
        return await inner(request)

    return handler


class Router:
    """Registers every route unversioned and under /v{version}, as dockerd's mux does."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        wrapped = _version_handler(handler)
        self.app.router.add_route(method, path, wrapped)
        self.app.router.add_route(method, r"/v{api_version:[0-9]+\.[0-9]+}" + path, wrapped)


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


def create_app(daemon: Any) -> web.Application:
    import os

    from bocker_engine.api import containers, distribution, events, images, networks, stats, system

    middlewares: list[Any] = [errors_middleware]
    if os.environ.get("BOCKER_TIMING"):
        middlewares.insert(0, timing_middleware)
    if os.environ.get("BOCKER_API_RECORD"):
        middlewares.insert(0, _recorder(os.environ["BOCKER_API_RECORD"]))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 30)
    app[DAEMON] = daemon
    app.on_response_prepare.append(_on_prepare)
    router = Router(app)
    system.setup(router)
    containers.setup(router)
    images.setup(router)
    distribution.setup(router)
    networks.setup(router)
    events.setup(router)
    stats.setup(router)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
