"""The supervisor's side of container logs: turns a container's output into log records (the
json-file or local format, bocker_engine/logs.py) and writes them to a file rotated like dockerd's.

Lives apart from supervisor.py so the log drivers (rotation, formats) evolve without touching
the process management.

Rotation (dockerd's loggerutils.LogFile): before a write, a live file at or above max-size is
renamed to `.1` (`.1` -> `.2`, ..., the oldest dropped) and a new one opened; with max-file=1 the
file is truncated instead. Files are renamed only after their last write, in the thread that
writes, so a follower that sees a new inode knows the old file is complete. Compression runs in a
thread (zlib releases the GIL), so a rotation costs the event loop a few renames.

Writing never raises into the supervisor: a failed write (ENOSPC, EIO) drops those lines, cuts
the file back to its last whole record so no torn line is left, and is reported (rate-limited)
in the supervisor's log, as dockerd drops lines and logs an error.

mode=non-blocking: records go to a buffer of max-buffer-size bytes (dockerd's default 1 MB)
that a thread writes out; when it is full, new lines are dropped instead of making the
container's output wait (dockerd's ring logger).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import sys
import threading
import time
import zlib
from json.encoder import encode_basestring

from bocker_engine import logconfig
from bocker_engine.logs import encode_local, log_line
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.stdcopy import STDERR, STDOUT
from bocker_engine.timefmt import rfc3339nano

# A line longer than this is logged in pieces (Docker's json-file does the same at 16 KiB).
MAX_LOG_LINE = 16 * 1024
DEFAULT_MAX_BUFFER = 1_000_000  # dockerd's defaultRingMaxSize
# dockerd's local driver defaults.
LOCAL_MAX_SIZE = 20 * 1024 * 1024
LOCAL_MAX_FILE = 5
_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
ERROR_EVERY = 10.0  # seconds between two reports of failing writes for one log


def _report(msg: str) -> None:
    # The supervisor's stderr is its log file (supervisor.log).
    print(f"{rfc3339nano()} log writer: {msg}", file=sys.stderr, flush=True)


def compress_file(src: str, dst: str) -> None:
    """gzip src into dst (temp name, then rename), then remove src; on failure src stays."""
    tmp = dst + ".tmp"
    try:
        with open(src, "rb") as f, open(tmp, "wb") as out:
            st = os.fstat(f.fileno())
            extra = json.dumps({"inode": st.st_ino}).encode()
            # gzip header with FEXTRA (as dockerd stores {"lastTime":...} there): the source's
            # inode, so a follower holding the old file can still place it once compressed.
            out.write(b"\x1f\x8b\x08\x04" + int(st.st_mtime).to_bytes(4, "little") + b"\x00\xff")
            out.write(len(extra).to_bytes(2, "little") + extra)
            z = zlib.compressobj(1, zlib.DEFLATED, -15)  # BestSpeed, as dockerd
            crc = size = 0
            while data := f.read(1 << 20):
                crc = zlib.crc32(data, crc)
                size += len(data)
                out.write(z.compress(data))
            out.write(z.flush())
            out.write(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
        os.replace(tmp, dst)
    except OSError as e:
        _report(f"compressing {src}: {e}")
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    with contextlib.suppress(OSError):
        os.unlink(src)


class RotatingFile:
    """A log file with dockerd's rotation. Used by one thread at a time."""

    def __init__(self, path: str, max_size: int = -1, max_file: int = 1, compress: bool = False) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max_file
        self.compress = compress
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.compressing: threading.Thread | None = None
        self.dropped = 0
        self.last_error = 0.0

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, blob: bytes, split: bool = True) -> None:
        """Write whole records; rotate between records once the file reached max-size."""
        if self.max_size <= 0 or not split:
            self._write(blob)
            return
        view = memoryview(blob)
        while view:
            if self.size >= self.max_size:
                self.rotate()
            n = self._records_until(view, self.max_size - self.size)
            self._write(view[:n])
            view = view[n:]

    def _records_until(self, view: memoryview, need: int) -> int:
        """Bytes of the records up to and including the one that brings the file to max-size."""
        raise NotImplementedError

    def _write(self, data: bytes | memoryview) -> None:
        if self.fd < 0:
            return
        before = self.size
        try:
            while data:
                n = os.write(self.fd, data)
                self.size += n
                data = data[n:]
        except OSError as e:
            self.dropped += 1
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, before)  # no torn record: the next one starts clean
            self.size = before
            now = time.monotonic()
            if now - self.last_error >= ERROR_EVERY:
                self.last_error = now
                what = "no space left on device" if e.errno == errno.ENOSPC else str(e)
                _report(f"dropping log lines of {self.path}: {what} ({self.dropped} writes dropped so far)")

    def rotate(self) -> None:
        if self.max_file < 2:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            self.size = 0
            return
        self.wait_compression()  # renames must not race a compression of `.1`
        try:
            for ext in ("", ".gz"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}.{self.max_file - 1}{ext}")
            for i in range(self.max_file - 2, 0, -1):
                for ext in ("", ".gz"):
                    with contextlib.suppress(OSError):
                        os.rename(f"{self.path}.{i}{ext}", f"{self.path}.{i + 1}{ext}")
            os.rename(self.path, f"{self.path}.1")
            fd = self._open()
        except OSError as e:
            _report(f"rotating {self.path}: {e}")
            return
        os.close(self.fd)
        self.fd = fd
        self.size = 0
        if self.compress:
            src = f"{self.path}.1"
            self.compressing = threading.Thread(target=compress_file, args=(src, src + ".gz"), daemon=True)
            self.compressing.start()

    def wait_compression(self) -> None:
        if self.compressing is not None:
            self.compressing.join()
            self.compressing = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class JsonFile(RotatingFile):
    def _records_until(self, view: memoryview, need: int) -> int:
        blob = view.obj if isinstance(view.obj, bytes) else bytes(view)
        start = len(blob) - len(view)
        i = blob.find(b"\n", start + max(need, 1) - 1)
        return len(view) if i < 0 else i + 1 - start


