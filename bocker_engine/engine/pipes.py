"""Bridging async byte streams and blocking workers (tar extraction runs in a thread).

An os.pipe sits between them: the kernel buffers and applies back-pressure, the thread reads
a plain file, and no layer is ever held in memory whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar, cast

T = TypeVar("T")

PIPE_SIZE = 1 << 20


def _grow(fd: int) -> None:
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(fd, 1031, PIPE_SIZE)  # F_SETPIPE_SZ: fewer wake-ups per layer


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until `fd` is writable. feed_thread's pipe is watched with add_writer
    rather than connect_write_pipe, whose uvloop version closes the fd twice (the second close
    can hit a descriptor another thread has just opened)."""
    fut = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


async def feed_thread(chunks: AsyncIterator[bytes], work: Callable[[BinaryIO], T]) -> T:
    """Run `work(file)` in a thread while writing `chunks` into the file it reads."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(r, True)
    _grow(w)
    reader = os.fdopen(r, "rb", buffering=PIPE_SIZE)
    loop = asyncio.get_running_loop()
    task = loop.run_in_executor(None, _run_and_close, work, reader)
    try:
        async for chunk in chunks:
            view = memoryview(chunk)
            while view and not task.done():
                try:
                    view = view[os.write(w, view) :]
                except BlockingIOError:
                    # A reader that went away makes the pipe writable too (the write then fails).
                    await _writable(loop, w)
            if task.done():
                break
    except BrokenPipeError:
        # The reader closed its end because `work` failed (say, ENOSPC): its error says why.
        await task
        raise
    finally:
        os.close(w)
    return await task


def _run_and_close(work: Callable[[BinaryIO], T], f: BinaryIO) -> T:
    try:
        result = work(f)
        # Whatever `work` left unread must still be consumed, or the writer blocks forever.
        while f.read(PIPE_SIZE):
            pass
        return result
    finally:
        f.close()


async def drain_thread(produce: Callable[[BinaryIO], None]) -> AsyncIterator[bytes]:
    """Run `produce(file)` in a thread and yield what it writes (export, save, push)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    _grow(w)
    loop = asyncio.get_running_loop()
    writer = os.fdopen(w, "wb", buffering=PIPE_SIZE)

    def run() -> None:
        try:
            produce(writer)
        finally:
            with contextlib.suppress(BrokenPipeError):
                writer.close()

    task = loop.run_in_executor(None, run)
    # A read transport (the loop's own buffering: half the time of reading the pipe here). uvloop
    # closes the fd itself and then the file too: the file must not own it there.
    pipe = os.fdopen(r, "rb", 0, closefd=not _is_uvloop(loop))
    reader = asyncio.StreamReader(limit=PIPE_SIZE)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while True:
            chunk = await reader.read(PIPE_SIZE)
            if not chunk:
                break
            yield chunk
        await task
    finally:
        transport.close()
        if not task.done():
            # The consumer went away: the thread gets EPIPE on its next write and ends.
            with contextlib.suppress(BaseException):
                await task


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


# Below this many bytes, `piped` runs the consumer after the producer in the calling thread.
INLINE_LIMIT = 8 << 20


class _ChainReader(io.RawIOBase):
    """The bytes a spool took in memory, then whatever arrives on the pipe after them."""

    def __init__(self, head: io.BytesIO, tail: BinaryIO) -> None:
        self.head = head
        self.tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.head.readinto(b)
        if n:
            return n
        return self.tail.readinto(b)  # type: ignore[attr-defined]


class _Spool(io.RawIOBase):
    """What `produce` writes: kept in memory while it stays under INLINE_LIMIT; past that, the
    consumer starts in a thread on those bytes followed by a pipe, and writes go to the pipe."""

    def __init__(self, consume: Callable[[BinaryIO], Any], limit: int) -> None:
        self.buf = io.BytesIO()
        self.limit = limit
        self.consume = consume
        self.pipe: BinaryIO | None = None
        self.thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.pipe is not None:
            return self.pipe.write(b)
        n = self.buf.write(b)
        if self.buf.tell() > self.limit:
            self._overflow()
        return n

    def _overflow(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        _grow(w)
        rf = os.fdopen(r, "rb", buffering=0)
        self.buf.seek(0)
        reader = io.BufferedReader(_ChainReader(self.buf, rf), PIPE_SIZE)

        def run() -> None:
            try:
                self.result = self.consume(cast(BinaryIO, reader))
            except BaseException as e:  # re-raised in the producer's thread
                self.error = e
            finally:
                # Closing the read end makes a producer blocked on a full pipe get EPIPE.
                rf.close()

        self.pipe = os.fdopen(w, "wb", buffering=PIPE_SIZE)
        self.thread = threading.Thread(target=run, name="piped", daemon=True)
        self.thread.start()


def piped(
    produce: Callable[[BinaryIO], None], consume: Callable[[BinaryIO], T], inline_limit: int = INLINE_LIMIT
) -> T:
    """`produce(file)` feeding `consume(file)`; blocking.

    A small stream (a commit's few files) is produced into memory and then consumed, both in
    this thread: two Python threads passing it through a pipe would mostly wait for each
    other's GIL hand-offs. Past `inline_limit`, the consumer starts in a thread on what was
    produced so far followed by a pipe, so a large stream is never held in memory whole.

    When both fail, the producer's error is the cause (a full disk while writing a diff) unless
    it only saw the consumer go away (EPIPE); the consumer closing its end first means a
    producer blocked on a full pipe gets EPIPE instead of waiting for ever."""
    spool = _Spool(consume, inline_limit)
    try:
        produce(cast(BinaryIO, spool))
        if spool.pipe is not None:
            spool.pipe.flush()
    except BaseException as e:
        if spool.thread is None:
            raise
        with contextlib.suppress(OSError):
            assert spool.pipe is not None
            spool.pipe.close()
        spool.thread.join()
        if isinstance(e, BrokenPipeError):
            if spool.error is not None:
                raise spool.error from None
            return cast(T, spool.result)  # the consumer took all it wanted and stopped reading
        raise
    if spool.thread is None:
        spool.buf.seek(0)
        return consume(cast(BinaryIO, spool.buf))
    assert spool.pipe is not None
    with contextlib.suppress(BrokenPipeError):
        # EPIPE after the consumer took all it wanted (a tar reader stops at the end marker).
        spool.pipe.close()
    spool.thread.join()
    if spool.error is not None:
        raise spool.error
    return cast(T, spool.result)
