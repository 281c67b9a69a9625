"""Streams over HTTP: hijacked connections (attach, exec), JSON message streams, flushing.

Hijacking in aiohttp, solved once here. dockerd answers `Upgrade: tcp` with `101 UPGRADED`
and then uses the socket as a raw bidirectional pipe, where a client half-close means "stdin
ended" and not "goodbye". aiohttp 3.14 cannot do that by itself: its C parser only knows
`Upgrade: websocket` (so stdin bytes would be parsed as a new request), and its protocol
closes the transport on EOF. So, once the 101 header block is written (alone, in its own
write: docker-py reads the socket under a buffered reader and loses bytes that share a recv
with the headers), we take the transport away from aiohttp with `set_protocol()`. From then
on a small protocol of ours receives the bytes, treats EOF as stdin EOF (keeping the
transport open), and hands connection loss back to aiohttp's handler so that it cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bocker_engine.api.toolkit import api_version, stream_response
from bocker_engine.errors import EngineError, message_of
from bocker_engine.progress import Message

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def stream_content_type(request: web.Request, tty: bool) -> str:
    return MULTIPLEXED if not tty and api_version(request) >= (1, 42) else RAW


async def request_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """A request body as it arrives (chunked uploads: import, load, cp)."""
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return
        yield chunk


def flush_headers(request: web.Request) -> None:
    """Send the status line and headers now (wait, logs, events: clients block on them)."""
    request.writer.send_headers()


class _HijackProtocol(asyncio.Protocol):
    def __init__(self, original: asyncio.BaseProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.original = original
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = loop.create_future()
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        if self.queue.qsize() > 64 and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return True  # half-close: keep writing to the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(None)
        with contextlib.suppress(Exception):
            self.original.connection_lost(exc)

    def pause_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.original.pause_writing()

    def resume_writing(self) -> None:
        with contextlib.suppress(Exception):
            self.original.resume_writing()


class Hijacked:
    """The raw connection after a 101: read stdin, write output, close."""

    def __init__(self, request: web.Request, transport: asyncio.Transport, proto: _HijackProtocol) -> None:
        self.request = request
        self.transport = transport
        self.proto = proto

    async def read(self) -> bytes:
        """Next chunk of client input; b"" once the client has half-closed (or gone)."""
        data = await self.proto.queue.get()
        if self.proto.paused and self.proto.queue.qsize() < 16:
            self.proto.paused = False
            self.transport.resume_reading()
        return data or b""

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    async def drain(self) -> None:
        # The transport's original protocol (aiohttp's) gets pause/resume; poll cheaply.
        while not self.transport.is_closing() and self.transport.get_write_buffer_size() > (1 << 20):
            await asyncio.sleep(0.005)

    @property
    def gone(self) -> asyncio.Future[None]:
        return self.proto.closed

    def close(self) -> None:
        if not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write_eof()
            self.transport.close()


def wants_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() or "Upgrade" in request.headers


async def hijack(request: web.Request, content_type: str) -> tuple[web.StreamResponse, Hijacked]:
    """The connection as a raw pipe: after `101 UPGRADED` when the client asked for an
    upgrade (the CLI, docker-py), else after a plain `200 OK` with neither length nor chunking,
    as dockerd answers such a client (the stream then ends with the connection)."""
    if wants_upgrade(request):
        resp = web.StreamResponse(status=101, reason="UPGRADED")
        resp.headers["Connection"] = "Upgrade"
        resp.headers["Upgrade"] = "tcp"
    else:
        resp = stream_response(200)
        resp._length_check = False  # raw bytes until close (aiohttp's WebSocketResponse does the same)
    resp.headers["Content-Type"] = content_type
    resp.force_close()
    await resp.prepare(request)
    flush_headers(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    original = request.protocol
    proto = _HijackProtocol(original, loop)
    proto.transport = transport
    transport.set_protocol(proto)
    # Bytes aiohttp buffered after the request (a client sending stdin without waiting for
    # the 101) would sit in its parser; none of the clients we serve do that.
    return resp, Hijacked(request, transport, proto)


class JsonStream:
    """Docker's JSON message stream (pull, push, import, load, build): chunked, one object per
    line. Errors before the first message are HTTP errors; later ones go in-band, with both
    `errorDetail` (the CLI reads it) and `error` (docker-py reads it)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None
        self._pending: list[bytes] = []
        self._flush_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.resp is None:
            self.resp = stream_response(200)
            self.resp.content_type = "application/json"
            self.resp.enable_chunked_encoding()
            await self.resp.prepare(self.request)

    @property
    def started(self) -> bool:
        return self.resp is not None

    @property
    def has_output(self) -> bool:
        """A message was written or is queued: the status line is (as good as) sent."""
        return self.resp is not None or bool(self._pending)

    async def send(self, obj: dict[str, Any]) -> None:
        await self.start()
        assert self.resp is not None
        await self.resp.write(json.dumps(obj, separators=(",", ":")).encode() + b"\r\n")

    def sink(self, msg: Message) -> None:
        """A ProgressSink: queue the message and write it soon (callers are synchronous)."""
        self._pending.append(json.dumps(encode_message(msg), separators=(",", ":")).encode() + b"\r\n")
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await self.start()
        assert self.resp is not None
        while self._pending:
            batch, self._pending = b"".join(self._pending), []
            with contextlib.suppress(ConnectionError):
                await self.resp.write(batch)

    async def error(self, e: Exception) -> None:
        msg = e.message if isinstance(e, EngineError) else message_of(e) if isinstance(e, OSError) else str(e)
        await self.finish_pending()
        await self.send({"errorDetail": {"message": msg}, "error": msg})

    async def finish_pending(self) -> None:
        if self._flush_task is not None:
            await self._flush_task
        if self._pending:
            await self._flush()

    async def close(self) -> web.StreamResponse:
        await self.finish_pending()
        await self.start()
        assert self.resp is not None
        await self.resp.write_eof()
        return self.resp


def _bar(current: int, total: int) -> str:
    width = 50
    if total <= 0:
        return ""
    filled = min(width, int(width * current / total))
    arrow = "=" * max(filled - 1, 0) + (">" if filled else "") + " " * (width - filled)
    return f"[{arrow}] {_human(current)}/{_human(total)}"


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


def encode_message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if msg.error is not None:
        detail: dict[str, Any] = {"message": msg.error}
        if msg.error_code:
            detail["code"] = msg.error_code
        return {"errorDetail": detail, "error": msg.error}
    if msg.stream is not None:
        out["stream"] = msg.stream
    if msg.status is not None:
        out["status"] = msg.status
    if msg.current is not None or msg.detail:
        detail2: dict[str, Any] = {}
        if msg.current is not None:
            detail2["current"] = msg.current
        if msg.total:
            detail2["total"] = msg.total
        out["progressDetail"] = detail2
        if msg.current is not None and msg.total:
            out["progress"] = _bar(msg.current, msg.total)
    if msg.id is not None:
        out["id"] = msg.id
    if msg.aux is not None:
        out["aux"] = msg.aux
    return out
