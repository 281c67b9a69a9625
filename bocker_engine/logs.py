"""Container log files: the two formats (json-file, local), their rotated sets, and the reader
(tail, since/until, follow across rotations). The supervisor writes them (runtime/logwriter.py).

Files as dockerd names them: json-file `<dir>/<id>-json.log`, local `<dir>/local-logs/container.log`;
rotated ones get `.1`, `.2`, ... (`.1` the newest), gzipped as `.N.gz` with `compress`. Every
rotated file is compressed, `.1` included, as dockerd 20.10 does (checked against it): the writer
renames the live file to `.1` and compresses it in a thread into `.1.gz` (temp name, rename,
then unlink `.1`), so for a moment `.1` may exist uncompressed; the reader takes whichever exists.

json-file: one {"log","stream"[,"attrs"],"time"} object per line, exactly as dockerd writes it.
local: dockerd's compact format, each entry a protobuf `LogEntry` (source=1, time_nano=2, line=3,
partial=4) framed by its length as a big-endian uint32 before and after (so the file can be
walked backwards for `--tail`); lines are stored without their newline, `partial` marks a piece of
a longer line.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from bocker_engine.timefmt import parse_rfc3339, rfc3339nano

FOLLOW_POLL = 0.05
_CHUNK = 64 * 1024
_READ = 1 << 20


def log_line(stream: str, data: bytes, ns: int | None = None, attrs: dict[str, str] | None = None) -> bytes:
    """One json-file log entry: {"log": ..., "stream": ..., ["attrs": ...,] "time": ...}."""
    obj: dict[str, object] = {"log": data.decode("utf-8", "replace"), "stream": stream}
    if attrs:
        obj["attrs"] = dict(sorted(attrs.items()))
    obj["time"] = rfc3339nano(ns)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class LogEntry:
    stream: str
    data: bytes
    time: str  # RFC3339 as written ("" when ns is known); parsed only when a filter or `-t` needs it
    ns: int = -1

    @property
    def time_ns(self) -> int:
        if self.ns < 0:
            self.ns = parse_rfc3339(self.time)
        return self.ns

    def timestamp(self) -> str:
        """RFC3339 with exactly 9 fractional digits, as `docker logs -t` prints it."""
        t = self.time
        if len(t) == 30 and t[19] == "." and t.endswith("Z"):
            return t
        return rfc3339nano(self.time_ns)


# ---- formats -------------------------------------------------------------------------------


class Format:
    """How records are framed in a file: parse whole records, count them, find the tail."""

    name = ""

    def parse(self, buf: bytes) -> tuple[list[LogEntry], int]:
        """The entries of the complete records at the start of buf, and the bytes they took."""
        raise NotImplementedError

    def count(self, buf: bytes) -> tuple[int, int]:
        """How many complete records buf starts with, and the bytes they took."""
        raise NotImplementedError

    def tail_start(self, fh: IO[bytes], n: int) -> tuple[int, int]:
        """Offset in a seekable file where its last n records start, and how many there are (<= n)."""
        raise NotImplementedError


class JsonFormat(Format):
    name = "json-file"

    def parse(self, buf: bytes) -> tuple[list[LogEntry], int]:
        end = buf.rfind(b"\n") + 1
        if not end:
            return [], 0
        return _parse_batch([ln for ln in buf[: end - 1].split(b"\n") if ln]), end

    def count(self, buf: bytes) -> tuple[int, int]:
        end = buf.rfind(b"\n") + 1
        return buf.count(b"\n", 0, end), end

    def tail_start(self, fh: IO[bytes], n: int) -> tuple[int, int]:
        fh.seek(0, os.SEEK_END)
        end = pos = fh.tell()
        newlines = 0
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            # Every record ends with a newline; the (n+1)th newline from the end precedes the tail.
            i = len(block)
            while True:
                i = block.rfind(b"\n", 0, i)
                if i < 0:
                    break
                if pos + i != end - 1:
                    newlines += 1
                    if newlines == n:
                        return pos + i + 1, n
        return 0, newlines + (1 if end else 0)


class LocalFormat(Format):
    name = "local"

    def parse(self, buf: bytes) -> tuple[list[LogEntry], int]:
        out: list[LogEntry] = []
        p = 0
        n = len(buf)
        while p + 4 <= n:
            size = int.from_bytes(buf[p : p + 4], "big")
            if p + size + 8 > n:
                break
            e = decode_local(buf[p + 4 : p + 4 + size])
            if e is not None:
                out.append(e)
            p += size + 8
        return out, p

    def count(self, buf: bytes) -> tuple[int, int]:
        p = records = 0
        n = len(buf)
        while p + 4 <= n:
            size = int.from_bytes(buf[p : p + 4], "big")
            if p + size + 8 > n:
                break
            p += size + 8
            records += 1
        return records, p

    def tail_start(self, fh: IO[bytes], n: int) -> tuple[int, int]:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        found = 0
        while found < n and pos >= 8:
            fh.seek(pos - 4)
            size = int.from_bytes(fh.read(4), "big")
            if size + 8 > pos:
                break  # not a frame: keep what was walked
            pos -= size + 8
            found += 1
        return pos, found


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SOURCE = {"stdout": b"\x0a\x06stdout", "stderr": b"\x0a\x06stderr"}


def encode_local(stream: str, line: bytes, ns: int, partial: bool) -> bytes:
    """One framed `local` record (protobuf LogEntry between two big-endian lengths)."""
    body = b"".join(
        (_SOURCE[stream], b"\x10", _varint(ns), b"\x1a", _varint(len(line)), line, b"\x20\x01" if partial else b"")
    )
    size = struct.pack(">I", len(body))
    return size + body + size


def decode_local(msg: bytes) -> LogEntry | None:
    """A protobuf LogEntry: the fields this engine (and dockerd) writes; others are skipped."""
    p, n = 0, len(msg)
    source, line, ns, partial = "stdout", b"", 0, False
    try:
        while p < n:
            key, p = _read_varint(msg, p)
            field, wire = key >> 3, key & 7
            if wire == 0:
                v, p = _read_varint(msg, p)
                if field == 2:
                    ns = v
                elif field == 4:
                    partial = bool(v)
            elif wire == 2:
                size, p = _read_varint(msg, p)
                val = msg[p : p + size]
                p += size
                if field == 1:
                    source = val.decode("utf-8", "replace")
                elif field == 3:
                    line = val
            elif wire == 1:
                p += 8
            elif wire == 5:
                p += 4
            else:
                return None
    except IndexError:
        return None
    return LogEntry(source, line if partial else line + b"\n", "", ns)


def _read_varint(buf: bytes, p: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[p]
        p += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, p
        shift += 7


FORMATS: dict[str, Format] = {"json-file": JsonFormat(), "local": LocalFormat()}


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


# ---- the set of files ----------------------------------------------------------------------


def rotated(path: str) -> list[tuple[int, str]]:
    """The rotated files of `path`, newest (.1) first: (index, the name that exists now)."""
    d, base = os.path.split(path)
    pat = re.compile(re.escape(base) + r"\.(\d+)(\.gz)?$")
    found: dict[int, str] = {}
    try:
        names = os.listdir(d or ".")
    except FileNotFoundError:
        return []
    for name in names:
        m = pat.match(name)
        if m:
            idx = int(m.group(1))
            # While `.1` is being compressed both exist: the .gz only appears once complete.
            if idx not in found or m.group(2):
                found[idx] = os.path.join(d, name)
    return sorted(found.items())


def _open_rotated(name: str) -> IO[bytes] | None:
    """Open a rotated file; it may have been compressed (or rotated on) since it was listed."""
    for cand in (name,) if name.endswith(".gz") else (name, name + ".gz"):
        try:
            if cand.endswith(".gz"):
                return cast(IO[bytes], gzip.GzipFile(cand, "rb"))
            return open(cand, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
    return None


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while True:
        data = fh.read(_READ)
        if not data:
            return
        yield data


def _count_records(fh: IO[bytes], fmt: Format) -> int:
    total, buf = 0, b""
    for data in _chunks(fh):
        buf += data
        n, used = fmt.count(buf)
        total += n
        buf = buf[used:]
    return total


def _skip_records(fh: IO[bytes], fmt: Format, skip: int) -> bytes:
    """Read past `skip` records; returns what was read beyond them."""
    buf = b""
    while skip > 0:
        data = fh.read(_READ)
        if not data:
            return b""
        buf += data
        n, used = fmt.count(buf)
        if n <= skip:
            skip -= n
            buf = buf[used:]
            continue
        # Fewer to skip than this buffer holds: walk record by record.
        return buf[_first_records(buf, fmt, skip) :]
    return buf


def _first_records(buf: bytes, fmt: Format, n: int) -> int:
    """Bytes taken by the first n records of buf (which holds more than n)."""
    p = 0
    for _ in range(n):
        p = buf.index(b"\n", p) + 1 if isinstance(fmt, JsonFormat) else p + int.from_bytes(buf[p : p + 4], "big") + 8
    return p


@dataclass
class _Part:
    name: str  # a rotated file's name, or "" for the live file (read through the pinned fd)
    skip: int = 0  # records to skip (compressed files)
    offset: int = 0  # byte offset to start at (uncompressed files)


def _plan(path: str, live: IO[bytes] | None, fmt: Format, tail: int | None) -> list[_Part]:
    """Which files to read, oldest first, and where to start in each for `tail`."""
    older = rotated(path)  # newest first
    if tail is None or tail < 0:
        parts = [_Part(name) for _, name in reversed(older)]
        return [*parts, _Part("")] if live is not None else parts
    want = tail
    parts = []
    if live is not None:
        off, found = fmt.tail_start(live, want)
        parts.append(_Part("", offset=off))
        want -= found
    for _, name in older:
        if want <= 0:
            break
        fh = _open_rotated(name)
        if fh is None:
            continue
        with fh:
            if isinstance(fh, gzip.GzipFile):
                total = _count_records(fh, fmt)
                parts.append(_Part(name, skip=max(0, total - want)))
                want -= total
            else:
                off, found = fmt.tail_start(fh, want)
                parts.append(_Part(name, offset=off))
                want -= found
    return list(reversed(parts))


class _Filter:
    def __init__(self, since_ns: int, until_ns: int) -> None:
        self.since_ns, self.until_ns = since_ns, until_ns
        self.done = False

    def __call__(self, batch: list[LogEntry]) -> list[LogEntry]:
        if self.since_ns:
            batch = [e for e in batch if e.time_ns >= self.since_ns]
        if self.until_ns:
            kept = [e for e in batch if e.time_ns <= self.until_ns]
            if len(kept) < len(batch):
                self.done = True
                return kept
        return batch


def _read_part(part: _Part, live: IO[bytes] | None, fmt: Format) -> Iterator[list[LogEntry]]:
    if part.name:
        fh = _open_rotated(part.name)
        if fh is None:
            return
    else:
        assert live is not None
        fh = live
    try:
        if isinstance(fh, gzip.GzipFile):
            buf = _skip_records(fh, fmt, part.skip)
        else:
            fh.seek(part.offset)
            buf = b""
        for data in itertools.chain([b""], _chunks(fh)):  # what skipping read first counts too
            buf += data
            batch, used = fmt.parse(buf)
            buf = buf[used:]
            if batch:
                yield batch
    finally:
        if fh is not live:
            fh.close()


def _pin(path: str) -> IO[bytes] | None:
    """Open the live file such that the rotated files listed after it are all older than it."""
    for _ in range(10):
        try:
            fh = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        except FileNotFoundError:
            pass
        fh.close()  # rotated between the two: try again
    return None


def _open_identified(name: str) -> tuple[IO[bytes], int] | None:
    """Open a rotated file and tell which live file it was: its inode, or for a compressed one
    the inode the writer recorded in the gzip header (runtime/logwriter.compress_file)."""
    for cand in (name,) if name.endswith(".gz") else (name, name + ".gz"):
        try:
            raw = open(cand, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        if not cand.endswith(".gz"):
            return raw, os.fstat(raw.fileno()).st_ino
        ino = -1
        head = raw.read(12)
        if len(head) == 12 and head[:2] == b"\x1f\x8b" and head[3] & 4:
            extra = raw.read(int.from_bytes(head[10:12], "little"))
            try:
                ino = int(json.loads(extra).get("inode", -1))
            except (ValueError, AttributeError, TypeError):
                pass
        raw.seek(0)
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), ino
    return None


def _newer_than(path: str, ino: int) -> list[IO[bytes]]:
    """The rotated files written after the one with inode `ino` (a follower catching up after a
    rotation), opened at once (renames go on meanwhile), oldest first. Normally ours is `.1` and
    there is nothing in between; a follower so far behind that its file is gone goes on with the
    live file (dockerd loses lines then too)."""
    between: list[IO[bytes]] = []
    for _, name in rotated(path):
        got = _open_identified(name)
        if got is None:
            continue
        if got[1] == ino:
            got[0].close()
            return list(reversed(between))
        between.append(got[0])
    for fh in between:
        fh.close()
    return []


def _read_all(fh: IO[bytes], fmt: Format) -> list[LogEntry]:
    with fh:
        out, buf = [], b""
        for data in _chunks(fh):
            buf += data
            batch, used = fmt.parse(buf)
            buf = buf[used:]
            out += batch
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
    fmt: str = "json-file",
) -> AsyncIterator[list[LogEntry]]:
    """Batches of entries in order across the rotated files; with `follow`, keeps reading the
    live file (and through its rotations) until the container stops."""
    if tail == 0 and not follow:
        return
    form = FORMATS[fmt]
    keep = _Filter(since_ns, until_ns)
    live = _pin(path)
    try:
        if tail != 0:
            for part in _plan(path, live, form, tail):
                for batch in _read_part(part, live, form):
                    batch = keep(batch)
                    if batch:
                        yield batch
                    if keep.done:
                        return
                    await asyncio.sleep(0)  # a big file is read in many steps, not in one
        elif live is not None:
            live.seek(0, os.SEEK_END)
        if not follow:
            return
        async for batch in _follow(path, live, form, keep, running, changed):
            yield batch
    finally:
        if live is not None:
            live.close()


async def _follow(
    path: str,
    live: IO[bytes] | None,
    form: Format,
    keep: _Filter,
    running: Callable[[], bool],
    changed: Callable[[], asyncio.Event] | None,
) -> AsyncIterator[list[LogEntry]]:
    buf = b""
    try:
        while True:
            # Checked before reading: once stopped, the supervisor has flushed everything, so
            # this read is the last one that can find data.
            stopped = not running()
            if live is None:
                live = _pin(path)
            data = live.read() if live is not None else b""
            if data:
                buf += data
                batch, used = form.parse(buf)
                buf = buf[used:]
                batch = keep(batch)
                if batch:
                    yield batch
                if keep.done:
                    return
                continue
            if live is not None:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    st = None  # between the writer's rename and its new file: look again soon
                if st is not None and st.st_ino != os.fstat(live.fileno()).st_ino:
                    # Rotated: the old file is complete (the writer renames after its last
                    # write to it); finish it, then the files between it and the new live one.
                    ino = os.fstat(live.fileno()).st_ino
                    buf += live.read()
                    batch, _ = form.parse(buf)
                    buf = b""
                    for fh in _newer_than(path, ino):
                        batch += _read_all(fh, form)
                    live.close()
                    live = None
                    batch = keep(batch)
                    if batch:
                        yield batch
                    if keep.done:
                        return
                    continue
                if st is not None and st.st_size < live.tell():
                    live.seek(0)  # truncated in place (max-file=1)
                    buf = b""
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
    finally:
        if live is not None:
            live.close()
