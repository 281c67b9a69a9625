"""Attach sessions: a client's connection joined to a process's stdio in the supervisor.

Shared by container attach (hijacked or websocket) and exec start. Detach keys are the
daemon's half of dockerd's behaviour: only for a TTY session with stdin (dockerd's
copyEscapable), the sequence ends the session and leaves the process running.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from bocker_engine.api.toolkit import daemon_of, qbool
from bocker_engine.engine.container import Container
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.detach_keys import EscapeScanner, parse
from bocker_engine.logs import LogEntry
from bocker_engine.stdcopy import STREAM_IDS, frame
from bocker_engine.transport import write_or_reset


class ClientConn(Protocol):
    async def read(self) -> bytes: ...

    async def send(self, data: bytes) -> None: ...

    @property
    def gone(self) -> asyncio.Future[None]: ...


def encode_entries(batch: list[LogEntry], tty: bool, timestamps: bool) -> bytes:
    """Log entries as the stream wants them: raw for a tty, else one stdcopy frame each."""
    out = []
    for e in batch:
        data = e.timestamp().encode() + b" " + e.data if timestamps else e.data
        out.append(data if tty else frame(STREAM_IDS[e.stream], data))
    return b"".join(out)


async def pipe(
    conn: ClientConn,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stdin: bool,
    keys: bytes | None = None,
    tty: bool = False,
) -> bool:
    """Client <-> supervisor until the supervisor ends the stream (the process exited), the
    client goes away or types the detach keys (`keys`, None: not scanned). Returns whether
    the client detached.

    The end of a client's stdin closes the process's stdin (when the process wants that,
    StdinOnce, which the supervisor decides) except on a TTY: there, as in dockerd, it ends
    the session and leaves the terminal alone (`docker run -it` detaching, or a client
    hanging up, must not end the shell)."""
    detached = asyncio.Event()

    async def client_to_supervisor() -> None:
        scanner = EscapeScanner(keys) if keys and stdin else None
        while True:
            data = await conn.read()
            if not data:
                break
            if scanner is not None:
                data, hit = scanner.feed(data)
                if hit:
                    if data:
                        write_or_reset(writer, data)
                        await writer.drain()
                    detached.set()
                    return
            if stdin and data:
                write_or_reset(writer, data)
                await writer.drain()
        if tty and stdin:
            detached.set()
            return
        # Client half-closed: that is stdin EOF, nothing more.
        if not writer.is_closing() and writer.can_write_eof():
            writer.write_eof()

    async def supervisor_to_client() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await conn.send(data)

    up = asyncio.create_task(client_to_supervisor())
    down = asyncio.create_task(supervisor_to_client())
    detach = asyncio.create_task(detached.wait())
    try:
        waits: set[asyncio.Future[Any]] = {down, detach, conn.gone}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (up, down, detach):
            t.cancel()
        for t in (up, down, detach):
            with contextlib.suppress(BaseException):
                await t
    return detached.is_set()


def attach_keys(request: web.Request, tty: bool, stdin: bool) -> bytes | None:
    """The detach sequence for this attach (checked before anything is hijacked)."""
    keys = parse(request.query.get("detachKeys"), "detach")
    return keys if tty and stdin else None


class WsConn:
    """A websocket as a session's client side: messages in are stdin, output goes out as
    binary messages (dockerd since API 1.28)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type == WSMsgType.TEXT:
                return str(msg.data).encode()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                if not self._gone.done():
                    self._gone.set_result(None)
                return b""

    async def send(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    @property
    def gone(self) -> asyncio.Future[None]:
        return self._gone


Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_session(
    request: web.Request,
) -> tuple[ContainerService, Container, bool, bytes | None, Upstream | None]:
    """What both attach forms share: the container, its tty, the detach keys and, with
    `stream`, the connection to its stdio at the supervisor (dockerd's attach event)."""
    svc: ContainerService = daemon_of(request).containers
    stdin, stdout, stderr = qbool(request, "stdin"), qbool(request, "stdout"), qbool(request, "stderr")
    c = svc.get(request.match_info["id"])
    tty = bool(c.config.get("Tty"))
    keys = attach_keys(request, tty, stdin)
    upstream = None
    if qbool(request, "stream"):
        c, reader, writer = await svc.attach(c.id, stdin, stdout, stderr)
        upstream = (reader, writer)
        svc.on_event("attach", c, {})
    return svc, c, tty, keys, upstream


async def attach_ws(request: web.Request) -> web.StreamResponse:
    """GET /containers/{id}/attach/ws: the attach stream over a websocket, raw (never stdcopy
    framed, as dockerd serves it), with the same logs/stream/detachKeys parameters."""
    svc, c, tty, keys, upstream = await open_session(request)
    stdin, stdout, stderr, logs_too = (qbool(request, k) for k in ("stdin", "stdout", "stderr", "logs"))
    ws = web.WebSocketResponse()
    try:
        await ws.prepare(request)
    except BaseException:
        if upstream is not None:
            upstream[1].close()
        raise
    conn = WsConn(ws)
    try:
        if logs_too and c.logs_enabled:
            _, entries = await svc.logs(
                c.id, follow=False, tail=None, since_ns=0, until_ns=0, stdout=stdout, stderr=stderr
            )
            async for batch in entries:
                await conn.send(encode_entries(batch, True, False))
        with_stdin = stdin and bool(c.config.get("OpenStdin"))
        if upstream is not None and await pipe(conn, upstream[0], upstream[1], with_stdin, keys, tty):
            svc.on_event("detach", c, {})
    finally:
        if upstream is not None:
            upstream[1].close()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
