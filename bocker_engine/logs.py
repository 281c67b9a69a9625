"""The json-file log driver: the line format (written by the supervisor) and the reader: tail,
since/until, follow.

The supervisor writes `<container dir>/<id>-json.log`, one {"log","stream","time"} object per
line, exactly as dockerd does, so tools that read dockerd's logs read ours.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bocker_engine.timefmt import parse_rfc3339, rfc3339nano

FOLLOW_POLL = 0.05
_CHUNK = 64 * 1024



def log_line(stream: str, data: bytes, ns: int | None = None) -> bytes:
    """One json-file log entry: {"log": ..., "stream": ..., "time": ...}."""
    return (
        json.dumps(
            {"log": data.decode("utf-8", "replace"), "stream": stream, "time": rfc3339nano(ns)},
            ensure_ascii=False,
        ).encode()
        + b"\n"
    )


@dataclass(slots=True)
class LogEntry:
    stream: str
    data: bytes
    time: str  # RFC3339 as written; parsed only when a filter or `-t` needs it

    @property
    def time_ns(self) -> int:
        return parse_rfc3339(self.time)

    def timestamp(self) -> str:
        """RFC3339 with exactly 9 fractional digits, as `docker logs -t` prints it."""
        t = self.time
        if len(t) == 30 and t[19] == "." and t.endswith("Z"):
            return t
        return rfc3339nano(self.time_ns)


def _tail_offset(f: os.PathLike[str] | str, n: int) -> int:
    """Byte offset where the last `n` lines of the file start (reads backwards)."""
    with open(f, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = pos = fh.tell()
        newlines = 0
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            # The file ends with a newline; the (n+1)th newline from the end precedes the tail.
            for i in range(len(block) - 1, -1, -1):
                if block[i] == 0x0A and pos + i != end - 1:
                    newlines += 1
                    if newlines == n:
                        return pos + i + 1
        return 0


def _parse_batch(lines: list[bytes]) -> list[LogEntry]:
    """Decode many lines in one json.loads call (the per-call overhead dominates otherwise)."""
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        objs = []
        for line in lines:  # a torn or foreign line: skip it, keep the rest
            try:
                objs.append(json.loads(line))
            except ValueError:
                continue
    out = []
    for obj in objs:
        if isinstance(obj, dict) and "time" in obj:
            out.append(LogEntry(obj.get("stream", "stdout"), obj.get("log", "").encode(), obj["time"]))
    return out


async def read(
    path: str,
    *,
    follow: bool,
    tail: int | None,
    since_ns: int = 0,
    until_ns: int = 0,
    running: Callable[[], bool],
    changed: Callable[[], asyncio.Event] | None = None,
) -> AsyncIterator[list[LogEntry]]:
    """Batches of entries in order; with `follow`, keeps reading until the container stops."""
    if tail == 0 and not follow:
        return
    try:
        start = 0 if tail is None or tail < 0 else _tail_offset(path, tail) if tail > 0 else os.path.getsize(path)
    except FileNotFoundError:
        start = 0
    pos = start
    buf = b""
    while True:
        # Checked before reading: once stopped, the supervisor has flushed everything, so
        # this read is the last one that can find data.
        stopped = follow and not running()
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        pos += len(data)
        buf += data
        lines = buf.split(b"\n")
        buf = lines.pop()
        batch = _parse_batch([ln for ln in lines if ln]) if lines else []
        if since_ns:
            batch = [e for e in batch if e.time_ns >= since_ns]
        if until_ns:
            kept = [e for e in batch if e.time_ns <= until_ns]
            if len(kept) < len(batch):
                if kept:
                    yield kept
                return
        if batch:
            yield batch
        if not follow:
            return
        if data:
            continue
        if stopped:
            return
        if changed is not None:
            try:
                await asyncio.wait_for(changed().wait(), FOLLOW_POLL)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(FOLLOW_POLL)
