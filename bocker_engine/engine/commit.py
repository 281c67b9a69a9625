"""Committing a writable layer into an image: `docker commit`, and every step of a build.

The container's changes (its layer against its init layer) are written as a tar by one thread
and applied by another onto a fresh snapshot of the image's top layer (btrfs: a snapshot, overlay:
a new upper directory), so nothing but the changes is copied. As in moby's NewChildImage, a
commit whose diff is the empty tar adds no layer: its history entry is `empty_layer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from bocker_engine.build.dockerfile import apply_config_change
from bocker_engine.engine.container_config import merge_image_config
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.images import Image, ImageService, host_arch
from bocker_engine.engine.layers import Layer, LayerStore, RWLayer
from bocker_engine.engine.pipes import piped
from bocker_engine.errors import Conflict, EngineError, NotFound
from bocker_engine.registry import reference as refs
from bocker_engine.timefmt import rfc3339nano

# sha256 of 1024 zero bytes: the tar of no changes (moby's layer.DigestSHA256EmptyTar).
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

# Container config keys an image keeps (the rest describe one container, not an image).
IMAGE_CONFIG_KEYS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
)


@dataclass
class CommitSpec:
    """What the new image says about itself beyond its filesystem."""

    config: dict[str, Any]
    created_by: str
    comment: str = ""
    author: str = ""
    # Reproducible builds: `created` of the image and its history entry, and the mtime clamp.
    epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def created_time(epoch: int | None) -> str:
    if epoch is None:
        return rfc3339nano()
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _diff_into_layer(layers: LayerStore, rw: RWLayer, parent: str | None, clamp: int | None) -> Layer:
    """The container layer's changes as a layer on `parent`; blocking."""

    def consume(inp: BinaryIO) -> Layer:
        if isinstance(inp, io.BytesIO):
            # The whole diff is in memory (piped's inline case): when the same changes on the
            # same parent are a layer already (a container committed again), that is the
            # layer, as register would find after applying them; no directory to make.
            with inp.getbuffer() as view:
                known = layers.find(parent, "sha256:" + hashlib.sha256(view).hexdigest())
            if known is not None:
                return known
        return layers.register(inp, parent)

    return piped(lambda out: layers.driver.diff(rw.mount_id, rw.init_id, out, clamp), consume)


def image_config_json(parent: Image | None, spec: CommitSpec, diff_id: str | None) -> bytes:
    now = created_time(spec.epoch)
    pcfg = parent.config if parent is not None else {}
    history = list(pcfg.get("history") or [])
    entry: dict[str, Any] = {"created": now, "created_by": spec.created_by}
    if spec.author:
        entry["author"] = spec.author
    if spec.comment:
        entry["comment"] = spec.comment
    if diff_id is None:
        entry["empty_layer"] = True
    history.append(entry)
    diff_ids = list((pcfg.get("rootfs") or {}).get("diff_ids") or [])
    if diff_id is not None:
        diff_ids.append(diff_id)
    out: dict[str, Any] = {}
    if spec.author:
        out["author"] = spec.author
    if spec.comment:
        out["comment"] = spec.comment
    out.update(
        {
            "architecture": pcfg.get("architecture") or host_arch(),
            "config": {k: v for k, v in spec.config.items() if k in IMAGE_CONFIG_KEYS},
            "created": now,
            "history": history,
            "os": pcfg.get("os") or "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    if pcfg.get("variant"):
        out["variant"] = pcfg["variant"]
    out.update(spec.extra)
    return json.dumps(out, separators=(",", ":")).encode()


async def commit_rw(
    images: ImageService, layers: LayerStore, rw: RWLayer, parent: Image | None, spec: CommitSpec
) -> Image:
    """A new image: `parent` plus the changes of the writable layer `rw` (on top of `parent`)."""
    top = parent.top_layer if parent is not None else None
    layer = await asyncio.to_thread(_diff_into_layer, layers, rw, top, spec.epoch)
    # Registered but not yet in an image: pinned, so a concurrent rmi's collection keeps it.
    images.pinned[layer.chain_id] += 1
    try:
        empty = layer.diff_id == EMPTY_TAR_DIFF_ID
        raw = image_config_json(parent, spec, None if empty else layer.diff_id)
        img = await asyncio.to_thread(images.store, raw, parent.id if parent is not None else "")
    finally:
        images.pinned[layer.chain_id] -= 1
        if images.pinned[layer.chain_id] <= 0:
            del images.pinned[layer.chain_id]
    if empty:
        # The empty layer is in no image (unless another has it): drop it again.
        await asyncio.to_thread(images.collect_layers)
    return img


def commit_config(container_config: dict[str, Any], body: dict[str, Any] | None, changes: list[str]) -> dict[str, Any]:
    """dockerd's CreateImageFromContainer: the request's config (or the container's), the
    `-c` changes applied to it, then merged with the container's config."""
    user = copy.deepcopy(body) if body else copy.deepcopy(container_config)
    for change in changes:
        for line in change.splitlines():
            if line.strip():
                apply_config_change(user, line)
    return merge_image_config(user, container_config)


class CommitService:
    """`docker commit` (POST /commit)."""

    def __init__(self, containers: ContainerService, images: ImageService, layers: LayerStore) -> None:
        self.containers = containers
        self.images = images
        self.layers = layers

    async def commit(
        self,
        ref: str,
        *,
        repo: str,
        tag: str,
        comment: str,
        author: str,
        changes: list[str],
        pause: bool,
        config: dict[str, Any] | None,
    ) -> Image:
        c = self.containers.get(ref)
        ref_to_tag = refs.parse_repo_tag(repo, tag or None) if repo else None
        if c.state.removing or c.state.Dead:
            raise Conflict(f"You cannot commit container {c.id} which is being removed")
        rw = self.layers.mounts.get(c.id)
        if rw is None:
            raise NotFound(f"No such container: {ref}")
        new_config = commit_config(c.config, config, changes)
        parent = self.images.images.get(c.image_id)
        cmd = [*(c.config.get("Entrypoint") or []), *(c.config.get("Cmd") or [])]
        spec = CommitSpec(new_config, " ".join(cmd), comment=comment, author=author)
        paused_here = False
        if pause and c.state.Running and not c.state.Paused:
            # Paused and unpaused within this request: the state on disk stays "running" (two
            # atomic rewrites of config.v2.json saved; restore checks the freezer after a crash).
            await self.containers.pause(c.id, persist=False)
            paused_here = True
        try:
            img = await commit_rw(self.images, self.layers, rw, parent, spec)
        finally:
            if paused_here:
                with contextlib.suppress(EngineError):
                    await self.containers.unpause(c.id, persist=False)
        if ref_to_tag is not None:
            self.images.tag(img, ref_to_tag)
        return img