class LocalFile(RotatingFile):
    def _records_until(self, view: memoryview, need: int) -> int:
        p = 0
        while p < len(view):
            p += int.from_bytes(view[p : p + 4], "big") + 8
            if p >= need:
                return p
        return len(view)


class LogWriter:
    """Splits output into lines per stream and writes them in the container's log format."""

    def __init__(
        self,
        path: str,
        driver: str = "json-file",
        opts: dict[str, str] | None = None,
        attrs: dict[str, str] | None = None,
    ) -> None:
        opts = opts or {}
        self.driver = driver
        self.partial: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        self.file: RotatingFile | None = None
        self.attrs = attrs or {}
        # The end of every json-file record but for its time: `\n","stream":"stdout","attrs":{..},"time":"`.
        attrs_json = (',"attrs":' + json.dumps(dict(sorted(self.attrs.items())), ensure_ascii=False,
                                               separators=(",", ":"))) if self.attrs else ""
        self._json_tail = {s: f'\\n","stream":"{s}"{attrs_json},"time":"' for s in ("stdout", "stderr")}
        if path and driver in ("json-file", "local"):
            if driver == "local":
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                max_size = logconfig.parse_size(opts["max-size"], binary=True) if "max-size" in opts else LOCAL_MAX_SIZE
                max_file = int(opts.get("max-file", LOCAL_MAX_FILE))
                compress = logconfig.parse_bool(opts.get("compress", "true"))
                self.file = LocalFile(path, max_size or -1, max_file, compress and max_file > 1)
            else:
                max_size = logconfig.parse_size(opts["max-size"]) if "max-size" in opts else -1
                max_file = int(opts.get("max-file", "1"))
                compress = logconfig.parse_bool(opts.get("compress", "false"))
                self.file = JsonFile(path, max_size, max_file, compress)
        self.non_blocking = opts.get("mode") == "non-blocking" and self.file is not None
        if self.non_blocking:
            size = opts.get("max-buffer-size")
            self.max_buffer = logconfig.parse_size(size, binary=True) if size else DEFAULT_MAX_BUFFER
            self.queue: collections.deque[tuple[bytes, bool]] = collections.deque()
            self.queued = 0
            self.lines_dropped = 0
            self.cond = threading.Condition()
            self.closing = False
            self.thread = threading.Thread(target=self._drain, daemon=True, name=f"log {path}")
            self.thread.start()

    @classmethod
    def for_spec(cls, spec: ProcessSpec) -> LogWriter | None:
        """The writer for a container's first process; a log that cannot be opened (a full disk)
        leaves the container without one rather than failing or crashing anything."""
        try:
            return cls(spec.log_path, spec.log_driver, spec.log_opts, spec.log_attrs)
        except (OSError, ValueError) as e:
            _report(f"opening the log of {spec.id}: {e}")
            return None

    # ---- records --------------------------------------------------------------------------

    def _encode_lines(self, name: str, text: bytes, ns: int) -> bytes:
        """Records for whole lines (text ends with a newline)."""
        if self.driver == "local":
            return b"".join(encode_local(name, line, ns, False) for line in text[:-1].split(b"\n"))
        parts = text.decode("utf-8", "replace").split("\n")
        parts.pop()
        tail = self._json_tail[name] + rfc3339nano(ns) + '"}\n'
        pre = '{"log":'
        # encode_basestring (C) quotes and escapes a line; its closing quote is in `tail`.
        return (pre + (tail + pre).join([encode_basestring(p)[:-1] for p in parts]) + tail).encode()

    def _encode_piece(self, name: str, piece: bytes, ns: int | None = None) -> bytes:
        """A record for part of a line (a long line, or output without a final newline)."""
        if self.driver == "local":
            return encode_local(name, piece, time.time_ns() if ns is None else ns, True)
        return log_line(name, piece, ns, self.attrs)

    def write(self, stream: int, data: bytes) -> None:
        if self.file is None:
            return
        name = "stdout" if stream == STDOUT else "stderr"
        buf = self.partial[stream] + data
        ns = time.time_ns()
        out = []
        end = buf.rfind(b"\n") + 1
        if end:
            out.append(self._encode_lines(name, buf[:end], ns))
        rest = buf[end:]
        while len(rest) >= MAX_LOG_LINE:
            out.append(self._encode_piece(name, rest[:MAX_LOG_LINE], ns))
            rest = rest[MAX_LOG_LINE:]
        self.partial[stream] = rest
        if out:
            self._put(b"".join(out) if len(out) > 1 else out[0])

    def _put(self, blob: bytes) -> None:
        assert self.file is not None
        if not self.non_blocking:
            self.file.write(blob)
            return
        with self.cond:
            if self.queued + len(blob) > self.max_buffer and self.queue:
                self.lines_dropped += 1
                if self.lines_dropped == 1 or self.lines_dropped % 1000 == 0:
                    _report(f"{self.file.path}: log buffer full, dropped {self.lines_dropped} writes")
                return
            self.queue.append((blob, True))
            self.queued += len(blob)
            self.cond.notify()

    def _drain(self) -> None:
        assert self.file is not None
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if not self.queue:
                    self.file.close()
                    return
                blob, split = self.queue.popleft()
                self.queued -= len(blob)
            try:
                self.file.write(blob, split)
            except Exception as e:  # never let the thread die with lines still coming
                _report(f"writing {self.file.path}: {e}")

    def close(self) -> None:
        if self.file is None:
            return
        tail = [self._encode_piece(_NAMES[s], rest) for s, rest in self.partial.items() if rest]
        self.partial = {STDOUT: b"", STDERR: b""}
        if tail:
            self._put(b"".join(tail))
        if self.non_blocking:
            with self.cond:
                self.closing = True
                self.cond.notify()
            # The exit is reported after this: what was buffered is in the file by then (bounded).
            self.thread.join(5.0)  # the thread closes the file (later, if the disk is that slow)
        else:
            self.file.close()
        self.file = None
