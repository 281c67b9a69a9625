"""The HTTP toolkit every handler module uses: typed access to the engine, JSON responses, query
parsing, and the Router that serves each route unversioned and under /v1.xx.

Handlers parse, call one engine method, encode. Nothing here knows a route; `app.py` assembles.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bocker_engine import API_VERSION, MIN_API_VERSION, __version__, jsonload
from bocker_engine.api.backend import Backend
from bocker_engine.errors import InvalidParameter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER_HEADER = f"Docker/{__version__}-bocker (linux)"
JSON = "application/json"


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
