"""Pull: resolve a reference, download up to three layers at once, apply them in order.

Every layer goes through three stages, each streaming into the next through an anonymous file
under the data root that is read *while it is still being written* (`GrowingFile`):

    download (event loop) -> compressed file -> inflate (thread) -> tar file -> apply (thread)

Downloads run three at a time; inflating runs per layer as soon as bytes arrive; applying is
sequential (each layer is a snapshot of its parent). So the first layer streams from the socket
into the layer store, later ones are downloaded and inflated while earlier ones are applied,
and the two CPU-heavy halves (inflate, extract) use two cores. Nothing is held in memory whole.
A reader only sees the end of a file once the stage before it has finished cleanly, and the
download finishes only when the blob's digest has checked out: a corrupted blob can never
complete a layer. The applied layer's diff ID is then checked against the image config.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
import zlib as _zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

from bocker_engine.engine.distribution import BlobSource, Distribution
from bocker_engine.engine.images import Image
from bocker_engine.engine.layers import Layer, chain_ids
from bocker_engine.errors import EngineError, InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.config import Endpoint
from bocker_engine.registry.manifest import Descriptor, Manifest, Platform
from bocker_engine.registry.reference import Reference
from bocker_engine.storage.layers import decompressed

_inflater: Any
try:
    # ISA-L's inflate is ~3x zlib's, and inflating is most of a pull's CPU time.
    from isal import isal_zlib as _inflater  # type: ignore[import-not-found,no-redef,unused-ignore]
except ImportError:  # pragma: no cover - the dependency is optional
    _inflater = _zlib

T = TypeVar("T")

MAX_DOWNLOADS = 3  # dockerd's max-concurrent-downloads default
MAX_CONFIG = 8 << 20
PROGRESS_INTERVAL = 0.1  # seconds between progress messages per layer
READ_CHUNK = 1 << 20
INFLATE_CHUNK = 4 << 20
WORKER_NICE = 10


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Aborted(Exception):
    """The download feeding a layer failed or the pull was cancelled."""


class GrowingFile(io.RawIOBase):
    """A download's file, read by the applier thread while the event loop appends to it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.pos = 0
        self.complete = False
        self.failed = False
        self.cond = threading.Condition()

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        with self.cond:
            self.written += len(data)
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.complete = True
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        with self.cond:
            while self.pos >= self.written and not self.complete and not self.failed:
                self.cond.wait()
            if self.failed:
                raise _Aborted()
            avail = self.written - self.pos
        if avail <= 0:
            return 0
        view = memoryview(b).cast("B")
        n = os.preadv(self.fd, [view[: min(len(view), avail)]], self.pos)
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        super().close()


@dataclass
class Resolved:
    ref: Reference  # as asked for: tagged or digested
    endpoint: Endpoint
    manifest: Manifest


class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, src: GrowingFile) -> None:
        self.head = head
        self.src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.src.readinto(b)


class _LayerJob:
    def __init__(self, index: int, desc: Descriptor, compressed: int, plain: int) -> None:
        self.index = index
        self.desc = desc
        self.compressed = GrowingFile(compressed)
        self.plain = GrowingFile(plain)
        self.downloaded = False
        self.task: asyncio.Task[None] | None = None
        self.inflate: asyncio.Future[None] | None = None

    def abort(self) -> None:
        self.compressed.fail()
        self.plain.fail()

    async def error(self) -> None:
        """Raise whatever made a stage fail (the download's error first: it is the cause)."""
        for stage in (self.task, self.inflate):
            if stage is not None:
                await stage

    def close(self) -> None:
        self.compressed.close()
        self.plain.close()


def _in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `fn` in a thread of its own: pulls must not occupy the daemon's shared executor."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def run() -> None:
        # Below the event loop's thread in CPU priority: API calls stay quick while a pull runs.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        try:
            result = fn()
        except BaseException as e:
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


def _inflate(src: GrowingFile, dst: GrowingFile) -> None:
    """Blocking: decompress (gzip, zstd, ... or nothing) one growing file into another."""
    try:
        head = src.read(2)
        if head == b"\x1f\x8b":
            _gunzip(head, src, dst)
        else:
            stream = decompressed(cast(BinaryIO, io.BufferedReader(_Prefixed(head, src), READ_CHUNK)))
            while True:
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    break
                dst.append(chunk)
    except BaseException:
        dst.fail()
        raise
    dst.finish()


