"""/containers/...: create, start, stop, wait, logs, attach, list, inspect, remove, cp, top, update."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from bocker_engine.api.attach import attach_ws, encode_entries, open_session, pipe
from bocker_engine.api.streams import flush_headers, hijack, request_chunks, stream_content_type
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool, qint, stream_response
from bocker_engine.api.validation import read_body
from bocker_engine.engine import container_archive, container_top, container_update
from bocker_engine.engine import filters as flt
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.filters import parse_timestamp
from bocker_engine.errors import InvalidParameter

log = logging.getLogger(__name__)
# Seconds between the 101 and a replayed log (see attach).
HEADERS_FIRST = 0.05
T = TypeVar("T")


def _svc(request: web.Request) -> ContainerService:
    return daemon_of(request).containers


async def shielded(coro: Awaitable[T]) -> T:
    """Run a state change to its end even if the client disconnects meanwhile."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "ContainerCreate", {})
    name = request.query.get("name") or None
    c, warnings = await shielded(_svc(request).create(name, body))
    return json_response({"Id": c.id, "Warnings": warnings}, status=201)


async def list_(request: web.Request) -> web.StreamResponse:
    filters = flt.parse(request.query.get("filters"))
    limit = qint(request, "limit", -1) or -1
    out = await _svc(request).list_containers(qbool(request, "all"), limit, qbool(request, "size"), filters)
    return json_response(out)


async def inspect(request: web.Request) -> web.StreamResponse:
    return json_response(await _svc(request).inspect(request.match_info["id"], qbool(request, "size")))


async def start(request: web.Request) -> web.StreamResponse:
    await shielded(_svc(request).start(request.match_info["id"]))
    return web.Response(status=204)


async def stop(request: web.Request) -> web.StreamResponse:
    await shielded(_svc(request).stop(request.match_info["id"], qint(request, "t"), request.query.get("signal")))
    return web.Response(status=204)


async def restart(request: web.Request) -> web.StreamResponse:
    await shielded(_svc(request).restart(request.match_info["id"], qint(request, "t"), request.query.get("signal")))
    return web.Response(status=204)


async def kill(request: web.Request) -> web.StreamResponse:
    await _svc(request).kill(request.match_info["id"], request.query.get("signal") or "SIGKILL")
    return web.Response(status=204)


async def pause(request: web.Request) -> web.StreamResponse:
    await _svc(request).pause(request.match_info["id"])
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.StreamResponse:
    await _svc(request).unpause(request.match_info["id"])
    return web.Response(status=204)


async def remove(request: web.Request) -> web.StreamResponse:
    await shielded(_svc(request).remove(request.match_info["id"], qbool(request, "force"), qbool(request, "v")))
    return web.Response(status=204)


async def rename(request: web.Request) -> web.StreamResponse:
    await _svc(request).rename(request.match_info["id"], request.query.get("name", ""))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    result = await shielded(_svc(request).prune(flt.parse(request.query.get("filters"))))
    daemon_of(request).sources.pruned("container", result.get("SpaceReclaimed", 0))
    return json_response(result)


async def wait(request: web.Request) -> web.StreamResponse:
    condition = request.query.get("condition") or "not-running"
    fut = _svc(request).wait_future(request.match_info["id"], condition)
    resp = stream_response(200)
    resp.content_type = "application/json"
    await resp.prepare(request)
    # `docker run` sends start only once it has these headers.
    flush_headers(request)
    code, error = await _svc(request).wait_exit(request.match_info["id"], fut)
    body: dict[str, object] = {"StatusCode": code, "Error": {"Message": error} if error else None}
    import json

    await resp.write(json.dumps(body).encode() + b"\n")
    await resp.write_eof()
    return resp


def _since(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "")
    if not raw or raw == "0":
        return 0
    return int(parse_timestamp(raw) * 1e9)


async def logs(request: web.Request) -> web.StreamResponse:
    stdout, stderr = qbool(request, "stdout"), qbool(request, "stderr")
    if not stdout and not stderr:
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    tail_raw = request.query.get("tail", "all")
    tail = None if tail_raw in ("all", "") else qint(request, "tail")
    follow = qbool(request, "follow")
    timestamps = qbool(request, "timestamps")
    c, entries = await _svc(request).logs(
        request.match_info["id"],
        follow=follow,
        tail=tail,
        since_ns=_since(request, "since"),
        until_ns=_since(request, "until"),
        stdout=stdout,
        stderr=stderr,
    )
    tty = bool(c.config.get("Tty"))
    resp = stream_response(200)
    resp.content_type = stream_content_type(request, tty)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    flush_headers(request)
    async for batch in entries:
        await resp.write(encode_entries(batch, tty, timestamps))
    await resp.write_eof()
    return resp


