"""Decompression of layer streams (gzip, zstd, xz, bzip2, or none), sniffed from the magic and
streamed with bounded memory."""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, cast

from bocker_engine.errors import InvalidParameter
from bocker_engine.storage.layers.common import CHUNK


class Prefixed(io.RawIOBase):
    """The bytes sniffed for the magic, then the rest of the source."""

    def __init__(self, prefix: bytes, src: BinaryIO) -> None:
        self._prefix = prefix
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class _Engine(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def step(self, data: bytes) -> bytes: ...


class _ZlibEngine:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._full = False

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        # A full output chunk may leave output pending inside zlib even with no input left.
        return not self._d.unconsumed_tail and not self._full

    def step(self, data: bytes) -> bytes:
        out = self._d.decompress(self._d.unconsumed_tail + data, CHUNK)
        self._full = len(out) == CHUNK
        return out


class _StdEngine:
    """lzma / bz2 decompressors, which share one API."""

    def __init__(self, d: lzma.LZMADecompressor | bz2.BZ2Decompressor) -> None:
        self._d = d

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    def step(self, data: bytes) -> bytes:
        return self._d.decompress(data, CHUNK)


class _Decompressor(io.RawIOBase):
    """Streams a (possibly multi-member) compressed source with bounded memory: output is
    produced at most CHUNK bytes at a time, so a compression bomb cannot blow up memory."""

    def __init__(self, src: BinaryIO, factory: Callable[[], _Engine], kind: str) -> None:
        self._src = src
        self._factory = factory
        self._kind = kind
        self._d = factory()
        self._out = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            if self._done:
                return 0
            self._out, self._pos = self._produce(), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _produce(self) -> bytes:
        if self._d.eof:
            rest = self._d.unused_data.lstrip(b"\0")
            # Concatenated members are one stream (pigz, multi-stream xz); zero padding after
            # the last member is tolerated like gzip(1) does.
            while not rest:
                data = self._src.read(CHUNK)
                if not data:
                    self._done = True
                    return b""
                rest = data.lstrip(b"\0")
            self._d = self._factory()
            return self._step(rest)
        data = b""
        if self._d.needs_input:
            data = self._src.read(CHUNK)
            if not data:
                raise InvalidParameter(f"invalid layer: {self._kind} stream is truncated")
        return self._step(data)

    def _step(self, data: bytes) -> bytes:
        try:
            return self._d.step(data)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
            raise InvalidParameter(f"invalid layer: bad {self._kind} data: {e}") from None


def decompressed(src: BinaryIO) -> BinaryIO:
    """Sniff the compression of a layer stream and return its uncompressed bytes as a stream.
    Works on pipes and sockets: only the first few bytes are buffered for the sniffing."""
    head = b""
    while len(head) < 6:
        data = src.read(6 - len(head))
        if not data:
            break
        head += data
    chained = Prefixed(head, src)
    if head.startswith(b"\x1f\x8b"):
        raw: io.RawIOBase = _Decompressor(cast(BinaryIO, chained), _ZlibEngine, "gzip")
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise InvalidParameter("zstd not supported") from None
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, chained), read_across_frames=True, closefd=False
        )
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=CHUNK))
    elif head.startswith(b"\xfd7zXZ\x00"):
        raw = _Decompressor(cast(BinaryIO, chained), lambda: _StdEngine(lzma.LZMADecompressor()), "xz")
    elif head.startswith(b"BZh"):
        raw = _Decompressor(cast(BinaryIO, chained), lambda: _StdEngine(bz2.BZ2Decompressor()), "bzip2")
    else:
        raw = chained
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=CHUNK))
