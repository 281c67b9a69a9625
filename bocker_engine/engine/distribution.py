"""Distribution: what pull, push, save and load share.

image/<driver>/distribution/v2metadata-by-diffid/sha256/<hex>   where a layer's blob came from or went to
image/<driver>/distribution/diffid-by-digest/sha256/<hex>       which layer a registry blob holds
image/<driver>/distribution/tmp/                                 downloads in flight (unlinked files)

The metadata is dockerd's: a push uses it to skip blobs a registry already has ("Layer already
exists"), to mount them from another repository of the same registry ("Mounted from ..."), and
to reuse the compressed digest of an earlier push so that pushing twice is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bocker_engine.engine.images import ImageService
from bocker_engine.engine.layers import LayerStore
from bocker_engine.engine.store import write_atomic
from bocker_engine.registry.client import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobSource:
    """A compressed blob of a layer, as one registry repository holds it."""

    digest: str
    size: int
    repository: str  # fully qualified: 127.0.0.1:5000/me/box, docker.io/library/busybox

    @property
    def domain(self) -> str:
        return self.repository.split("/", 1)[0]


class V2Metadata:
    def __init__(self, root: str) -> None:
        self.by_diff = os.path.join(root, "v2metadata-by-diffid", "sha256")
        self.by_digest = os.path.join(root, "diffid-by-digest", "sha256")
        os.makedirs(self.by_diff, exist_ok=True)
        os.makedirs(self.by_digest, exist_ok=True)
        self.lock = threading.Lock()

    @staticmethod
    def _hex(digest: str) -> str | None:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            return None
        return hexd

    def sources(self, diff_id: str) -> list[BlobSource]:
        hexd = self._hex(diff_id)
        if hexd is None:
            return []
        try:
            with open(os.path.join(self.by_diff, hexd), "rb") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            return []
        out = []
        for e in raw if isinstance(raw, list) else []:
            if not isinstance(e, dict):
                continue
            if isinstance(e.get("Digest"), str) and isinstance(e.get("SourceRepository"), str):
                out.append(BlobSource(e["Digest"], int(e.get("Size") or 0), e["SourceRepository"]))
        return out

    def add(self, diff_id: str, source: BlobSource) -> None:
        hexd, blob_hex = self._hex(diff_id), self._hex(source.digest)
        if hexd is None or blob_hex is None:
            return
        with self.lock:
            # Newest first; one entry per (digest, repository); a handful is plenty.
            entries = [
                s for s in self.sources(diff_id) if (s.digest, s.repository) != (source.digest, source.repository)
            ]
            entries.insert(0, source)
            body = [{"Digest": s.digest, "Size": s.size, "SourceRepository": s.repository} for s in entries[:50]]
            # A cache, rebuilt by the next pull or push if lost: no fsync.
            write_atomic(os.path.join(self.by_diff, hexd), json.dumps(body).encode(), sync=False)
            write_atomic(os.path.join(self.by_digest, blob_hex), diff_id.encode(), sync=False)

    def diff_id(self, digest: str) -> str | None:
        hexd = self._hex(digest)
        if hexd is None:
            return None
        try:
            with open(os.path.join(self.by_digest, hexd)) as f:
                return f.read().strip() or None
        except OSError:
            return None


class Distribution:
    # Layers transferred at once per pull and per push (max-concurrent-downloads/-uploads;
    # the daemon sets them from its configuration, also on reload).
    max_downloads = 3
    max_uploads = 3

    def __init__(self, image_root: str, registry: Registry, images: ImageService, layers: LayerStore) -> None:
        self.registry = registry
        self.images = images
        self.layers = layers
        root = os.path.join(image_root, "distribution")
        self.metadata = V2Metadata(root)
        self.tmp = os.path.join(root, "tmp")
        # Whatever a crashed daemon was downloading or loading is garbage now.
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp, exist_ok=True)

    def temp_file(self) -> int:
        """An anonymous read-write file on the data root's filesystem: nothing to clean up, ever."""
        try:
            return os.open(self.tmp, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            fd, path = tempfile.mkstemp(dir=self.tmp)
            os.unlink(path)
            return fd

    def temp_dir(self) -> str:
        return tempfile.mkdtemp(dir=self.tmp)

    @contextlib.contextmanager
    def pinned(self, chains: Iterable[str]) -> Iterator[None]:
        """Keep layers a pull or load is working on from being garbage-collected by an rmi."""
        chains = list(chains)
        for c in chains:
            self.images.pinned[c] += 1
        try:
            yield
        finally:
            for c in chains:
                self.images.pinned[c] -= 1
                if self.images.pinned[c] <= 0:
                    del self.images.pinned[c]

    async def collect_orphans(self) -> None:
        """After a failed pull or load: drop the layers it registered that no image uses."""
        try:
            await asyncio.shield(asyncio.to_thread(self.images.collect_layers))
        except Exception as e:  # the next rmi or daemon start collects them anyway
            log.warning("collecting orphan layers: %s", e)
