"""Layers by chain ID over a storage driver, with dockerd's layerdb layout.

image/<driver>/layerdb/sha256/<chain>/{diff,size,cache-id,parent,tar-split.json.gz}
image/<driver>/layerdb/mounts/<container>/{mount-id,init-id,parent}
image/<driver>/layerdb/inits/<init-id>   (an init layer shared by the containers of one image)

A layer's directory in the driver is named by a random cache id; the chain id names its
content and ancestry. The tar-split file lets us rebuild the layer's original tar byte for
byte (push, save), so its digest still matches the image config's diff_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from bocker_engine.engine.ids import new_id
from bocker_engine.engine.store import read_text, remove_quiet, sync_dir, write_atomic, write_new
from bocker_engine.errors import InvalidParameter, NotFound
from bocker_engine.storage import layers as tarlayers
from bocker_engine.storage.driver import Driver
from bocker_engine.storage.workerpool import Feed, WorkerPool


def chain_id(parent: str | None, diff_id: str) -> str:
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(chain_id(out[-1] if out else None, d))
    return out


@dataclass
class Layer:
    chain_id: str
    diff_id: str
    parent: str | None
    cache_id: str
    size: int


@dataclass
class PendingLayer:
    """A layer being filled: a driver directory and a layerdb entry not yet committed."""

    parent: str | None
    parent_cache: str | None
    cache: str
    tmpdir: str
    committed: bool = False

    @property
    def tar_split(self) -> str:
        return os.path.join(self.tmpdir, "tar-split.json.gz")


class DiffIDMismatch(InvalidParameter):
    def __init__(self, actual: str, expected: str) -> None:
        super().__init__(f"layer has diff ID {actual}, expected {expected}")
        self.actual = actual
        self.expected = expected


@dataclass
class RWLayer:
    container: str
    mount_id: str
    init_id: str
    parent: str | None


class LayerStore:
    def __init__(self, root: str, driver: Driver) -> None:
        self.root = os.path.join(root, "layerdb")
        self.driver = driver
        self.layers: dict[str, Layer] = {}
        self.mounts: dict[str, RWLayer] = {}
        self.lock = threading.Lock()
        # Shared init layers (see create_rw): the complete ones, and how many creates are
        # between making sure of one and registering their container's mount.
        self.inits: set[str] = set()
        self._init_users: dict[str, int] = {}
        self._init_lock = threading.Lock()
        self.workers = WorkerPool()

    def _dir(self, chain: str) -> str:
        return os.path.join(self.root, "sha256", chain.split(":", 1)[1])

    def tmp_dir(self) -> str:
        """Scratch space on the store's filesystem, emptied at every daemon start."""
        return os.path.join(self.root, "tmp")

    def load(self) -> None:
        os.makedirs(os.path.join(self.root, "sha256"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "mounts"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "inits"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "tmp"), exist_ok=True)
        shutil.rmtree(os.path.join(self.root, "tmp"))
        os.makedirs(os.path.join(self.root, "tmp"))
        for name in os.listdir(os.path.join(self.root, "sha256")):
            d = os.path.join(self.root, "sha256", name)
            cache = read_text(os.path.join(d, "cache-id"))
            diff = read_text(os.path.join(d, "diff"))
            if not cache or not diff or not self.driver.exists(cache):
                # An interrupted registration: its driver dir is garbage-collected below.
                shutil.rmtree(d, ignore_errors=True)
                continue
            self.layers["sha256:" + name] = Layer(
                "sha256:" + name,
                diff,
                read_text(os.path.join(d, "parent")) or None,
                cache,
                int(read_text(os.path.join(d, "size"), "0")),
            )
        for name in os.listdir(os.path.join(self.root, "mounts")):
            d = os.path.join(self.root, "mounts", name)
            self.mounts[name] = RWLayer(
                name,
                read_text(os.path.join(d, "mount-id")),
                read_text(os.path.join(d, "init-id")),
                read_text(os.path.join(d, "parent")) or None,
            )
        self.inits = set(os.listdir(os.path.join(self.root, "inits")))

    def get(self, chain: str) -> Layer:
        layer = self.layers.get(chain)
        if layer is None:
            raise NotFound(f"layer does not exist: {chain}")
        return layer

    def has(self, chain: str) -> bool:
        return chain in self.layers

    def find(self, parent: str | None, diff_id: str) -> Layer | None:
        """The layer with these contents on `parent`, if registered."""
        with self.lock:
            return self.layers.get(chain_id(parent, diff_id))

    def prepare(self, parent: str | None) -> PendingLayer:
        """A new, empty driver directory on top of `parent`; blocking."""
        parent_layer = self.get(parent) if parent else None
        pending = PendingLayer(
            parent,
            parent_layer.cache_id if parent_layer else None,
            new_id(),
            tempfile.mkdtemp(dir=os.path.join(self.root, "tmp")),
        )
        try:
            self.driver.create(pending.cache, pending.parent_cache)
        except BaseException:
            self.discard(pending)
            raise
        return pending

    def commit(self, pending: PendingLayer, diff_id: str, size: int) -> Layer:
        """Record a filled directory as the layer (parent, diff_id); blocking."""
        chain = chain_id(pending.parent, diff_id)
        with self.lock:
            existing = self.layers.get(chain)
            if existing is not None:
                # Registered meanwhile by another pull or load of the same layer: keep theirs.
                self.discard(pending)
                pending.committed = True
                return existing
            # The directory appears whole by its rename: its files need no temp files of their
            # own, only to be on disk, with their names, before it does.
            for fname, value in (
                ("diff", diff_id),
                ("size", str(size)),
                ("cache-id", pending.cache),
                ("parent", pending.parent or ""),
            ):
                if value:
                    write_new(os.path.join(pending.tmpdir, fname), value.encode())
            sync_dir(pending.tmpdir)
            os.replace(pending.tmpdir, self._dir(chain))
            layer = Layer(chain, diff_id, pending.parent, pending.cache, size)
            self.layers[chain] = layer
            pending.committed = True
            return layer

    def discard(self, pending: PendingLayer) -> None:
        """Remove what `prepare` made for a layer that will not be committed; blocking."""
        try:
            with contextlib.suppress(Exception):
                self.driver.remove(pending.cache)
        finally:
            shutil.rmtree(pending.tmpdir, ignore_errors=True)

    def register(self, stream: BinaryIO, parent: str | None) -> Layer:
        """Apply an uncompressed layer tar on top of `parent` in this process; blocking."""
        pending = self.prepare(parent)
        try:
            with open(pending.tar_split, "wb") as split:
                diff_id, size = self.driver.apply_diff(pending.cache, pending.parent_cache, stream, split)
            return self.commit(pending, diff_id, size)
        finally:
            if not pending.committed:
                self.discard(pending)

    async def register_file(
        self,
        fd: int,
        parent: str | None,
        *,
        expect_diff_id: str | None = None,
        feed: Feed | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Layer:
        """Apply the layer file `fd` (compressed or not) on top of `parent` in a worker process.

        With `feed`, the file is still being written and the worker reads it only as far as the
        feed says. `progress` gets the bytes of the file consumed so far. The layer is committed
        only if the worker read the file to its end and its diff ID is `expect_diff_id`;
        otherwise, or when cancelled, its directory is removed and nothing is recorded.
        """
        pending = await asyncio.to_thread(self.prepare, parent)
        commit: asyncio.Future[Layer] | None = None
        try:
            diff_id, size = await self.workers.apply(
                self.driver.name,
                self.driver.home,
                pending.cache,
                pending.parent_cache,
                fd,
                pending.tar_split,
                feed=feed,
                progress=progress,
            )
            if expect_diff_id is not None and diff_id != expect_diff_id:
                raise DiffIDMismatch(diff_id, expect_diff_id)
            commit = asyncio.ensure_future(asyncio.to_thread(self.commit, pending, diff_id, size))
            return await asyncio.shield(commit)
        finally:
            if commit is not None and not commit.done():
                # Cancelled while committing: the commit runs to its end; the layer it records
                # is an orphan that the failed pull's clean-up collects.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(commit)
            if not pending.committed and (commit is None or commit.done()):
                await asyncio.shield(asyncio.to_thread(self.discard, pending))

    def tar(self, chain: str, out: BinaryIO) -> None:
        """The layer's original tar, rebuilt from storage and its tar-split."""
        layer = self.get(chain)
        with open(os.path.join(self._dir(chain), "tar-split.json.gz"), "rb") as split:
            tarlayers.assemble_layer(split, self.driver.layer_dir(layer.cache_id), out)

    def ancestry(self, chain: str | None) -> Iterable[Layer]:
        while chain:
            layer = self.get(chain)
            yield layer
            chain = layer.parent

    # ---- container layers ---------------------------------------------------------------

    def create_rw(self, container: str, parent: str | None, init: dict[str, bytes | None]) -> RWLayer:
        """The container's writable layer, above an init layer holding mount targets that
        must not show up in `docker diff` or commits (/etc/hosts, /dev, ...).

        `init` maps paths to file contents (None = directory). The init layer depends only on
        the image and `init`, so the containers of one image share it: a create is then one
        snapshot, not two (dockerd makes one init layer per container). The builder's steps
        (an empty `init`, a new parent each) keep one of their own, removed with them.
        """
        parent_cache = self.get(parent).cache_id if parent else None
        if init:
            init_id, made = self._hold_init(parent_cache, init)
        else:
            init_id, made = new_id() + "-init", False
        mount_id = new_id()
        rw = RWLayer(container, mount_id, init_id, parent)
        ok = False
        try:
            if not init:
                self.driver.create(init_id, parent_cache)
            self.driver.create(mount_id, init_id)
            d = os.path.join(self.root, "mounts", container)
            os.makedirs(d, exist_ok=True)
            for fname, value in (("mount-id", mount_id), ("init-id", init_id), ("parent", parent or "")):
                write_atomic(os.path.join(d, fname), value.encode(), sync=False)
            with self.lock:
                self.mounts[container] = rw
            ok = True
        finally:
            if not ok:
                self.remove_rw_layer(rw)
            if init:
                self._release_init(init_id, drop=made and not ok)
        return rw

    def _release_init(self, init_id: str, drop: bool) -> None:
        """Let go of a held init layer; `drop` it if this create made it, failed, and no other
        uses it (a failed create leaves nothing behind)."""
        with self._init_lock:
            self._init_users[init_id] -= 1
            if not self._init_users[init_id]:
                del self._init_users[init_id]
                if drop and all(m.init_id != init_id for m in self.mounts.values()):
                    self._drop_init(init_id)

    def _hold_init(self, parent_cache: str | None, init: dict[str, bytes | None]) -> tuple[str, bool]:
        """The shared init layer for this parent and `init`, made if missing (and whether it
        was); held against collect() until the caller calls _release_init."""
        spec = hashlib.sha256(repr(sorted(init.items())).encode()).hexdigest()[:12]
        init_id = f"{parent_cache or 'scratch'}-{spec}-init"
        made = False
        with self._init_lock:
            if init_id not in self.inits:
                made = True
                # Made but not marked complete: an earlier attempt was interrupted.
                with contextlib.suppress(FileNotFoundError):
                    self.driver.remove(init_id)
                try:
                    self.driver.create(init_id, parent_cache)
                    root = self.driver.get(init_id)
                    try:
                        _make_init_paths(root, init)
                    finally:
                        self.driver.put(init_id)
                    write_atomic(os.path.join(self.root, "inits", init_id), b"", sync=False)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.driver.remove(init_id)
                    raise
                self.inits.add(init_id)
            self._init_users[init_id] = self._init_users.get(init_id, 0) + 1
        return init_id, made

    def remove_rw(self, container: str) -> None:
        rw = self.mounts.pop(container, None)
        if rw is not None:
            self.remove_rw_layer(rw)

    def remove_rw_layer(self, rw: RWLayer) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.driver.remove(rw.mount_id)
        if rw.init_id not in self.inits:  # a data root's own per-container init layer
            with contextlib.suppress(FileNotFoundError):
                self.driver.remove(rw.init_id)
        shutil.rmtree(os.path.join(self.root, "mounts", rw.container), ignore_errors=True)

    def _collect_inits(self) -> None:
        """Shared init layers no container uses (made again by the next create)."""
        with self._init_lock:
            used = {m.init_id for m in self.mounts.values()} | set(self._init_users)
            for init_id in self.inits - used:
                self._drop_init(init_id)

    def _drop_init(self, init_id: str) -> None:
        """(Under _init_lock.) Unmarked first: a crash half-way leaves it to be made again."""
        remove_quiet(os.path.join(self.root, "inits", init_id))
        self.inits.discard(init_id)
        with contextlib.suppress(FileNotFoundError):
            self.driver.remove(init_id)

    # ---- garbage collection ---------------------------------------------------------------

    def collect(self, keep_tops: Iterable[str]) -> list[str]:
        """Delete every layer not in the ancestry of `keep_tops` nor under a container."""
        keep: set[str] = set()
        for top in list(keep_tops) + [m.parent for m in self.mounts.values() if m.parent]:
            chain: str | None = top
            while chain and chain not in keep and chain in self.layers:
                keep.add(chain)
                chain = self.layers[chain].parent
        removed = []
        self._collect_inits()  # before their parents: an overlay init needs its lowers
        with self.lock:
            doomed = [c for c in self.layers if c not in keep]
            # Children first: a btrfs snapshot does not depend on its parent, but overlay does.
            doomed.sort(key=lambda c: -len(list(self.ancestry(c))))
            for c in doomed:
                layer = self.layers.pop(c)
                self.driver.remove(layer.cache_id)
                shutil.rmtree(self._dir(c), ignore_errors=True)
                removed.append(c)
        return removed


def _make_init_paths(root: str, init: dict[str, bytes | None]) -> None:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, content in init.items():
            _make_in_root(fd, path, content)
    finally:
        os.close(fd)


def _make_in_root(rootfd: int, path: str, content: bytes | None) -> None:
    """Create a directory or file inside an untrusted tree without following its symlinks out."""
    from bocker_engine.linux import openat2

    parts = [p for p in path.split("/") if p]
    dirfd = os.dup(rootfd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and content is not None:
                proc = f"/proc/self/fd/{dirfd}/{part}"
                try:
                    fd = os.open(proc, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.EACCES):
                        return  # exists as something else (a symlink, a dir): leave the image alone
                    raise  # a full disk: the container cannot be made
                try:
                    view = memoryview(content)
                    while view:  # a nearly full disk takes part of a write and fails the next
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                return
            try:
                nfd = openat2(dirfd, part, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(f"/proc/self/fd/{dirfd}/{part}", 0o755)
                nfd = openat2(dirfd, part, os.O_PATH | os.O_DIRECTORY)
            except NotADirectoryError:
                return
            os.close(dirfd)
            dirfd = nfd
    finally:
        os.close(dirfd)
