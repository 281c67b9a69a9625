"""POST /build as one engine call: receive the context, parse the Dockerfile, run the builder,
tag the result, and leave nothing behind but images (the context directory, the writable layers
and the containers of the steps all go, on success, failure or a client that hung up)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from bocker_engine import jsonload
from bocker_engine.build import context as build_context
from bocker_engine.build import remote
from bocker_engine.build.builder import SCRATCH_PREFIX, Builder, BuildOptions
from bocker_engine.build.parser import parse
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.distribution import Distribution
from bocker_engine.engine.images import Image, ImageService
from bocker_engine.engine.layers import LayerStore
from bocker_engine.engine.pull import Puller
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry import reference as refs
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.manifest import Platform


def registry_auths(header: str | None) -> dict[str, AuthConfig]:
    """X-Registry-Config: base64url JSON of registry -> auth config (the CLI sends them all)."""
    if not header:
        return {}
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        data = jsonload.loads(raw)
    except (ValueError, jsonload.JSONError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for host, cfg in data.items():
        if isinstance(cfg, dict):
            out[str(host)] = AuthConfig.from_json(cfg)
    return out


class BuildService:
    def __init__(
        self, containers: ContainerService, images: ImageService, layers: LayerStore, distribution: Distribution
    ) -> None:
        self.containers = containers
        self.images = images
        self.layers = layers
        self.distribution = distribution

    def sweep(self) -> None:
        """Writable layers of steps a crashed daemon left behind; blocking."""
        for key in [k for k in self.layers.mounts if k.startswith(SCRATCH_PREFIX)]:
            self.layers.remove_rw(key)

    async def _pull(
        self, name: str, platform: Platform | None, auths: dict[str, AuthConfig], progress: ProgressSink
    ) -> Image:
        ref = refs.parse(name).tagged_or_latest()
        auth = auths.get(ref.domain) or (
            auths.get("https://index.docker.io/v1/") if ref.domain == "docker.io" else None
        )
        puller = Puller(self.distribution, auth, progress, platform)
        img, _ = await puller.pull(await puller.resolve(ref))
        return img

    async def _context(
        self, chunks: AsyncIterator[bytes], base: str, opts: BuildOptions, progress: ProgressSink
    ) -> build_context.BuildContext:
        """The request body, or what `remote=` names (dockerd's remotecontext.Detect)."""
        if not opts.remote:
            return await build_context.receive(chunks, base, opts.dockerfile)
        remote.check(opts.remote)
        if remote.is_git_url(opts.remote):
            return await build_context.from_directory(
                base, opts.dockerfile, lambda root: remote.clone(opts.remote, root)
            )
        async with remote.Download(opts.remote, progress) as d:
            # A text/plain body is the Dockerfile itself, whatever -f says.
            return await build_context.receive(d.chunks(), base, "" if d.mime == "text/plain" else opts.dockerfile)

    async def build(
        self,
        chunks: AsyncIterator[bytes],
        opts: BuildOptions,
        progress: ProgressSink,
        registry_config: str | None = None,
    ) -> tuple[Image, list[refs.Reference]]:
        tags = [refs.parse(t).tagged_or_latest() for t in opts.tags]
        auths = registry_auths(registry_config)
        base = os.path.join(self.layers.tmp_dir(), "builds")
        ctx = await self._context(chunks, base, opts, progress)
        try:
            dockerfile = parse(ctx.dockerfile, opts.dockerfile or "Dockerfile")
            builder = Builder(
                self.containers,
                self.images,
                self.layers,
                lambda name, platform: self._pull(name, platform, auths, progress),
                progress,
                opts,
                ctx,
                dockerfile,
            )
            img = await builder.run()
        finally:
            await asyncio.shield(asyncio.to_thread(ctx.close))
        progress(Message(aux={"ID": img.id}))
        progress(Message(stream=f"Successfully built {img.id[7:19]}\n"))
        for ref in tags:
            self.images.tag(img, ref)
            progress(Message(stream=f"Successfully tagged {ref.familiar()}\n"))
        return img, tags


def parse_json_query(raw: str | None, what: str) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        from bocker_engine.errors import InvalidParameter

        raise InvalidParameter(f"invalid {what} JSON") from None
