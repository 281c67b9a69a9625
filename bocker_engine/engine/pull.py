"""Pull: resolve a reference, download up to three layers at once, apply them in order.

Each download goes into an anonymous file under the data root; the layer below it is applied
from that file *while it is still being written* (a reader that waits for more bytes), so the
first layer streams straight from the socket into the layer store and later ones download in
parallel. Nothing is ever held in memory whole. The reader only sees the end of the file once
the blob's digest has checked out, so a corrupted blob can never complete a layer; the applied
layer's diff ID is then checked against the (digest-verified) image config.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

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

MAX_DOWNLOADS = 3  # dockerd's max-concurrent-downloads default
MAX_CONFIG = 8 << 20
PROGRESS_INTERVAL = 0.1  # seconds between progress messages per layer
READ_CHUNK = 1 << 20


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


class _LayerJob:
    def __init__(self, index: int, desc: Descriptor, fd: int) -> None:
        self.index = index
        self.desc = desc
        self.file = GrowingFile(fd)
        self.downloaded = False
        self.task: asyncio.Task[None] | None = None


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
        changed = False
        if ref.tag is not None:
            changed = images.refs.get(ref) != img.id
            images.tag(img, ref)
        else:
            changed = images.refs.get(ref) != img.id
        images.refs.add(ref.with_digest(m.index_digest or m.digest), img.id)
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
                img = self.dist.images.store(raw)
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
        for i, desc in enumerate(descs):
            if layers.has(chains[i]):
                self.progress(Message(status="Already exists", id=short(desc.digest), detail=True))
            else:
                jobs[i] = _LayerJob(i, desc, self.dist.temp_file())
                self.progress(Message(status="Pulling fs layer", id=short(desc.digest), detail=True))
        for n, job in enumerate(jobs.values()):
            if n >= MAX_DOWNLOADS:
                self.progress(Message(status="Waiting", id=short(job.desc.digest), detail=True))
        slots = asyncio.Semaphore(MAX_DOWNLOADS)
        try:
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
            for job in jobs.values():
                assert job.task is not None
                await job.task  # surfaces a download error that the applier did not see
        finally:
            for job in jobs.values():
                job.file.fail()  # no-op for finished layers: they were read to the end already
                if job.task is not None and not job.task.done():
                    job.task.cancel()
            tasks = [j.task for j in jobs.values() if j.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for job in jobs.values():
                job.file.close()

    async def _download(self, r: Resolved, job: _LayerJob, slots: asyncio.Semaphore) -> None:
        desc, f = job.desc, job.file
        lid = short(desc.digest)
        try:
            async with slots:
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
            f.fail()
            raise

    async def _apply(self, job: _LayerJob, parent: str | None, repository: str) -> Layer:
        loop = asyncio.get_running_loop()
        lid = short(job.desc.digest)
        total = job.desc.size
        progress = self.progress
        state = {"last": 0.0}

        def report(n: int) -> None:
            # dockerd shows extraction only once the download is complete.
            if job.downloaded:
                progress(Message(status="Extracting", id=lid, current=n, total=total))

        def on_read(n: int) -> None:
            now = time.monotonic()
            if now - state["last"] >= PROGRESS_INTERVAL or n >= total:
                state["last"] = now
                loop.call_soon_threadsafe(report, n)

        def work() -> Layer:
            counted = _Counting(job.file, on_read)
            stream = io.BufferedReader(counted, READ_CHUNK)
            return self.dist.layers.register(decompressed(cast(BinaryIO, stream)), parent)

        fut = loop.run_in_executor(None, work)
        try:
            layer = await asyncio.shield(fut)
        except _Aborted:
            assert job.task is not None
            await job.task  # the download's own error says what went wrong
            raise
        except asyncio.CancelledError:
            job.file.fail()
            with contextlib.suppress(BaseException):
                await fut
            raise
        except EngineError as e:
            raise InvalidParameter(f"failed to register layer: {e.message}") from e
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
