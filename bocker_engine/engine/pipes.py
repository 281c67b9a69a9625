"""Bridging async byte streams and blocking workers (tar extraction runs in a thread).

An os.pipe sits between them: the kernel buffers and applies back-pressure, the thread reads
a plain file, and no layer is ever held in memory whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, TypeVar

T = TypeVar("T")

PIPE_SIZE = 1 << 20


def _grow(fd: int) -> None:
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(fd, 1031, PIPE_SIZE)  # F_SETPIPE_SZ: fewer wake-ups per layer


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writable: bool) -> None:
    """Until `fd` is writable (or readable). The pipes here are watched with add_writer and
    add_reader rather than connect_*_pipe, whose uvloop version closes the fd twice (the
    second close can hit a descriptor another thread has just opened)."""
    fut = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await fut
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


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
                    await _ready(loop, w, True)
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
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(w, True)
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
    try:
        while True:
            try:
                chunk = os.read(r, PIPE_SIZE)
            except BlockingIOError:
                await _ready(loop, r, False)
                continue
            if not chunk:
                break
            yield chunk
        await task
    finally:
        os.close(r)
        if not task.done():
            # The consumer went away: the thread gets EPIPE on its next write and ends.
            with contextlib.suppress(BaseException):
                await task


def piped(produce: Callable[[BinaryIO], None], consume: Callable[[BinaryIO], T]) -> T:
    """`produce(file)` in a thread feeding `consume(file)` in this one through a pipe; blocking.

    When both fail, the producer's error is the cause (a full disk while writing a diff) unless
    it only saw the consumer go away (EPIPE); the consumer closing its end first means a
    producer blocked on a full pipe gets EPIPE instead of waiting for ever."""
    r, w = os.pipe()
    rf = os.fdopen(r, "rb", buffering=1 << 20)
    wf = os.fdopen(w, "wb", buffering=1 << 20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            produce(wf)
            wf.flush()
        except BaseException as e:  # reported on the consumer's side
            errors.append(e)
        finally:
            with contextlib.suppress(OSError):
                wf.close()

    t = threading.Thread(target=run, name="piped", daemon=True)
    t.start()
    try:
        result = consume(rf)
    except BaseException:
        rf.close()
        t.join()
        if errors and not isinstance(errors[0], BrokenPipeError):
            raise errors[0] from None
        raise
    rf.close()
    t.join()
    # EPIPE after the consumer took all it wanted (a tar reader stops at the end marker) is no error.
    if errors and not isinstance(errors[0], BrokenPipeError):
        raise errors[0]
    return result
