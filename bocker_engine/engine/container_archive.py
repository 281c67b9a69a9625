"""`docker cp`: HEAD/GET/PUT /containers/{id}/archive on a container's root filesystem.

Running or not, the container's filesystem is taken through the storage driver (get/put are
reference counted, so a copy and a start or an exit may overlap). The filesystem work itself is
in storage/container_copy.py and runs in a thread; bytes stream through a pipe both ways.

v1 limit: only the root filesystem is seen. Paths under a bind mount of a running container
read and write the rootfs directory beneath the mount, not the mounted source.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, cast

from bocker_engine.engine.pipes import drain_thread, feed_thread
from bocker_engine.errors import Conflict, InvalidParameter, NotFound, System
from bocker_engine.storage import container_copy as cc
from bocker_engine.storage.layers import decompressed, tar_path

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.containers import ContainerService

PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"


def stat_header(st: cc.PathStat) -> str:
    return base64.b64encode(json.dumps(st.to_json(), separators=(",", ":")).encode()).decode()


def check_path(path: str) -> str:
    if not path:
        raise InvalidParameter("bad parameter: path cannot be empty")
    return path


def _file_not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


@contextlib.asynccontextmanager
async def _rootfs(svc: ContainerService, c: Container) -> AsyncIterator[str]:
    if c.state.removing:
        raise Conflict(f"container {c.id} is being removed")
    if c.state.Dead:
        raise Conflict(f"container {c.id} is dead")
    rw = svc.layers.mounts.get(c.id)
    if rw is None:
        raise System(f"container {c.id} has no filesystem")
    root = await asyncio.to_thread(svc.driver.get, rw.mount_id)
    try:
        yield root
    finally:
        await asyncio.to_thread(svc.driver.put, rw.mount_id)


async def stat(svc: ContainerService, ref: str, path: str) -> cc.PathStat:
    c = svc.get(ref)
    async with _rootfs(svc, c) as root:
        try:
            return await asyncio.to_thread(cc.stat_path, root, check_path(path))
        except NotFound:
            raise _file_not_found(path, ref) from None


@contextlib.asynccontextmanager
async def archive(
    svc: ContainerService, ref: str, path: str
) -> AsyncIterator[tuple[cc.PathStat, AsyncIterator[bytes]]]:
    """The path's stat and its tar as chunks; the filesystem stays held until the block ends."""
    c = svc.get(ref)
    async with _rootfs(svc, c) as root:
        try:
            st = await asyncio.to_thread(cc.stat_path, root, check_path(path))
        except NotFound:
            raise _file_not_found(path, ref) from None
        chunks = cast(AsyncGenerator[bytes, None], drain_thread(lambda out: cc.archive_path(root, path, out)))
        async with contextlib.aclosing(chunks):
            yield st, chunks
    svc.on_event("archive-path", c, {})


@contextlib.asynccontextmanager
async def export(svc: ContainerService, ref: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """`docker export`: the whole filesystem as a tar; held until the block ends."""
    c = svc.get(ref)
    async with _rootfs(svc, c) as root:
        chunks = cast(AsyncGenerator[bytes, None], drain_thread(lambda out: tar_path(root, "/", out)))
        async with contextlib.aclosing(chunks):
            yield chunks
    svc.on_event("export", c, {})


async def extract(
    svc: ContainerService,
    ref: str,
    path: str,
    body: AsyncIterator[bytes],
    *,
    no_overwrite_dir_non_dir: bool,
    copy_uid_gid: bool,
) -> None:
    """Extract an uploaded tar (plain, gzip, bzip2, xz or zstd) into the directory `path`."""
    c = svc.get(ref)
    async with _rootfs(svc, c) as root:
        try:
            dirfd, dest = await asyncio.to_thread(cc.extract_dir, root, check_path(path))
        except NotFound:
            raise _file_not_found(path, ref) from None
        try:
            if c.host_config.get("ReadonlyRootfs"):
                raise InvalidParameter("container rootfs is marked read-only")
            user = c.config.get("User") or ""
            owner = await asyncio.to_thread(cc.lookup_owner, root, user) if copy_uid_gid and user else None
            await feed_thread(
                body,
                lambda f: cc.extract(
                    decompressed(f), dirfd, dest, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, owner=owner
                ),
            )
        finally:
            os.close(dirfd)
    svc.on_event("extract-to-dir", c, {})
