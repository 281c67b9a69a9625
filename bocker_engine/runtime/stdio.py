"""Byte formats shared by the supervisor and the API: stdcopy frames and json-file log lines."""

from __future__ import annotations

import json
import struct
import time

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}

_HEADER = struct.Struct(">BxxxL")
HEADER_SIZE = _HEADER.size
# Frames are capped so that a reader never has to hold a huge payload.
MAX_FRAME = 32 * 1024


def frame(stream: int, data: bytes) -> bytes:
    """stdcopy framing (moby pkg/stdcopy): [stream, 0, 0, 0, len uint32 BE] + payload."""
    if len(data) <= MAX_FRAME:
        return _HEADER.pack(stream, len(data)) + data
    return b"".join(
        _HEADER.pack(stream, len(data[i : i + MAX_FRAME])) + data[i : i + MAX_FRAME]
        for i in range(0, len(data), MAX_FRAME)
    )


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split complete frames off `buf`; returns them and the unconsumed rest."""
    out = []
    pos = 0
    while len(buf) - pos >= HEADER_SIZE:
        stream, size = _HEADER.unpack_from(buf, pos)
        if len(buf) - pos - HEADER_SIZE < size:
            break
        out.append((stream, buf[pos + HEADER_SIZE : pos + HEADER_SIZE + size]))
        pos += HEADER_SIZE + size
    return out, buf[pos:]


def rfc3339nano(ns: int | None = None) -> str:
    """UTC time with exactly 9 fractional digits, as dockerd writes it in logs and inspect."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def parse_rfc3339(s: str) -> int:
    """RFC3339 (with or without fractional seconds, Z or offset) to unix nanoseconds."""
    import calendar
    import re

    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        raise ValueError(f"bad time {s!r}")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(sec), 0, 0, 0))
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    ns = int((frac or "0")[:9].ljust(9, "0"))
    return secs * 1_000_000_000 + ns


def log_line(stream: str, data: bytes, ns: int | None = None) -> bytes:
    """One json-file log entry: {"log": ..., "stream": ..., "time": ...}."""
    return (
        json.dumps(
            {"log": data.decode("utf-8", "replace"), "stream": stream, "time": rfc3339nano(ns)},
            ensure_ascii=False,
        ).encode()
        + b"\n"
    )
