"""The daemon's side of the layer workers (storage/worker.py, which describes the protocol).

A worker serves one layer after another. Starting one costs 100-125 ms of CPU on this class of
machine (Python, then loading or compiling the tar engine), more than extracting a 17 MB layer:
measured with bench.pull, a worker per layer pulled at 63-73 MB/s, one kept for the whole pull
at 85-103 MB/s. So a pull starts one (`warm`) as its downloads start and keeps it for all its
layers; a worker idle for IDLE_TIMEOUT is closed, so an idle daemon has none. A worker whose
job failed or was cancelled is killed and waited for, so that nothing writes into the layer's
directory once the caller removes it.

A worker that has data to read but reports no progress for STALL_TIMEOUT is stalled (a hostile
layer that found a slow path, a wedged process): it is killed and the layer fails, leaving
nothing. Waiting for a slow download is not a stall: the worker says when it has read all that
was announced, and the clock restarts with each announcement.

Everything here runs on the event loop; nothing blocks it but the spawn itself (vfork + exec).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any

from bocker_engine import errors
from bocker_engine.errors import EngineError, System

IDLE_TIMEOUT = 10.0
STALL_TIMEOUT = 60.0
MAX_MESSAGE = 1 << 16
EXIT_WAIT = 2.0


class Feed:
    """Tells the worker reading a file that is still being downloaded how far it may read.

    The download calls `grow` after each write and `finish` only once the blob's digest checked
    out; `fail` kills the worker reading it, if any.
    """

    def __init__(self) -> None:
        self.avail = 0
        self.complete = False
        self.failed = False
        self._worker: _Worker | None = None

    def grow(self, n: int) -> None:
        self.avail = n
        if self._worker is not None:
            self._worker.send({"op": "avail", "n": n})
            self._worker.touch()

    def finish(self) -> None:
        self.complete = True
        if self._worker is not None:
            self._worker.send({"op": "end", "n": self.avail})
            self._worker.touch()

    def fail(self) -> None:
        self.failed = True
        if self._worker is not None:
            self._worker.kill()

    def _attach(self, w: _Worker) -> None:
        self._worker = w
        if self.failed:
            w.kill()
        elif self.complete:
            w.send({"op": "end", "n": self.avail})
        elif self.avail:
            w.send({"op": "avail", "n": self.avail})


class _Worker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bocker_engine.storage.worker", "serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        ours.setblocking(False)
        self.out: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self.writing = False
        self.job: asyncio.Future[dict[str, Any]] | None = None
        self.progress: Callable[[int], None] | None = None
        # For the stall watchdog: the layer file's bytes the worker reported consumed, when it
        # last showed a sign of life (or was given more to read), whether it is writing out.
        self.read = 0
        self.active_at = loop.time()
        self.syncing = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.exited: asyncio.Future[int] = loop.create_future()
        self.closed = False
        loop.add_reader(ours.fileno(), self._readable)
        self._watch_exit()
        _live.add(self)

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except OSError:  # kernels before 5.3: a thread waits instead
            fut = asyncio.ensure_future(asyncio.to_thread(self.proc.wait), loop=self.loop)
            fut.add_done_callback(lambda f: self._reaped(f.result()))
            return

        def ready() -> None:
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reaped(self.proc.wait())

        self.loop.add_reader(pidfd, ready)

    def _reaped(self, status: int) -> None:
        # Its last words (a job's error) may still wait in the socket.
        self._readable()
        self._close()
        if not self.exited.done():
            self.exited.set_result(status)

    def touch(self) -> None:
        if not self.loop.is_closed():
            self.active_at = self.loop.time()

    def stalled(self, feed: Feed | None, timeout: float) -> bool:
        if self.syncing:
            return False  # one syscall in the kernel: nothing to measure, and killing won't stop it
        if feed is not None and not feed.complete and self.read >= feed.avail:
            return False  # waiting for the download, not stalled
        return self.loop.time() - self.active_at > timeout

    @property
    def alive(self) -> bool:
        return not self.closed and not self.loop.is_closed()

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        if self.closed:
            return
        self.out.append((json.dumps(msg).encode(), fds or []))
        if not self.writing:
            self._flush()

    def _flush(self) -> None:
        while self.out:
            data, fds = self.out[0]
            try:
                if fds:
                    socket.send_fds(self.sock, [data], fds)
                else:
                    self.sock.send(data)
            except BlockingIOError:
                if not self.writing:
                    self.writing = True
                    self.loop.add_writer(self.sock.fileno(), self._flush)
                return
            except OSError:
                self._lost()
                return
            self.out.popleft()
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            msg = json.loads(data)
            self.touch()
            if "read" in msg:
                self.read = int(msg["read"])
                if self.progress is not None:
                    self.progress(self.read)
            elif "syncing" in msg:
                self.syncing = True
            elif self.job is not None and not self.job.done():
                self.job.set_result(msg)

    def _lost(self) -> None:
        self._close()
        if self.job is not None and not self.job.done():
            self.job.set_exception(System("the layer worker exited before finishing the layer"))

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
            if self.writing:
                self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self.out.clear()

    def retire(self) -> None:
        """Idle: closing the socket tells it to exit."""
        self._close()

    def kill(self) -> None:
        if not self.exited.done():
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGKILL)
        self._lost()


_live: weakref.WeakSet[_Worker] = weakref.WeakSet()


@atexit.register
def _reap_at_exit() -> None:
    """The daemon exits: reap its workers rather than leave them to init as zombies."""
    workers = [w for w in _live if w.proc.returncode is None]
    for w in workers:
        w.sock.close()  # an idle worker exits when its socket closes
    for w in workers:
        try:
            w.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def _raise(result: dict[str, Any]) -> None:
    cls = getattr(errors, str(result.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = System
    raise cls(str(result.get("message", "layer worker failed")))


class WorkerPool:
    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.idle: list[_Worker] = []

    def _prune(self, loop: asyncio.AbstractEventLoop) -> None:
        for w in list(self.idle):
            if w.loop is not loop or not w.alive:
                self.idle.remove(w)
                if w.alive:
                    w.retire()

    def warm(self) -> None:
        """Start a worker now if none is idle, so that its start-up overlaps other work."""
        loop = asyncio.get_running_loop()
        self._prune(loop)
        if not self.idle:
            self._release(_Worker(loop))

    def _take(self) -> _Worker:
        loop = asyncio.get_running_loop()
        self._prune(loop)
        if self.idle:
            w = self.idle.pop()
            if w.idle_timer is not None:
                w.idle_timer.cancel()
                w.idle_timer = None
            return w
        return _Worker(loop)

    def _release(self, w: _Worker) -> None:
        if not w.alive:
            return
        w.idle_timer = w.loop.call_later(self.idle_timeout, self._expire, w)
        self.idle.append(w)

    def _expire(self, w: _Worker) -> None:
        if w in self.idle:
            self.idle.remove(w)
        w.retire()

    async def apply(
        self,
        driver: str,
        home: str,
        id: str,
        parent: str | None,
        fd: int,
        tar_split: str,
        *,
        feed: Feed | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[str, int]:
        """Decompress and extract the layer file `fd` into the driver's directory `id`, created
        already, writing its tar-split to `tar_split`: (diff ID, size)."""
        w = self._take()
        ok = False
        try:
            w.job = w.loop.create_future()
            w.progress = progress
            w.read, w.syncing = 0, False
            w.touch()
            job = {
                "op": "apply",
                "driver": driver,
                "home": home,
                "id": id,
                "parent": parent,
                "tar_split": tar_split,
                "growing": feed is not None,
            }
            w.send(job, [fd])
            if w.closed:
                raise System("the layer worker exited before taking the layer")
            if feed is not None:
                feed._attach(w)
            result = await self._watch(w, w.job, feed)
            if "error" in result:
                _raise(result)
            diff_id, size = str(result["diff_id"]), int(result["size"])
            ok = True
            return diff_id, size
        finally:
            w.job = None
            w.progress = None
            if feed is not None:
                feed._worker = None
            if ok:
                self._release(w)
            else:
                w.kill()
                # Shielded: even when cancelled, the caller must not remove the directory the
                # worker writes into before the worker is gone.
                await asyncio.shield(w.exited)

    async def _watch(self, w: _Worker, job: asyncio.Future[dict[str, Any]], feed: Feed | None) -> dict[str, Any]:
        """The job's result, unless the worker stalls first."""
        interval = min(1.0, self.stall_timeout / 4)
        while True:
            done, _ = await asyncio.wait({job}, timeout=interval)
            if done:
                return job.result()
            if w.stalled(feed, self.stall_timeout):
                raise System(
                    f"the layer worker made no progress for {self.stall_timeout:g} s with data to read: "
                    "giving up on the layer"
                )

    async def close(self) -> None:
        """Stop the idle workers and wait for them (tests; the daemon's exit closes them too)."""
        idle, self.idle = self.idle, []
        for w in idle:
            w.retire()
        for w in idle:
            if not w.loop.is_closed():
                await w.exited
