"""The HTTP toolkit every handler module uses: typed access to the engine, JSON responses, query
parsing, and the Router that serves each route unversioned and under /v1.xx.

Handlers parse, call one engine method, encode. Nothing here knows a route; `app.py` assembles.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, UrlMappingMatchInfo

from bocker_engine import API_VERSION, MIN_API_VERSION, __version__, jsonload
from bocker_engine.api.backend import Backend
from bocker_engine.errors import EngineError, InvalidParameter, NotModified, message_of, os_error_message

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER_HEADER = f"Docker/{__version__}-bocker (linux)"
JSON = "application/json"
# dockerd's headers on every answer but a 101. Set as a response is made (json_response,
# stream_response, the route wrapper for the rest), not by an on_response_prepare signal,
# which costs every request a coroutine.
COMMON_HEADERS = {
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Server": SERVER_HEADER,
}
_JSON_HEADERS = {**COMMON_HEADERS, "Content-Type": JSON}


def _vtuple(v: str) -> tuple[int, int]:
    major, _, minor = v.partition(".")
    return int(major), int(minor or 0)


# The engine behind the API (bocker_engine.daemon.Daemon implements it).
BACKEND: web.AppKey[Backend] = web.AppKey("backend", Backend)


def daemon_of(request: web.Request) -> Backend:
    return request.app[BACKEND]


def api_version(request: web.Request) -> tuple[int, int]:
    v: tuple[int, int] = request.get("api_version", _vtuple(API_VERSION))
    return v


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON body with Content-Type exactly `application/json` (the CLI compares with ==)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    # The header itself, not the content_type setter (which parses it again, a few us a call).
    return web.Response(body=body, status=status, headers={**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS)


def stream_response(status: int = 200, headers: dict[str, str] | None = None) -> web.StreamResponse:
    """A response a handler prepares itself (streams), with dockerd's headers."""
    return web.StreamResponse(status=status, headers={**COMMON_HEADERS, **headers} if headers else COMMON_HEADERS)


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
        value = int(raw)
    except ValueError:
        try:
            value = int(float(raw))
        except (ValueError, OverflowError):  # "x", "nan", "inf"
            raise InvalidParameter(f"invalid value for {name}: {raw!r}") from None
    if not -(1 << 63) <= value < 1 << 63:  # Go's strconv range: nothing below has to cope with more
        raise InvalidParameter(f"invalid value for {name}: {raw!r}")
    return value


async def read_json(request: web.Request, default: Any = None) -> Any:
    """A JSON body of no declared type (bodies with a type: validation.read_body)."""
    raw = await request.read()
    if not raw.strip():
        return default
    try:
        return jsonload.loads(raw)
    except jsonload.JSONError as e:
        raise InvalidParameter(f"invalid JSON: {e}") from None


def _version_error(v: str) -> web.Response | None:
    try:
        vt = _vtuple(v)
    except ValueError:
        return error_response(404, "page not found")
    if vt > _vtuple(API_VERSION):
        return error_response(400, f"client version {v} is too new. Maximum supported API version is {API_VERSION}")
    if vt < _vtuple(MIN_API_VERSION):
        return error_response(
            400,
            f"client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
        )
    return None


def failure_response(request: web.Request, e: Exception) -> web.Response:
    """dockerd's answer for an exception out of a handler: the engine's status and message,
    500 for anything else (logged with its traceback: a bug, not a condition)."""
    if isinstance(e, NotModified):
        return web.Response(status=304)
    if isinstance(e, EngineError):
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.path, e.message)
        return error_response(e.status, e.message)
    if isinstance(e, (web.HTTPNotFound, web.HTTPMethodNotAllowed)):
        return error_response(404, "page not found")
    if isinstance(e, (web.HTTPException, ConnectionResetError, BrokenPipeError)):
        raise e
    if isinstance(e, OSError) and e.errno:
        # A host condition (say a full disk), not a bug: no traceback, dockerd's words.
        log.error("%s %s: %s", request.method, request.path, os_error_message(e))
    else:
        log.exception("%s %s", request.method, request.path)
    return error_response(500, message_of(e))


def _route_handler(inner: Handler) -> Handler:
    """Every route's wrapper (in place of middlewares, which cost each request a frame and
    aiohttp's middleware chain): `/v1.xx/...` checked and remembered for version-dependent
    output, errors mapped to dockerd's JSON answers."""

    async def handler(request: web.Request) -> web.StreamResponse:
        v = request.match_info.get("api_version")
        if v:
            if (refused := _version_error(v)) is not None:
                return refused
            request["api_version"] = _vtuple(v)
        try:
            resp = await inner(request)
        except Exception as e:
            return failure_response(request, e)
        if not resp.prepared and "Api-Version" not in resp.headers:  # a bare Response(status=204)
            resp.headers.update(COMMON_HEADERS)
        return resp

    return handler


_VERSION_PATTERN = r"/v{api_version:[0-9]+\.[0-9]+}"
_VERSION_CANONICAL = "/v{api_version}"
_VERSION_PREFIX = re.compile(r"/v[0-9]+\.[0-9]+(?=/)")


def _index_key(canonical: str) -> str:
    """aiohttp's index key: the path up to the last "/" before the first variable."""
    if "{" in canonical:
        canonical = canonical.partition("{")[0].rpartition("/")[0]
    return canonical.rstrip("/") or "/"


def _versioned_key(resource: AbstractResource) -> str | None:
    """The index key of a /v1.xx route by the path after the version; None for the others."""
    if not resource.canonical.startswith(_VERSION_CANONICAL + "/"):
        return None
    return _index_key(resource.canonical[len(_VERSION_CANONICAL) :])


class VersionedDispatcher(web.UrlDispatcher):
    """aiohttp indexes a route by its text before the first variable: "/" for every /v1.xx
    copy, so a versioned request (all the CLI sends) was matched by a scan of them all. Here
    they are indexed by the path after the version, and a versioned request looks only at the
    few routes of its own path."""

    def __init__(self) -> None:
        super().__init__()
        self._versioned: dict[str, list[AbstractResource]] = {}

    def index_resource(self, resource: AbstractResource) -> None:
        if (key := _versioned_key(resource)) is not None:
            self._versioned.setdefault(key, []).append(resource)
        else:
            super().index_resource(resource)

    def unindex_resource(self, resource: AbstractResource) -> None:
        if (key := _versioned_key(resource)) is not None:
            self._versioned[key].remove(resource)
        else:
            super().unindex_resource(resource)

    async def resolve(self, request: web.Request) -> UrlMappingMatchInfo:
        path = request.rel_url.path_safe
        prefix = _VERSION_PREFIX.match(path)
        if prefix is not None:
            part = path[prefix.end() :]
            while part:
                for candidate in self._versioned.get(part, ()):
                    match, _ = await candidate.resolve(request)
                    if match is not None:
                        return match
                if part == "/":
                    break
                part = part.rpartition("/")[0] or "/"
        return await super().resolve(request)


def new_app(**kwargs: Any) -> web.Application:
    """An application whose router is a VersionedDispatcher (aiohttp deprecates passing one, but
    keeps it through 3.x; the routes resolve the same with the stock router, only slower)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return web.Application(router=VersionedDispatcher(), **kwargs)


class Router:
    """Registers every route unversioned and under /v{version}, as dockerd's mux does."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        wrapped = _route_handler(handler)
        self.app.router.add_route(method, path, wrapped)
        self.app.router.add_route(method, _VERSION_PATTERN + path, wrapped)
