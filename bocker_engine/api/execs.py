"""/containers/{id}/exec and /exec/...: create, start (attached or detached), inspect, resize."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from bocker_engine.api.attach import pipe
from bocker_engine.api.streams import hijack, stream_content_type
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qint
from bocker_engine.api.validation import read_body
from bocker_engine.engine import detach_keys
from bocker_engine.engine.execs import ExecService, console_size_of
from bocker_engine.errors import EngineError, InvalidParameter
from bocker_engine.stdcopy import STDOUT, frame

# After the output ends, how long the stream waits for the exit to be recorded: the CLI reads
# ExitCode as soon as the stream closes, and the exit travels on another connection.
EXIT_WAIT = 10.0


def _execs(request: web.Request) -> ExecService:
    execs: ExecService = daemon_of(request).containers.execs
    return execs


async def _body(request: web.Request, operation: str) -> dict[str, Any]:
    body = await read_body(request, operation, {})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid exec config: must be a JSON object")
    return body


async def create(request: web.Request) -> web.StreamResponse:
    body = await _body(request, "ContainerExec")
    ex = _execs(request).create(request.match_info["id"], body)
    return json_response({"Id": ex.id}, status=201)


async def _shielded_start(execs: ExecService, *args: Any) -> None:
    """The start runs to its end even if the client goes away meanwhile: the supervisor
    starts the process whatever happens to this request."""
    task = asyncio.ensure_future(execs.start(*args))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


async def start(request: web.Request) -> web.StreamResponse:
    execs = _execs(request)
    body = await _body(request, "ExecStart")
    size = console_size_of(body.get("ConsoleSize"))
    ex, c = execs.check_start(request.match_info["id"])
    if body.get("Detach"):
        await _shielded_start(execs, ex, c, size)
        return web.Response(status=200)
    keys = detach_keys.parse(ex.detach_keys, "escape") if ex.tty and ex.attach_stdin else None
    reader, writer = await execs.attach(ex)
    try:
        resp, conn = await hijack(request, stream_content_type(request, ex.tty))
    except BaseException:
        writer.close()
        raise
    try:
        try:
            await _shielded_start(execs, ex, c, size)
        except EngineError as e:
            # dockerd writes a failed start into the stream, as output; ExitCode says the rest.
            msg = (e.message + "\r\n").encode()
            await conn.send(msg if ex.tty else frame(STDOUT, msg))
            return resp
        detached = await pipe(conn, reader, writer, ex.attach_stdin, keys, ex.tty)
        if not detached and not conn.gone.done():
            await execs.wait_done(ex, EXIT_WAIT)
    finally:
        writer.close()
        conn.close()
    return resp


async def inspect(request: web.Request) -> web.StreamResponse:
    execs = _execs(request)
    ex = execs.get(request.match_info["id"])
    c = execs.containers.containers.get(ex.container_id)
    user = (c.config.get("User") or "") if c is not None else ""
    return json_response(ex.inspect(user))


async def resize(request: web.Request) -> web.StreamResponse:
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    await _execs(request).resize(request.match_info["id"], h, w)
    return web.Response(status=200)


def setup(router: Router) -> None:
    router.add("POST", "/containers/{id}/exec", create)
    router.add("POST", "/exec/{id}/start", start)
    router.add("POST", "/exec/{id}/resize", resize)
    router.add("GET", "/exec/{id}/json", inspect)
