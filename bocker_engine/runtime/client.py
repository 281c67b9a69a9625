"""The daemon's side of the supervisor protocol (see runtime/supervisor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bocker_engine.errors import System
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.transport import write_or_reset

log = logging.getLogger(__name__)

# At most this many starts in flight at once (each on its own connection). Other requests are
# never held back by starts: a gated start waits for its "open", which must get through.
MAX_STARTS = 16
# Connections kept open for the next requests (more are opened while many are in flight).
MAX_IDLE = 8

ExitHandler = Callable[[dict[str, Any]], Awaitable[None]]
LostHandler = Callable[[], Awaitable[None]]


class StartError(Exception):
    """The process could not be started; the message is runc-like text for the client.

    `kind`: the errno name of what failed ("ENOENT", "EACCES", ...), "" for none, None when the
    supervisor did not say (one started by an older daemon); engine/start_errors.py maps it."""

    def __init__(self, msg: str, kind: str | None = None) -> None:
        super().__init__(msg)
        self.kind = kind


class SupervisorClient:
    def __init__(self, root: str) -> None:
        self.root = root
        self.sock = os.path.join(root, "supervisor.sock")
        # Requests go over a small pool of connections, one request at a time on each: the
        # supervisor serves its connections concurrently, so a start (which waits for the
        # container's init to exec) does not hold up the starts and kills behind it.
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._start_slots = asyncio.Semaphore(MAX_STARTS)
        self._connected = False
        # Whether the supervisor holds a start at its gate (spec.gate); one started by an older
        # daemon may not, and would let the process run before its network is complete.
        self.gates = False
        self._events_task: asyncio.Task[None] | None = None
        self._on_exit: ExitHandler | None = None
        self._on_lost: LostHandler | None = None
        self._closing = False
        self.spawned = False

    async def connect(self, on_exit: ExitHandler, on_lost: LostHandler | None = None) -> None:
        """Connect to the running supervisor, or start one (it outlives the daemon)."""
        self._on_exit = on_exit
        self._on_lost = on_lost
        try:
            conn = await asyncio.open_unix_connection(self.sock)
        except (FileNotFoundError, ConnectionRefusedError):
            await self._spawn()
            conn = await asyncio.open_unix_connection(self.sock)
        self._idle.append(conn)
        self._connected = True
        self.gates = "gate" in (await self.request("features")).get("features", [])
        er, ew = await asyncio.open_unix_connection(self.sock)
        ew.write(b'{"op": "events"}\n')
        await ew.drain()
        self._events_task = asyncio.create_task(self._events(er, ew))

    async def _spawn(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bocker_engine.runtime.supervisor",
            "--root",
            self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise System(f"the container supervisor did not start; see {self.root}/supervisor.log")
        self.spawned = True
        # It is a daemon of its own from here on; asyncio reaps it if it exits while we run.
        self._proc = proc

    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    if not self._closing:
                        log.error("lost the connection to the container supervisor; starting a new one")
                        asyncio.get_running_loop().create_task(self._recover())
                    return
                event = json.loads(line)
                if event.get("event") == "exit" and self._on_exit is not None:
                    try:
                        await self._on_exit(event)
                    except Exception:
                        log.exception("handling exit of %s", event.get("id"))
        finally:
            writer.close()

    async def _recover(self) -> None:
        """The supervisor died: its containers lost their stdio and exit reports; let the
        engine settle them, then start a new supervisor for what comes next."""
        self._disconnect()
        if self._on_lost is not None:
            try:
                await self._on_lost()
            except Exception:
                log.exception("settling containers after the supervisor died")
        for attempt in range(50):
            try:
                assert self._on_exit is not None
                await self.connect(self._on_exit, self._on_lost)
                return
            except (OSError, System):
                await asyncio.sleep(min(0.1 * (attempt + 1), 2))
        log.error("could not start a new container supervisor")

    def _disconnect(self) -> None:
        self._connected = False
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        if op == "start":
            async with self._start_slots:
                return await self._request(op, args)
        return await self._request(op, args)

    async def _request(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if not self._connected:
            raise System("not connected to the container supervisor")
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                reader, writer = await asyncio.open_unix_connection(self.sock)
            except OSError as e:
                raise System(f"cannot reach the container supervisor: {e}") from None
        try:
            write_or_reset(writer, json.dumps({"op": op, **args}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        except ConnectionError:
            writer.close()
            raise System("the container supervisor went away") from None
        except BaseException:
            # Cancelled or broken halfway: its answer may still come, so the connection cannot
            # carry another request.
            writer.close()
            raise
        if not line:
            writer.close()
            raise System("the container supervisor went away")
        if self._connected and len(self._idle) < MAX_IDLE:
            self._idle.append((reader, writer))
        else:
            writer.close()
        resp: dict[str, Any] = json.loads(line)
        return resp

    async def start(self, spec: ProcessSpec) -> tuple[int, int]:
        resp = await self.request("start", spec=spec.to_json())
        if "error" in resp:
            raise StartError(resp["error"], resp.get("kind"))
        return int(resp["pid"]), int(resp["started_at"])

    async def open_gate(self, token: str, ok: bool) -> None:
        """Let a start made with spec.gate = token exec its process (ok), or abandon it."""
        await self.request("open", gate=token, ok=ok)

    async def kill(self, id: str, signal: int) -> bool:
        resp = await self.request("kill", id=id, signal=signal)
        return "error" not in resp

    async def resize(self, id: str, h: int, w: int) -> None:
        await self.request("resize", id=id, h=h, w=w)

    async def forget(self, id: str) -> None:
        await self.request("forget", id=id)

    async def list_procs(self) -> list[dict[str, Any]]:
        resp = await self.request("list")
        procs: list[dict[str, Any]] = resp.get("procs", [])
        return procs

    async def attach(
        self, id: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(self.sock, limit=1 << 20)
        writer.write(
            json.dumps({"op": "attach", "id": id, "stdin": stdin, "stdout": stdout, "stderr": stderr}).encode() + b"\n"
        )
        await writer.drain()
        await reader.readline()
        return reader, writer

    async def close(self, shutdown: bool) -> None:
        self._closing = True
        if shutdown and self._connected:
            with contextlib.suppress(Exception):
                await self.request("shutdown")
            # Wait for it to go, so that a new daemon does not find a dying socket.
            for _ in range(500):
                if not os.path.exists(self.sock):
                    break
                await asyncio.sleep(0.01)
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(BaseException):
                await self._events_task
        self._disconnect()
        proc = getattr(self, "_proc", None)
        if proc is not None and shutdown:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
