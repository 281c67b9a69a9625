"""The json-file log driver's reader: tail, since/until, follow.

The supervisor writes `<container dir>/<id>-json.log`, one {"log","stream","time"} object per
line, exactly as dockerd does, so tools that read dockerd's logs read ours.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bocker_engine.runtime.stdio import parse_rfc3339

FOLLOW_POLL = 0.05
_CHUNK = 64 * 1024


@dataclass
class LogEntry:
    stream: str
    data: bytes
    time_ns: int


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


def _parse(line: bytes) -> LogEntry | None:
    try:
        obj = json.loads(line)
        return LogEntry(obj.get("stream", "stdout"), obj.get("log", "").encode(), parse_rfc3339(obj["time"]))
    except (ValueError, KeyError, TypeError):
        return None


async def read(
    path: str,
    *,
    follow: bool,
    tail: int | None,
    since_ns: int = 0,
    until_ns: int = 0,
    running: Callable[[], bool],
    changed: Callable[[], asyncio.Event] | None = None,
) -> AsyncIterator[LogEntry]:
    """Entries in order; with `follow`, keeps reading until the container stops."""
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
        for line in lines:
            entry = _parse(line)
            if entry is None:
                continue
            if since_ns and entry.time_ns < since_ns:
                continue
            if until_ns and entry.time_ns > until_ns:
                return
            yield entry
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
