"""Writing to a transport that may be closed, the same under uvloop and asyncio.

asyncio drops a write to a closed transport (and the next drain fails with ConnectionResetError);
uvloop raises RuntimeError ("the handler is closed") from the write itself. Callers expect
the former, as an OSError they already handle.
"""

from __future__ import annotations

import asyncio


def write_or_reset(out: asyncio.WriteTransport | asyncio.StreamWriter, data: bytes) -> None:
    if out.is_closing():
        raise ConnectionResetError("connection lost")
    out.write(data)
