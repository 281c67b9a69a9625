"""`piped`: a producer feeding a consumer, inline under the limit, through a pipe above it."""

from __future__ import annotations

import errno
import hashlib
import threading
from typing import BinaryIO

import pytest

from bocker_engine.engine.pipes import piped


def _producer(total: int, chunk: int = 7000) -> tuple[bytes, object]:
    data = bytes(i * 31 % 251 for i in range(total))

    def produce(out: BinaryIO) -> None:
        for i in range(0, total, chunk):
            out.write(data[i : i + chunk])

    return data, produce


def _digest(inp: BinaryIO) -> tuple[str, str]:
    h = hashlib.sha256()
    while True:
        b = inp.read(4096)
        if not b:
            return h.hexdigest(), threading.current_thread().name
        h.update(b)


@pytest.mark.parametrize("total", [0, 1, 100_000])
def test_small_stream_runs_inline(total: int) -> None:
    data, produce = _producer(total)
    digest, thread = piped(produce, _digest, inline_limit=1 << 20)  # type: ignore[arg-type]
    assert digest == hashlib.sha256(data).hexdigest()
    assert thread == threading.current_thread().name


@pytest.mark.parametrize("total", [100_001, 3_000_000])
def test_large_stream_goes_through_a_pipe_whole(total: int) -> None:
    data, produce = _producer(total)
    digest, thread = piped(produce, _digest, inline_limit=100_000)  # type: ignore[arg-type]
    assert digest == hashlib.sha256(data).hexdigest()
    assert thread == "piped"


@pytest.mark.parametrize("limit", [1 << 30, 1000])
def test_producer_error_wins(limit: int) -> None:
    def produce(out: BinaryIO) -> None:
        out.write(b"x" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        piped(produce, _digest, inline_limit=limit)
    assert e.value.errno == errno.ENOSPC


def test_consumer_error_wins_over_the_producers_broken_pipe() -> None:
    _, produce = _producer(20_000_000, chunk=1 << 16)

    def consume(inp: BinaryIO) -> None:
        inp.read(10)
        raise ValueError("bad tar")

    with pytest.raises(ValueError, match="bad tar"):
        piped(produce, consume, inline_limit=1000)  # type: ignore[arg-type]


def test_consumer_that_stops_early_is_no_error() -> None:
    _, produce = _producer(20_000_000, chunk=1 << 16)

    def consume(inp: BinaryIO) -> bytes:
        return inp.read(10)

    assert len(piped(produce, consume, inline_limit=1000)) == 10  # type: ignore[arg-type]


def test_consumer_error_inline() -> None:
    _, produce = _producer(100)

    def consume(inp: BinaryIO) -> None:
        raise ValueError("bad tar")

    with pytest.raises(ValueError, match="bad tar"):
        piped(produce, consume)  # type: ignore[arg-type]