async def attach(request: web.Request) -> web.StreamResponse:
    svc, c, tty, keys, upstream = await open_session(request)
    stdin, stdout, stderr, logs_too = (qbool(request, k) for k in ("stdin", "stdout", "stderr", "logs"))
    try:
        resp, conn = await hijack(request, stream_content_type(request, tty))
    except BaseException:
        if upstream is not None:
            upstream[1].close()
        raise
    try:
        if logs_too and c.logs_enabled:  # a driver that cannot be read has nothing to replay
            # docker-py reads the 101 through a buffered reader and then the raw socket: log
            # bytes arriving in the same read as the headers would be lost to it. The log is
            # ready at once (unlike a process's output), so let the headers go first.
            await asyncio.sleep(HEADERS_FIRST)
            _, entries = await svc.logs(
                c.id, follow=False, tail=None, since_ns=0, until_ns=0, stdout=stdout, stderr=stderr
            )
            async for batch in entries:
                conn.write(encode_entries(batch, tty, False))
        if upstream is not None and await pipe(conn, upstream[0], upstream[1], stdin, keys, tty):
            svc.on_event("detach", c, {})
    finally:
        if upstream is not None:
            upstream[1].close()
        conn.close()
    return resp


async def resize(request: web.Request) -> web.StreamResponse:
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    for name, v in (("h", h), ("w", w)):
        if not 0 <= v <= 0xFFFF:  # a terminal's size is two uint16
            raise InvalidParameter(f"invalid value for {name}: {v}")
    svc = _svc(request)
    await svc.resize(request.match_info["id"], h, w)
    svc.on_event("resize", svc.get(request.match_info["id"]), {"height": str(h), "width": str(w)})
    return web.Response(status=200)


async def changes(request: web.Request) -> web.StreamResponse:
    return json_response(await _svc(request).changes(request.match_info["id"]))


async def archive_head(request: web.Request) -> web.StreamResponse:
    st = await container_archive.stat(_svc(request), request.match_info["id"], request.query.get("path", ""))
    return web.Response(status=200, headers={container_archive.PATH_STAT_HEADER: container_archive.stat_header(st)})


async def archive_get(request: web.Request) -> web.StreamResponse:
    async with container_archive.archive(_svc(request), request.match_info["id"], request.query.get("path", "")) as (
        st,
        chunks,
    ):
        resp = stream_response(headers={container_archive.PATH_STAT_HEADER: container_archive.stat_header(st)})
        resp.content_type = "application/x-tar"
        await resp.prepare(request)
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
    return resp


async def archive_put(request: web.Request) -> web.StreamResponse:
    await container_archive.extract(
        _svc(request),
        request.match_info["id"],
        request.query.get("path", ""),
        request_chunks(request),
        no_overwrite_dir_non_dir=qbool(request, "noOverwriteDirNonDir"),
        copy_uid_gid=qbool(request, "copyUIDGID"),
    )
    return web.Response(status=200)


async def top(request: web.Request) -> web.StreamResponse:
    return json_response(
        await container_top.top(_svc(request), request.match_info["id"], request.query.get("ps_args", ""))
    )


async def update(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "ContainerUpdate", {})
    warnings = await shielded(container_update.update(_svc(request), request.match_info["id"], body))
    # dockerd answers null, not [], when there is nothing to warn about.
    return json_response({"Warnings": warnings or None})


def setup(router: Router) -> None:
    from bocker_engine.api import execs

    execs.setup(router)
    router.add("POST", "/containers/create", create)
    router.add("GET", "/containers/json", list_)
    router.add("POST", "/containers/prune", prune)
    router.add("GET", "/containers/{id}/json", inspect)
    router.add("POST", "/containers/{id}/start", start)
    router.add("POST", "/containers/{id}/stop", stop)
    router.add("POST", "/containers/{id}/restart", restart)
    router.add("POST", "/containers/{id}/kill", kill)
    router.add("POST", "/containers/{id}/pause", pause)
    router.add("POST", "/containers/{id}/unpause", unpause)
    router.add("POST", "/containers/{id}/wait", wait)
    router.add("POST", "/containers/{id}/rename", rename)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("GET", "/containers/{id}/attach/ws", attach_ws)
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("GET", "/containers/{id}/changes", changes)
    router.add("HEAD", "/containers/{id}/archive", archive_head)
    router.add("GET", "/containers/{id}/archive", archive_get)
    router.add("PUT", "/containers/{id}/archive", archive_put)
    router.add("GET", "/containers/{id}/top", top)
    router.add("POST", "/containers/{id}/update", update)
    router.add("DELETE", "/containers/{id}", remove)
