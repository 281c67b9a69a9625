"""Push: layers rebuilt byte for byte from storage, gzip-compressed while they upload.

A layer the registry already has is skipped (HEAD), one that another repository of the same
registry has is mounted from there, and everything else is compressed deterministically (fixed
level, no timestamp), so the same layer always becomes the same blob. The compressed digest is
remembered per layer and repository, which is how a second push finds "Layer already exists".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from bocker_engine.engine.distribution import BlobSource, Distribution
from bocker_engine.engine.images import Image
from bocker_engine.engine.layers import chain_ids
from bocker_engine.engine.pipes import drain_thread
from bocker_engine.errors import EngineError, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.config import Endpoint
from bocker_engine.registry.manifest import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST
from bocker_engine.registry.reference import Reference

MAX_UPLOADS = 3
# Go's gzip.DefaultCompression, what dockerd pushes with.
GZIP_LEVEL = 6
PIPE_CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.1


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@dataclass
class PushResult:
    tag: str
    digest: str
    size: int


class _Counter:
    def __init__(self) -> None:
        self.n = 0


def _compress(dist: Distribution, chain: str, out: BinaryIO, counter: _Counter) -> None:
    """Layer tar -> gzip, in a thread. The gzip header carries no name and no time: deterministic."""
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    class Sink:
        def write(self, data: bytes) -> int:
            counter.n += len(data)
            c = comp.compress(data)
            if c:
                out.write(c)
            return len(data)

    dist.layers.tar(chain, Sink())  # type: ignore[arg-type]
    out.write(comp.flush())


class Pusher:
    def __init__(self, dist: Distribution, auth: AuthConfig | None, progress: ProgressSink) -> None:
        self.dist = dist
        self.registry = dist.registry
        self.auth = auth
        self.progress = progress

    def targets(self, repo: Reference, tag: str | None) -> list[tuple[Reference, Image]]:
        """What `docker push repo[:tag]` pushes: one tag, or every tag of the repository."""
        images = self.dist.images
        if tag:
            ref = repo.with_tag(tag)
            img_id = images.refs.get(ref)
            if img_id is None or img_id not in images.images:
                raise NotFound(f"tag does not exist: {ref.familiar()}")
            return [(ref, images.images[img_id])]
        out = []
        for key, img_id in sorted(images.refs.refs.items()):
            r = images.refs.refs_full[key]
            if r.name == repo.name and r.tag is not None and img_id in images.images:
                out.append((r, images.images[img_id]))
        if not out:
            raise NotFound(f"An image does not exist locally with the tag: {repo.familiar_name}")
        return out

    async def push(self, repo: Reference, tag: str | None) -> list[PushResult]:
        self.progress(Message(status=f"The push refers to repository [{repo.name}]"))
        targets = self.targets(repo, tag)
        ep = await self.registry.push_endpoint(repo, self.auth)
        results = []
        for ref, img in targets:
            results.append(await self._push_image(ep, ref, img))
        return results

    async def _push_image(self, ep: Endpoint, ref: Reference, img: Image) -> PushResult:
        diff_ids = img.diff_ids
        chains = chain_ids(diff_ids)
        # A layer that appears twice (identical diffs at two places) is pushed once.
        unique: dict[str, str] = {}
        for d, c in zip(diff_ids, chains, strict=True):
            unique.setdefault(d, c)
        for d in unique:
            self.progress(Message(status="Preparing", id=short(d), detail=True))
        for n, d in enumerate(unique):
            if n >= self.dist.max_uploads:
                self.progress(Message(status="Waiting", id=short(d), detail=True))
        slots = asyncio.Semaphore(self.dist.max_uploads)
        tasks = {d: asyncio.create_task(self._push_layer(ep, ref, d, c, slots)) for d, c in unique.items()}
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        blobs = {d: t.result() for d, t in tasks.items()}
        config_digest = img.id
        if not await self.registry.blob_exists(ep, ref, config_digest, self.auth):
            await self.registry.upload_blob(ep, ref, _once(img.raw), self.auth, digest=config_digest, size=len(img.raw))
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(img.raw), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": blobs[d].size, "digest": blobs[d].digest} for d in diff_ids],
        }
        # dockerd's manifests are indented with three spaces; nothing depends on it but diffs.
        raw = json.dumps(manifest, indent=3).encode()
        digest = await self.registry.put_manifest(ep, ref, DOCKER_MANIFEST, raw, self.auth)
        tag = ref.tag or "latest"
        self.progress(Message(status=f"{tag}: digest: {digest} size: {len(raw)}"))
        self.progress(Message(aux={"Tag": tag, "Digest": digest, "Size": len(raw)}, detail=True))
        self.dist.images.refs.add(ref.with_digest(digest), img.id)
        return PushResult(tag, digest, len(raw))

    async def _push_layer(
        self, ep: Endpoint, ref: Reference, diff_id: str, chain: str, slots: asyncio.Semaphore
    ) -> BlobSource:
        lid = short(diff_id)
        async with slots:
            meta = self.dist.metadata
            known = [s for s in meta.sources(diff_id) if s.domain == ref.domain]
            for s in known:
                if s.repository == ref.name and await self.registry.blob_exists(ep, ref, s.digest, self.auth):
                    self.progress(Message(status="Layer already exists", id=lid, detail=True))
                    return s
            for s in known:
                if s.repository == ref.name:
                    continue
                from_path = s.repository.split("/", 1)[1]
                try:
                    mounted = await self.registry.mount_blob(ep, ref, s.digest, from_path, self.auth)
                except EngineError:
                    mounted = False  # not allowed to read the source: upload instead
                if mounted:
                    self.progress(Message(status=f"Mounted from {from_path}", id=lid, detail=True))
                    src = BlobSource(s.digest, s.size, ref.name)
                    meta.add(diff_id, src)
                    return src
            layer = self.dist.layers.get(chain)
            counter = _Counter()
            total = layer.size
            loop = asyncio.get_running_loop()
            state = {"last": 0.0}

            def on_progress(_sent: int) -> None:
                now = loop.time()
                if now - state["last"] >= PROGRESS_INTERVAL:
                    state["last"] = now
                    self.progress(
                        Message(
                            status="Pushing",
                            id=lid,
                            current=min(counter.n, total) if total else counter.n,
                            total=total or None,
                        )
                    )

            self.progress(Message(status="Pushing", id=lid, current=0, total=total or None))
            produce = drain_thread(lambda out: _compress(self.dist, chain, out, counter))
            chunks = cast(AsyncGenerator[bytes, None], produce)
            async with contextlib.aclosing(chunks):
                digest, size = await self.registry.upload_blob(ep, ref, _progressing(chunks, on_progress), self.auth)
            self.progress(Message(status="Pushed", id=lid, detail=True))
            src = BlobSource(digest, size, ref.name)
            meta.add(diff_id, src)
            return src


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _progressing(chunks: AsyncIterator[bytes], on_chunk: Callable[[int], None]) -> AsyncIterator[bytes]:
    sent = 0
    async for c in chunks:
        sent += len(c)
        on_chunk(sent)
        yield c
