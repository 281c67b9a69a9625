"""What the supervisor keeps per process: its stdio hub (attach clients, stdin, the log) and its
state, before, during and after it runs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# Imported here, not in the child: a forked child importing it would pay for it on every start.
from bocker_engine.runtime.logwriter import LogWriter
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.stdcopy import STDERR, STDOUT, frame

READ_SIZE = 64 * 1024
# Per attach client: above this much unsent output the container's output is no longer read
# (back-pressure, lossless, like dockerd's 1 MB attach pipes) until the client drains below
# ATTACH_LOW. A client that makes no progress for ATTACH_STALL seconds is disconnected, so a
# stopped or stuck client blocks the container for a bounded time and never grows our memory.
ATTACH_HIGH = 4 << 20
ATTACH_LOW = 1 << 20
ATTACH_STALL = 5.0
# Unread stdin kept for a process that does not read it; the attach connection waits beyond.
STDIN_HIGH = 1 << 20
# After an exit, output still in the pipes is read up to this much per descriptor (a leaked
# descriptor in a still-running process must not keep the supervisor busy forever).
MAX_FINAL_DRAIN = 4 << 20


class Attach:
    def __init__(self, writer: asyncio.StreamWriter, stdin: bool, stdout: bool, stderr: bool) -> None:
        self.writer = writer
        self.stdin = stdin
        self.streams = {STDOUT: stdout, STDERR: stderr}
        self.finished = asyncio.Event()

    def send(self, stream: int, data: bytes, tty: bool) -> None:
        if not self.streams.get(stream) or self.writer.is_closing():
            return
        try:
            self.writer.write(data if tty else frame(stream, data))
        except Exception:  # a broken client must not break the container's output
            self.drop()

    def backlog(self) -> int:
        if self.writer.is_closing():
            return 0
        return self.writer.transport.get_write_buffer_size()

    def drop(self) -> None:
        """Disconnect now, discarding what it has not read (a stalled client)."""
        self.finished.set()
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    def close(self) -> None:
        self.finished.set()
        with contextlib.suppress(Exception):
            if not self.writer.is_closing():
                self.writer.close()


class StdinProtocol(asyncio.Protocol):
    """Flow control for a container's stdin pipe: attach connections wait while it is full."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()


class Proc:
    """A container's main process or an exec: its stdio hub, before, during and after it runs."""

    def __init__(self, pid_id: str) -> None:
        self.id = pid_id
        self.spec: ProcessSpec | None = None
        self.pid = 0
        self.pidfd = -1
        self.running = False
        self.started_at = 0
        self.finished_at = 0
        self.exit_code: int | None = None
        self.attaches: set[Attach] = set()
        self.pending_stdin = bytearray()
        self.pending_eof = False
        self.stdin_closed = False
        self.stdin_transport: asyncio.WriteTransport | None = None
        self.stdin_proto: StdinProtocol | None = None
        self.pty_in = bytearray()  # stdin for the pty master that it could not take yet
        self.readers: dict[int, int] = {}  # fd -> stream
        self.output_paused = False
        # Set while an exit waits for the output to end: woken when the last reader closes
        # or the output is paused (no polling between the exit and its delivery).
        self.output_waiter: asyncio.Future[None] | None = None
        self.master = -1
        self.log: LogWriter | None = None
        self.wait_status: int | None = None

    def wake_output_waiter(self) -> None:
        if self.output_waiter is not None and not self.output_waiter.done():
            self.output_waiter.set_result(None)

    @property
    def tty(self) -> bool:
        return bool(self.spec and self.spec.tty)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "running": self.running,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
