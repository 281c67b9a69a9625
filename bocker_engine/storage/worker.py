"""Layer worker: decompresses and applies layer tars in a process of its own.

Why a process: the tar engine (storage/layers/) is pure Python. Run in the daemon's threads
it took the GIL from the daemon's event loop for long stretches, and `docker ps` during a pull
went from 10 ms to 65-75 ms. Here it has a GIL of its own and runs at a lower CPU priority, so
the daemon only downloads, and the API wins the CPU. Extraction is `Driver.apply_diff`, hence
storage/layers/apply.py's `apply_layer`, unchanged: this process only fills a directory the daemon
has created, and the daemon alone records layers.

    python -m bocker_engine.storage.worker serve FD
        the daemon's pool (storage/workerpool.py): one job after another on the socket FD
    python -m bocker_engine.storage.worker apply --driver btrfs --home H --id ID \\
            [--parent P] --tar-split PATH  < layer
        one layer from stdin, the result on stdout (for debugging by hand)

The protocol on FD, a SOCK_SEQPACKET socket, one JSON object per datagram:

    daemon -> worker   {"op": "apply", "driver", "home", "id", "parent", "tar_split",
                        "growing"}, with the layer's fd attached (SCM_RIGHTS)
                       {"op": "avail", "n": N}   growing: the file's first N bytes are written
                       {"op": "end", "n": N}     growing: N is all of it, and its digest checked out
    worker -> daemon   {"read": N}               progress: bytes of the layer file consumed (also
                                                 sent, unchanged, as the tar engine moves on; and
                                                 always before waiting for an announcement)
                       {"syncing": true}         the layer is extracted; flushing it to disk
                       {"diff_id": D, "size": S} or {"error": CLASS, "message": M}: the job's end

The daemon kills a worker that reports no progress for a while although it has data to read
(workerpool.STALL_TIMEOUT): a hostile layer must not hold a pull or load forever.

The layer file is compressed (gzip, zstd, xz, bzip2) or plain. A growing file is read only up to
what the daemon has announced, and its end is seen only after the daemon said "end", so a layer
whose download failed can never succeed here. A worker whose job failed exits instead of taking
another one. The daemon cancels a job by killing the worker.

Imports are kept to what extraction needs (no asyncio, no aiohttp): a worker starts on a pull.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
import zlib as _zlib
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from bocker_engine.errors import EngineError, InvalidParameter, System, os_error_message
from bocker_engine.storage import new_driver
from bocker_engine.storage.driver import Driver
from bocker_engine.storage.layers import Prefixed, decompressed

_inflater: Any
try:
    # ISA-L's inflate is ~3x zlib's, and inflating is most of a pull's CPU time.
    from isal import isal_zlib as _inflater  # type: ignore[import-not-found,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - the dependency is optional
    _inflater = _zlib

NICE = 10  # below the daemon: API calls stay quick while layers are extracted
READ_CHUNK = 1 << 20
INFLATE_CHUNK = 1 << 20
QUEUE_CHUNKS = 8  # inflated chunks waiting for the tar engine: bounds memory at ~8 MiB
PROGRESS_INTERVAL = 0.025  # the daemon paces downloads by it (engine/pull.py)
MAX_MESSAGE = 1 << 16
PR_SET_PDEATHSIG = 1


class _Aborted(Exception):
    """The daemon went away while a job was running."""


class _Feed:
    """How much of the layer file may be read, as the daemon announces it."""

    def __init__(self, growing: bool) -> None:
        self.growing = growing
        self.avail = 0
        self.complete = not growing
        self.gone = False
        self.cond = threading.Condition()

    def update(self, n: int, complete: bool) -> None:
        with self.cond:
            self.avail = max(self.avail, n)
            self.complete = self.complete or complete
            self.cond.notify_all()

    def lost(self) -> None:
        with self.cond:
            self.gone = True
            self.cond.notify_all()


class Progress:
    """What a job tells the daemon while it runs (nothing, when run by hand)."""

    def read(self, n: int, *, waiting: bool = False) -> None:
        """`n` bytes of the layer file are consumed; `waiting`: all that was announced."""

    def moved(self) -> None:
        """The tar engine took another chunk."""

    def syncing(self) -> None:
        """Extraction is done; the layer is being written out."""


class _Source(io.RawIOBase):
    """The layer file: read to EOF, or (growing) only as far as the feed says, with pread
    because the daemon keeps appending through the same open file."""

    def __init__(self, fd: int, feed: _Feed, progress: Progress) -> None:
        self.fd = fd
        self.feed = feed
        self.progress = progress
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        feed = self.feed
        if not feed.growing:
            n = os.readv(self.fd, [view])
        else:
            with feed.cond:
                if self.pos >= feed.avail and not feed.complete and not feed.gone:
                    # Said before waiting, so that the daemon knows the wait is for its download.
                    self.progress.read(self.pos, waiting=True)
                while self.pos >= feed.avail and not feed.complete and not feed.gone:
                    feed.cond.wait()
                if feed.gone:
                    raise _Aborted()
                avail = feed.avail - self.pos
            if avail <= 0:
                return 0
            n = os.preadv(self.fd, [view[: min(len(view), avail)]], self.pos)
            if n == 0:
                raise System("layer file is shorter than announced")
        self.pos += n
        self.progress.read(self.pos)
        return n


class _Plain(io.RawIOBase):
    """The uncompressed tar, handed over chunk by chunk from the inflating thread."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], progress: Progress) -> None:
        self.chunks = chunks
        self.progress = progress
        self.buf = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        # The tar engine reads whole chunks: hand them over without copying.
        if not self.buf and not self.eof:
            item = self.chunks.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                self.eof = True
            else:
                self.buf = item
            self.progress.moved()
        if n < 0 or n >= len(self.buf):
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _inflate(src: _Source, put: Callable[[bytes], None]) -> None:
    """Decompress (gzip, zstd, ... or nothing) the layer file into `put`."""
    head = src.read(2) or b""
    if head == b"\x1f\x8b":
        _gunzip(head, src, put)
        return
    stream = decompressed(cast(BinaryIO, io.BufferedReader(Prefixed(head, cast(BinaryIO, src)), READ_CHUNK)))
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return
        put(chunk)


