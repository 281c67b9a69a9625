"""The daemon's supervisor client against a scripted supervisor socket: requests do not queue
behind a slow one (a start waits for the container's init), and a request abandoned halfway
never leaves its answer for the next request to read."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bocker_engine.runtime.client import MAX_STARTS, SupervisorClient


class Scripted:
    """Answers each connection's requests in order, like the supervisor; "start" waits for
    `release` (a container's init taking its time)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req: dict[str, Any] = json.loads(line)
                if req["op"] == "events":
                    await reader.read()
                    return
                if req["op"] == "start":
                    self.started.set()
                    await self.release.wait()
                    resp: dict[str, Any] = {"pid": 42, "started_at": 1}
                else:
                    resp = {"procs": [{"id": req["op"]}]}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[tuple[SupervisorClient, Scripted]]:
    root = tempfile.mkdtemp(prefix="bocker-supclient-")
    script = Scripted()
    server = await asyncio.start_unix_server(script.handle, os.path.join(root, "supervisor.sock"))

    async def on_exit(_: dict[str, Any]) -> None:
        return None

    c = SupervisorClient(root)
    await c.connect(on_exit)
    try:
        yield c, script
    finally:
        script.release.set()
        await c.close(shutdown=False)
        server.close()
        await server.wait_closed()
        os.unlink(os.path.join(root, "supervisor.sock"))
        os.rmdir(root)


async def test_a_request_does_not_wait_for_a_slow_start(client: tuple[SupervisorClient, Scripted]) -> None:
    c, script = client
    start = asyncio.create_task(c.request("start"))
    await asyncio.wait_for(script.started.wait(), 10)
    # With one connection shared under a lock, this would wait for the start to end.
    assert await asyncio.wait_for(c.list_procs(), 10) == [{"id": "list"}]
    assert not start.done()
    script.release.set()
    assert await asyncio.wait_for(start, 10) == {"pid": 42, "started_at": 1}


async def test_an_abandoned_request_leaves_no_answer_behind(client: tuple[SupervisorClient, Scripted]) -> None:
    c, script = client
    start = asyncio.create_task(c.request("start"))
    await asyncio.wait_for(script.started.wait(), 10)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    script.release.set()  # the start's answer now arrives, on a connection no one reads
    for _ in range(3):
        assert await asyncio.wait_for(c.list_procs(), 10) == [{"id": "list"}]


async def test_an_open_gets_through_while_every_start_slot_waits(client: tuple[SupervisorClient, Scripted]) -> None:
    # Gated starts each wait for their "open": opens queued behind the starts would deadlock.
    c, script = client
    starts = [asyncio.create_task(c.request("start")) for _ in range(MAX_STARTS + 2)]
    await asyncio.wait_for(script.started.wait(), 10)
    assert await asyncio.wait_for(c.request("open", gate="t", ok=True), 10) == {"procs": [{"id": "open"}]}
    script.release.set()
    for s in starts:
        assert await asyncio.wait_for(s, 10) == {"pid": 42, "started_at": 1}
