"""The build context: the request body (a tar, maybe compressed, or a bare Dockerfile) streamed
to a directory on the data root, never held in memory, then trimmed by `.dockerignore`.

Extraction is the `docker cp` extractor (openat2 RESOLVE_IN_ROOT): no member lands outside the
context directory, whatever its name or the symlinks before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

from bocker_engine.build import ignore
from bocker_engine.engine.pipes import feed_thread
from bocker_engine.errors import InvalidParameter, System
from bocker_engine.storage import container_copy, safepath
from bocker_engine.storage.layers import Prefixed, decompressed

BLOCK = 512


@dataclass
class BuildContext:
    workdir: str  # everything of this build on disk; removed by close()
    root: str  # the context's files
    dockerfile: str  # the Dockerfile's text

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _looks_like_tar(head: bytes) -> bool:
    if len(head) < BLOCK:
        return head.strip(b"\0") == b""
    if head[257:262] == b"ustar" or head[:BLOCK] == bytes(BLOCK):
        return True
    # A v7 tar: the header checksum holds.
    try:
        stored = int(head[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 32 * 8 + sum(head[156:BLOCK])


def _receive(src: BinaryIO, root: str) -> None:
    stream = decompressed(src)
    head = b""
    while len(head) < BLOCK:
        data = stream.read(BLOCK - len(head))
        if not data:
            break
        head += data
    if not _looks_like_tar(head):
        # `curl --data-binary @Dockerfile`: the body is the Dockerfile itself.
        with open(os.path.join(root, "Dockerfile"), "wb") as f:
            f.write(head)
            shutil.copyfileobj(stream, f, 1 << 20)
        return
    if head.strip(b"\0") == b"":
        return  # an empty archive
    fd, name = container_copy.extract_dir(root, "/")
    try:
        container_copy.extract(Prefixed(head, stream), fd, name, no_overwrite_dir_non_dir=False, owner=None)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def _read_in_root(root: str, path: str) -> bytes | None:
    rootfd = safepath.open_root(root)
    try:
        try:
            fd = safepath.open_in_root(rootfd, path.lstrip("/"), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(f"/proc/self/fd/{f.fileno()}"):
                return None
            return f.read(16 << 20)
    finally:
        os.close(rootfd)


def _setup(base: str, dockerfile_name: str) -> tuple[str, str, str]:
    os.makedirs(base, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="build-", dir=base)
    root = os.path.join(workdir, "context")
    os.mkdir(root, 0o755)
    return workdir, root, dockerfile_name


def _finish(workdir: str, root: str, dockerfile_name: str) -> BuildContext:
    name = dockerfile_name or "Dockerfile"
    text = _read_in_root(root, name)
    if text is None and not dockerfile_name:
        name = "dockerfile"
        text = _read_in_root(root, name)
    if text is None:
        # dockerd's error is untyped here: a 500, before any output.
        raise System(f"Cannot locate specified Dockerfile: {dockerfile_name or 'Dockerfile'}")
    patterns = _read_in_root(root, ".dockerignore")
    if patterns:
        ignore.apply(root, ignore.Matcher(ignore.parse(patterns.decode("utf-8", "replace"))), keep=(name.lstrip("/"),))
    return BuildContext(workdir, root, text.decode("utf-8", "replace"))


async def receive(chunks: AsyncIterator[bytes], base: str, dockerfile_name: str) -> BuildContext:
    """Stream the request body into a new context directory under `base`."""
    import asyncio

    workdir, root, name = await asyncio.to_thread(_setup, base, dockerfile_name)
    try:
        await feed_thread(chunks, lambda src: _receive(src, root))
        return await asyncio.to_thread(_finish, workdir, root, name)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
        raise


async def from_directory(base: str, dockerfile_name: str, fill: Callable[[str], Awaitable[str]]) -> BuildContext:
    """A context made by `fill(empty dir)` (a git checkout), which returns the context's root."""
    import asyncio

    workdir, root, name = await asyncio.to_thread(_setup, base, dockerfile_name)
    try:
        ctx_root = await fill(root)
        return await asyncio.to_thread(_finish, workdir, ctx_root, name)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
        raise


def check_dockerfile_name(name: str) -> None:
    if "\0" in name:
        raise InvalidParameter("invalid Dockerfile name")