def _gunzip(head: bytes, src: _Source, put: Callable[[bytes], None]) -> None:
    """gzip (multi-member too) with the fewest Python steps per byte: the hot loop of a pull.

    Output is bounded per step, so a compression bomb costs time, never memory.
    """
    d = _inflater.decompressobj(16 + _zlib.MAX_WBITS)
    pending = head
    full = False  # a full output chunk may leave output inside zlib with no input left
    while True:
        if not pending and not full:
            pending = src.read(READ_CHUNK) or b""
            if not pending:
                raise InvalidParameter("invalid layer: gzip stream is truncated")
        try:
            out = d.decompress(pending, INFLATE_CHUNK)
        except _inflater.error as e:
            raise InvalidParameter(f"invalid layer: bad gzip data: {e}") from None
        full = len(out) == INFLATE_CHUNK
        if out:
            put(out)
        pending = d.unconsumed_tail
        if d.eof:
            # Another member may follow (pigz); zero padding after the last is tolerated like gzip(1).
            rest = (d.unused_data + pending).lstrip(b"\0")
            while not rest:
                more = src.read(READ_CHUNK)
                if not more:
                    return
                rest = more.lstrip(b"\0")
            d = _inflater.decompressobj(16 + _zlib.MAX_WBITS)
            pending, full = rest, False


def apply(
    driver: Driver, id: str, parent: str | None, fd: int, tar_split: str, feed: _Feed, progress: Progress
) -> tuple[str, int]:
    """Inflate in one thread, extract in this one: ISA-L and zlib drop the GIL, so the two
    halves of a layer use two cores, as they did in the daemon."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_CHUNKS)
    src = _Source(fd, feed, progress)

    def inflate() -> None:
        try:
            _inflate(src, chunks.put)
        except BaseException as e:
            chunks.put(e)
        else:
            chunks.put(None)

    thread = threading.Thread(target=inflate, name="inflate", daemon=True)
    thread.start()
    # "x": the daemon made a fresh directory for this file; anything already there is not ours.
    with open(tar_split, "xb") as split:
        diff_id, size = driver.apply_diff(id, parent, cast(BinaryIO, _Plain(chunks, progress)), split)
    # The tar engine reads to the end of the tar, which comes only after the layer file's end.
    thread.join()
    if driver.name == "btrfs":
        progress.syncing()
        # A btrfs snapshot of this layer (the next layer's, a container's) first writes out its
        # dirty data, inside an ioctl during which the daemon holds its GIL: 35 ms for a 30 MB
        # layer, enough to stall the API. Written out here, the snapshot takes ~2 ms.
        _syncfs(driver.layer_dir(id))
    return diff_id, size


def _syncfs(path: str) -> None:
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise System(f"syncfs {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def _driver(name: str, home: str) -> Driver:
    """The daemon's driver, over the same directory (drivers keep their files in <data-root>/<name>)."""
    driver = new_driver(name, os.path.dirname(home.rstrip("/")))
    if os.path.normpath(driver.home) != os.path.normpath(home):
        raise System(f"layer worker: the {name} driver does not keep its files in {home}")
    return driver


