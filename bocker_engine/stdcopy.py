"""stdcopy framing (moby pkg/stdcopy): how attach, logs and exec multiplex stdout and stderr."""

from __future__ import annotations

import struct

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