def _gunzip(head: bytes, src: GrowingFile, dst: GrowingFile) -> None:
    """gzip (multi-member too) with the fewest Python steps per byte: the hot loop of a pull.

    Output is bounded per step, so a compression bomb costs time, never memory.
    """
    d = _inflater.decompressobj(16 + _zlib.MAX_WBITS)
    pending = head
    full = False  # a full output chunk may leave output inside zlib with no input left
    while True:
        if not pending and not full:
            pending = src.read(READ_CHUNK)
            if not pending:
                raise InvalidParameter("invalid layer: gzip stream is truncated")
        try:
            out = d.decompress(pending, INFLATE_CHUNK)
        except _inflater.error as e:
            raise InvalidParameter(f"invalid layer: bad gzip data: {e}") from None
        full = len(out) == INFLATE_CHUNK
        if out:
            dst.append(out)
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


class Puller:
    def __init__(
        self, dist: Distribution, auth: AuthConfig | None, progress: ProgressSink, platform: Platform | None = None
    ) -> None:
        self.dist = dist
        self.registry = dist.registry
        self.auth = auth
        self.progress = progress
        self.platform = platform

    async def resolve(self, ref: Reference) -> Resolved:
        ep, manifest = await self.registry.resolve(ref, self.auth, self.platform)
        return Resolved(ref, ep, manifest)

    async def tags(self, ref: Reference) -> list[str]:
        tags = await self.registry.tags(ref, self.auth)
        if not tags:
            raise NotFound(f"no tags found for {ref.familiar_name}")
        return tags

    async def pull(self, r: Resolved) -> tuple[Image, bool]:
        """Pull what `r` names and record its tag and digest; returns (image, tag changed)."""
        ref, m = r.ref, r.manifest
        self.progress(Message(status=f"Pulling from {ref.familiar_name}", id=ref.digest or ref.tag))
        images = self.dist.images
        img = images.images.get(m.config.digest)
        if img is None:
            img = await self._fetch(r)
        self.progress(Message(status=f"Digest: {m.index_digest or m.digest}"))
        changed = images.refs.get(ref) != img.id

        def record() -> None:
            if ref.tag is not None:
                images.tag(img, ref)
            images.refs.add(ref.with_digest(m.index_digest or m.digest), img.id)

        # These writes fsync: keep them off the event loop.
        await asyncio.to_thread(record)
        return img, changed

    async def _fetch(self, r: Resolved) -> Image:
        ref, m = r.ref, r.manifest
        raw = await self._read_blob(r, m.config, MAX_CONFIG)
        diff_ids = _check_config(raw, m, self.platform, ref)
        chains = chain_ids(diff_ids)
        ok = False
        with self.dist.pinned(chains):
            try:
                await self._layers(r, diff_ids, chains)
                img = await asyncio.to_thread(self.dist.images.store, raw)
                ok = True
                return img
            finally:
                if not ok:
                    await self.dist.collect_orphans()

    async def _read_blob(self, r: Resolved, desc: Descriptor, limit: int) -> bytes:
        if desc.size > limit:
            raise InvalidParameter(f"blob {desc.digest} is too large ({desc.size} bytes)")
        out = bytearray()
        async for chunk in self.registry.open_blob(r.endpoint, r.ref, desc, self.auth):
            out += chunk
        return bytes(out)

    async def _layers(self, r: Resolved, diff_ids: list[str], chains: list[str]) -> None:
        descs = r.manifest.layers
        layers = self.dist.layers
        jobs: dict[int, _LayerJob] = {}
        try:
            for i, desc in enumerate(descs):
                if layers.has(chains[i]):
                    self.progress(Message(status="Already exists", id=short(desc.digest), detail=True))
                else:
                    jobs[i] = _LayerJob(i, desc, self.dist.temp_file(), self.dist.temp_file())
                    self.progress(Message(status="Pulling fs layer", id=short(desc.digest), detail=True))
            for n, job in enumerate(jobs.values()):
                if n >= MAX_DOWNLOADS:
                    self.progress(Message(status="Waiting", id=short(job.desc.digest), detail=True))
            slots = asyncio.Semaphore(MAX_DOWNLOADS)
            for job in jobs.values():
                job.task = asyncio.create_task(self._download(r, job, slots))
            parent: str | None = None
            for i in range(len(descs)):
                job_or_none = jobs.get(i)
                if job_or_none is not None:
                    layer = await self._apply(job_or_none, parent, r.ref.name)
                    if layer.diff_id != diff_ids[i]:
                        raise InvalidParameter(
                            f"layers from manifest don't match image configuration: layer {descs[i].digest} "
                            f"has diff ID {layer.diff_id}, the image config says {diff_ids[i]}"
                        )
                    lid = short(job_or_none.desc.digest)
                    self.progress(Message(status="Pull complete", id=lid, detail=True))
                parent = chains[i]
        finally:
            for job in jobs.values():
                job.abort()  # no-op for finished layers: they were read to the end already
                if job.task is not None and not job.task.done():
                    job.task.cancel()
            stages = [s for j in jobs.values() for s in (j.task, j.inflate) if s is not None]
            if stages:
                await asyncio.gather(*stages, return_exceptions=True)
            for job in jobs.values():
                job.close()

    async def _download(self, r: Resolved, job: _LayerJob, slots: asyncio.Semaphore) -> None:
        desc, f = job.desc, job.compressed
        lid = short(desc.digest)
        try:
            async with slots:
                job.inflate = _in_thread(lambda: _inflate(job.compressed, job.plain), f"inflate-{lid}")
                received = 0
                last = 0.0
                async for chunk in self.registry.open_blob(r.endpoint, r.ref, desc, self.auth):
                    f.append(chunk)
                    received += len(chunk)
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        self.progress(Message(status="Downloading", id=lid, current=received, total=desc.size))
                self.progress(Message(status="Verifying Checksum", id=lid, detail=True))
                job.downloaded = True
                f.finish()
                self.progress(Message(status="Download complete", id=lid, detail=True))
        except BaseException:
            job.abort()
            raise

    async def _apply(self, job: _LayerJob, parent: str | None, repository: str) -> Layer:
        loop = asyncio.get_running_loop()
        lid = short(job.desc.digest)
        progress = self.progress
        state = {"last": 0.0}

        def report(n: int) -> None:
            # dockerd shows extraction only once the download is complete.
            if job.downloaded:
                total = job.plain.written if job.plain.complete else None
                progress(Message(status="Extracting", id=lid, current=n, total=total, detail=True))

        def on_read(n: int) -> None:
            now = time.monotonic()
            if now - state["last"] >= PROGRESS_INTERVAL:
                state["last"] = now
                loop.call_soon_threadsafe(report, n)

        def work() -> Layer:
            stream = io.BufferedReader(_Counting(job.plain, on_read), READ_CHUNK)
            return self.dist.layers.register(cast(BinaryIO, stream), parent)

        fut = _in_thread(work, f"apply-{lid}")
        try:
            layer = await asyncio.shield(fut)
        except asyncio.CancelledError:
            job.abort()
            with contextlib.suppress(BaseException):
                await fut
            raise
        except Exception as e:
            if job.plain.failed:
                await job.error()  # the failed stage's own error says what went wrong
                raise InvalidParameter(f"pulling layer {job.desc.digest} was aborted") from None
            if isinstance(e, EngineError):
                raise InvalidParameter(f"failed to register layer: {e.message}") from e
            raise
        desc = job.desc
        self.dist.metadata.add(layer.diff_id, BlobSource(desc.digest, desc.size, repository))
        return layer


class _Counting(io.RawIOBase):
    def __init__(self, src: GrowingFile, on_read: Callable[[int], None]) -> None:
        self.src = src
        self.on_read = on_read
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.src.readinto(b)
        self.n += n
        self.on_read(self.n)
        return n


def _check_config(raw: bytes, m: Manifest, platform: Platform | None, ref: Reference) -> list[str]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter(f"invalid image config {m.config.digest}: {e}") from e
    if not isinstance(config, dict):
        raise InvalidParameter(f"invalid image config {m.config.digest}: not a JSON object")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidParameter(f"invalid image config {m.config.digest}: no rootfs.diff_ids")
    if len(diff_ids) != len(m.layers):
        raise InvalidParameter("layers from manifest don't match image configuration")
    if platform is not None and m.index_digest is None:
        actual = Platform(
            str(config.get("os", "")), str(config.get("architecture", "")), str(config.get("variant", ""))
        )
        if not platform.matches(actual) and not actual.matches(platform):
            raise NotFound(
                f"image with reference {ref.familiar()} was found but does not match the "
                f"specified platform: wanted {platform}, actual: {actual}"
            )
    return diff_ids