def _error(e: BaseException) -> dict[str, str]:
    if isinstance(e, EngineError):
        return {"error": type(e).__name__, "message": e.message}
    if isinstance(e, OSError) and e.errno:
        # A host condition (a full disk), not a bug: its message as dockerd words it.
        return {"error": "System", "message": os_error_message(e)}
    traceback.print_exc(file=sys.stderr)
    return {"error": "System", "message": f"layer worker: {type(e).__name__}: {e}"}


class _Server(Progress):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.jobs: queue.Queue[tuple[dict[str, Any], list[int], _Feed] | None] = queue.Queue()
        self.feed: _Feed | None = None
        self.drivers: dict[tuple[str, str], Driver] = {}
        self.last_progress = 0.0
        self.pos = 0

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.send(json.dumps(msg).encode())

    def receive(self) -> None:
        """The reader thread: jobs go to the main thread, announcements to the running job."""
        try:
            while True:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
                if not data:
                    return
                msg = json.loads(data)
                op = msg.get("op")
                if op == "apply":
                    self.feed = _Feed(bool(msg.get("growing")))
                    self.jobs.put((msg, fds, self.feed))
                elif op in ("avail", "end") and self.feed is not None:
                    self.feed.update(int(msg["n"]), op == "end")
                else:
                    for fd in fds:
                        os.close(fd)
        except OSError:
            pass
        finally:
            if self.feed is not None:
                self.feed.lost()
            self.jobs.put(None)

    def read(self, n: int, *, waiting: bool = False) -> None:
        self.pos = n
        self._report(force=waiting)

    def moved(self) -> None:
        self._report()

    def syncing(self) -> None:
        self.send({"syncing": True})

    def _report(self, *, force: bool = False) -> None:
        # Called from the inflating thread and the tar engine's: a stale `last_progress` only
        # costs an extra message.
        now = time.monotonic()
        if force or now - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = now
            self.send({"read": self.pos})

    def run(self) -> None:
        threading.Thread(target=self.receive, name="receive", daemon=True).start()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            msg, fds, feed = job
            try:
                if len(fds) != 1:
                    raise System("layer worker: a job needs exactly one file")
                key = (str(msg["driver"]), str(msg["home"]))
                driver = self.drivers.get(key)
                if driver is None:
                    driver = self.drivers[key] = _driver(*key)
                self.last_progress, self.pos = 0.0, 0
                diff_id, size = apply(
                    driver, str(msg["id"]), msg.get("parent"), fds[0], str(msg["tar_split"]), feed, self
                )
            except BaseException as e:
                if not isinstance(e, _Aborted):
                    with contextlib.suppress(OSError):
                        self.send(_error(e))
                return  # a failed job may leave threads and state behind: never reuse this process
            finally:
                for fd in fds:
                    os.close(fd)
            self.send({"diff_id": diff_id, "size": size})


def _die_with_parent() -> None:
    """A worker left behind by a killed daemon would go on writing into a layer nobody owns."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _apply_stdin(args: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="bocker_engine.storage.worker apply")
    p.add_argument("--driver", required=True)
    p.add_argument("--home", required=True, help="the driver's directory: <data-root>/<driver>")
    p.add_argument("--id", required=True)
    p.add_argument("--parent")
    p.add_argument("--tar-split", required=True)
    a = p.parse_args(args)
    try:
        diff_id, size = apply(_driver(a.driver, a.home), a.id, a.parent, 0, a.tar_split, _Feed(False), Progress())
    except Exception as e:
        print(json.dumps(_error(e)))
        return 1
    print(json.dumps({"diff_id": diff_id, "size": size}))
    return 0


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError):
        os.nice(NICE)  # inherited by the threads started below
    if len(argv) == 2 and argv[0] == "serve":
        _die_with_parent()
        sock = socket.socket(fileno=int(argv[1]))
        _Server(sock).run()
        return 0
    if argv and argv[0] == "apply":
        return _apply_stdin(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
