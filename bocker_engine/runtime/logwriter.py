"""The supervisor's side of container logs: turns a container's output into log entries.

Lives apart from supervisor.py so the log drivers (rotation, formats) evolve without touching
the process management.
"""

from __future__ import annotations

import time

from bocker_engine.logs import log_line
from bocker_engine.stdcopy import STDERR, STDOUT

# A line longer than this is logged in pieces (Docker's json-file does the same at 16 KiB).
MAX_LOG_LINE = 16 * 1024


class LogWriter:
    """Appends json-file entries, splitting output into lines per stream."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open(path, "ab", buffering=0) if path else None  # noqa: SIM115
        self.partial: dict[int, bytes] = {STDOUT: b"", STDERR: b""}

    def write(self, stream: int, data: bytes) -> None:
        if self.file is None:
            return
        name = "stdout" if stream == STDOUT else "stderr"
        buf = self.partial[stream] + data
        ns = time.time_ns()
        out = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            out.append(log_line(name, buf[start : nl + 1], ns))
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= MAX_LOG_LINE:
            out.append(log_line(name, rest[:MAX_LOG_LINE], ns))
            rest = rest[MAX_LOG_LINE:]
        self.partial[stream] = rest
        if out:
            self.file.write(b"".join(out))

    def close(self) -> None:
        if self.file is None:
            return
        for stream, rest in self.partial.items():
            if rest:
                self.file.write(log_line("stdout" if stream == STDOUT else "stderr", rest))
        self.partial = {STDOUT: b"", STDERR: b""}
        self.file.close()
        self.file = None
