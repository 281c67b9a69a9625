"""Pull: resolve a reference, download up to three layers at once, apply them in order.

Each layer is downloaded into an anonymous file under the data root, and a layer worker
process (storage/worker.py) decompresses and extracts that file *while it is still being
written*: the download tells the worker how far the file is written (`Feed`), and that it has
ended only once the blob's digest checked out, so a corrupted blob can never complete a layer.

Downloads run three at a time (later layers slowed while extraction is the bottleneck: `_Pacer`);
applying is sequential (each layer is a snapshot of its parent), so later layers download while
earlier ones are extracted. The daemon itself only downloads and
hashes: decompressing and extracting run in the worker, with a GIL of its own and at a lower CPU
priority, so the API stays quick during a pull. Nothing is held in memory whole. A layer reaches
the store only if its blob digest and its diff ID both checked out.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass

from bocker_engine.engine.distribution import BlobSource, Distribution
from bocker_engine.engine.images import Image
from bocker_engine.engine.layers import DiffIDMismatch, Layer, chain_ids
from bocker_engine.errors import EngineError, InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.config import Endpoint
from bocker_engine.registry.manifest import Descriptor, Manifest, Platform
from bocker_engine.registry.reference import Reference
from bocker_engine.storage.workerpool import Feed

MAX_DOWNLOADS = 3  # dockerd's max-concurrent-downloads default
MAX_CONFIG = 8 << 20
PROGRESS_INTERVAL = 0.1  # seconds between progress messages per layer
BACKLOG = 4 << 20  # bytes of the layer being extracted that are downloaded but not extracted yet
AHEAD_RATE = 16 << 20  # bytes/s for later layers' downloads while extraction has a BACKLOG


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@dataclass
class Resolved:
    ref: Reference  # as asked for: tagged or digested
    endpoint: Endpoint
    manifest: Manifest


class _Pacer:
    """Slows later layers' downloads while extraction, not the network, is the bottleneck.

    With a fast registry (a local one, a mirror on the LAN) three downloads at full speed keep
    the daemon's event loop busy hashing and writing, so API calls wait (measured on 2 cores,
    `docker ps` in the first 0.35 s of a pull: 40 ms median, 58-65 ms p90; 26-32 and 44-52 ms
    when held back), and the pull ends no sooner, since layers are extracted one at a time. So while
    the layer being extracted has a backlog, the others download at AHEAD_RATE; while its
    extraction waits for the network, all download at full speed, as with dockerd. Slowed, not
    stopped: a registry may drop a connection that stalls.
    """

    def __init__(self) -> None:
        self.current: _LayerJob | None = None
        self.extracted = 0

    def extracting(self, job: _LayerJob | None) -> None:
        self.current, self.extracted = job, 0

    def progress(self, n: int) -> None:
        self.extracted = n

    async def turn(self, job: _LayerJob, n: int) -> None:
        cur = self.current
        if cur is not None and job is not cur and cur.written - self.extracted > BACKLOG:
            await asyncio.sleep(n / AHEAD_RATE)


class _LayerJob:
    def __init__(self, desc: Descriptor, fd: int) -> None:
        self.desc = desc
        self.fd = fd  # the compressed layer, as downloaded so far
        self.written = 0
        self.feed = Feed()
        self.downloaded = False
        self.task: asyncio.Task[None] | None = None

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.written += len(data)
        self.feed.grow(self.written)

    def abort(self) -> None:
        if not self.feed.complete:
            self.feed.fail()  # kills the worker reading it, if any

    async def error(self) -> None:
        """Raise whatever made the download fail."""
        if self.task is not None:
            await self.task

    def close(self) -> None:
        """Blocking: closing a file of many megabytes frees its blocks, not for the event loop."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _close_all(jobs: list[_LayerJob]) -> None:
    for job in jobs:
        job.close()


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
        pacer = _Pacer()
        try:
            for i, desc in enumerate(descs):
                if layers.has(chains[i]):
                    self.progress(Message(status="Already exists", id=short(desc.digest), detail=True))
                else:
                    jobs[i] = _LayerJob(desc, self.dist.temp_file())
                    self.progress(Message(status="Pulling fs layer", id=short(desc.digest), detail=True))
            if jobs:
                layers.workers.warm()  # its start-up overlaps the first download
            for n, job in enumerate(jobs.values()):
                if n >= self.dist.max_downloads:
                    self.progress(Message(status="Waiting", id=short(job.desc.digest), detail=True))
            slots = asyncio.Semaphore(self.dist.max_downloads)
            for job in jobs.values():
                job.task = asyncio.create_task(self._download(r, job, slots, pacer))
            parent: str | None = None
            for i in range(len(descs)):
                job_or_none = jobs.get(i)
                if job_or_none is not None:
                    pacer.extracting(job_or_none)
                    await self._apply(job_or_none, parent, diff_ids[i], r.ref.name, pacer)
                    pacer.extracting(None)
                    await asyncio.to_thread(job_or_none.close)  # its download is over: free the space now
                    self.progress(Message(status="Pull complete", id=short(job_or_none.desc.digest), detail=True))
                parent = chains[i]
        finally:
            for job in jobs.values():
                job.abort()  # no-op for finished layers
                if job.task is not None and not job.task.done():
                    job.task.cancel()
            tasks = [j.task for j in jobs.values() if j.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(asyncio.to_thread(_close_all, list(jobs.values())))

    async def _download(self, r: Resolved, job: _LayerJob, slots: asyncio.Semaphore, pacer: _Pacer) -> None:
        desc = job.desc
        lid = short(desc.digest)
        try:
            async with slots:
                last = 0.0
                async for chunk in self.registry.open_blob(r.endpoint, r.ref, desc, self.auth):
                    job.append(chunk)
                    await pacer.turn(job, len(chunk))
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        self.progress(Message(status="Downloading", id=lid, current=job.written, total=desc.size))
                self.progress(Message(status="Verifying Checksum", id=lid, detail=True))
                job.downloaded = True
                job.feed.finish()
                self.progress(Message(status="Download complete", id=lid, detail=True))
        except BaseException:
            job.abort()
            raise

    async def _apply(self, job: _LayerJob, parent: str | None, diff_id: str, repository: str, pacer: _Pacer) -> Layer:
        desc = job.desc
        lid = short(desc.digest)
        if job.feed.failed:
            await job.error()
            raise InvalidParameter(f"pulling layer {desc.digest} was aborted")
        last = 0.0

        def progress(n: int) -> None:
            nonlocal last
            pacer.progress(n)
            now = time.monotonic()
            # dockerd shows extraction only once the download is complete, in compressed bytes.
            if job.downloaded and now - last >= PROGRESS_INTERVAL:
                last = now
                self.progress(Message(status="Extracting", id=lid, current=n, total=desc.size, detail=True))

        try:
            layer = await self.dist.layers.register_file(
                job.fd, parent, expect_diff_id=diff_id, feed=job.feed, progress=progress
            )
        except DiffIDMismatch as e:
            raise InvalidParameter(
                f"layers from manifest don't match image configuration: layer {desc.digest} "
                f"has diff ID {e.actual}, the image config says {diff_id}"
            ) from None
        except Exception as e:
            if job.feed.failed:
                await job.error()  # the download's own error says what went wrong
                raise InvalidParameter(f"pulling layer {desc.digest} was aborted") from None
            if isinstance(e, EngineError):
                raise InvalidParameter(f"failed to register layer: {e.message}") from e
            raise
        # Off the event loop, like every file write during a pull: the API must not wait for it.
        await asyncio.to_thread(self.dist.metadata.add, layer.diff_id, BlobSource(desc.digest, desc.size, repository))
        return layer


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
