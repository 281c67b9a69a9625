"""Images: configs by ID (sha256 of the config JSON), references, import, list, delete.

image/<driver>/imagedb/content/sha256/<hex>         the config JSON, byte for byte
image/<driver>/imagedb/metadata/sha256/<hex>/...    parent, lastUpdated
image/<driver>/repositories.json                    tags and digests
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bocker_engine.build.dockerfile import apply_config_change
from bocker_engine.engine import filters as flt
from bocker_engine.engine.container_config import CONTAINER_CONFIG_DEFAULTS as CONFIG_DEFAULTS
from bocker_engine.engine.ids import by_prefix
from bocker_engine.engine.layers import LayerStore, chain_ids
from bocker_engine.engine.pipes import feed_thread
from bocker_engine.engine.references import ReferenceStore
from bocker_engine.engine.store import read_text, write_atomic
from bocker_engine.errors import Conflict, InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry import reference as refs
from bocker_engine.timefmt import parse_rfc3339, rfc3339nano

GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_arch() -> str:
    return GO_ARCH.get(platform.machine(), platform.machine())


def full_config(config: dict[str, Any] | None) -> dict[str, Any]:
    return {**CONFIG_DEFAULTS, **(config or {})}


@dataclass
class Image:
    id: str
    raw: bytes
    config: dict[str, Any]
    parent: str = ""
    last_tag_time: str = ""

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def top_layer(self) -> str | None:
        chains = chain_ids(self.diff_ids)
        return chains[-1] if chains else None

    @property
    def created_unix(self) -> int:
        try:
            return parse_rfc3339(self.config.get("created", "")) // 1_000_000_000
        except ValueError:
            return 0

    @property
    def container_config(self) -> dict[str, Any]:
        return dict(self.config.get("config") or {})


def image_id_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class ImageService:
    def __init__(self, root: str, layers: LayerStore) -> None:
        self.root = root
        self.db = os.path.join(root, "imagedb")
        self.layers = layers
        self.refs = ReferenceStore(os.path.join(root, "repositories.json"))
        self.images: dict[str, Image] = {}
        # Who uses an image: (container id, running) pairs; set by the daemon's wiring.
        self.containers_using: Callable[[str], list[tuple[str, bool]]] = lambda _id: []
        self.lock = asyncio.Lock()
        # Layers a pull or load registered but has not tied to an image yet: never collected.
        self.pinned: collections.Counter[str] = collections.Counter()

    # ---- store ----------------------------------------------------------------------------

    def load(self) -> None:
        content = os.path.join(self.db, "content", "sha256")
        os.makedirs(content, exist_ok=True)
        os.makedirs(os.path.join(self.db, "metadata", "sha256"), exist_ok=True)
        for name in os.listdir(content):
            if name.endswith(".tmp") or ".tmp-" in name:
                continue
            with open(os.path.join(content, name), "rb") as f:
                raw = f.read()
            meta = os.path.join(self.db, "metadata", "sha256", name)
            img = Image(
                "sha256:" + name,
                raw,
                json.loads(raw),
                read_text(os.path.join(meta, "parent")),
                read_text(os.path.join(meta, "lastUpdated")),
            )
            if all(self.layers.has(c) for c in chain_ids(img.diff_ids)):
                self.images[img.id] = img
        self.refs.load()

    def store(self, raw: bytes, parent: str = "") -> Image:
        """Record an image config (its layers must exist already)."""
        img_id = image_id_of(raw)
        existing = self.images.get(img_id)
        if existing is not None:
            return existing
        config = json.loads(raw)
        for chain in chain_ids((config.get("rootfs") or {}).get("diff_ids") or []):
            if not self.layers.has(chain):
                raise InvalidParameter(f"image config references a missing layer {chain}")
        hexid = img_id.split(":", 1)[1]
        # Complete files renamed into place, as dockerd writes them (no directory fsync: the
        # renames reach the disk with the filesystem's next commit).
        if parent:
            meta = os.path.join(self.db, "metadata", "sha256", hexid)
            os.makedirs(meta, exist_ok=True)
            write_atomic(os.path.join(meta, "parent"), parent.encode(), durable=False)
        write_atomic(os.path.join(self.db, "content", "sha256", hexid), raw, durable=False)
        img = Image(img_id, raw, config, parent)
        self.images[img_id] = img
        return img

    def set_parent(self, img: Image, parent: str) -> None:
        """Link an image to a parent after the fact (the build cache does, like dockerd's
        SetParent, when a pulled image turns out to be a step of a build)."""
        meta = os.path.join(self.db, "metadata", "sha256", img.id.split(":", 1)[1])
        os.makedirs(meta, exist_ok=True)
        write_atomic(os.path.join(meta, "parent"), parent.encode())
        img.parent = parent

    def _forget(self, img: Image) -> None:
        hexid = img.id.split(":", 1)[1]
        self.images.pop(img.id, None)
        os.unlink(os.path.join(self.db, "content", "sha256", hexid))
        shutil.rmtree(os.path.join(self.db, "metadata", "sha256", hexid), ignore_errors=True)

    def _touch_tag(self, img: Image) -> None:
        img.last_tag_time = rfc3339nano()
        meta = os.path.join(self.db, "metadata", "sha256", img.id.split(":", 1)[1])
        os.makedirs(meta, exist_ok=True)
        write_atomic(os.path.join(meta, "lastUpdated"), img.last_tag_time.encode(), sync=False)

    # ---- lookup ---------------------------------------------------------------------------

    def resolve(self, ref: str) -> Image:
        """dockerd's GetImage: full ID, reference (":latest" implied), then short ID."""
        img = self.find(ref)
        if img is None:
            raise NotFound(f"No such image: {self._display(ref)}")
        return img

    def find(self, ref: str) -> Image | None:
        if ref.startswith("sha256:"):
            hexpart = ref[7:]
            if len(hexpart) == 64:
                return self.images.get(ref)
            found = by_prefix(hexpart, (i[7:] for i in self.images))
            return self.images.get("sha256:" + found) if found else None
        try:
            parsed = refs.parse(ref)
        except InvalidParameter:
            parsed = None
        if parsed is not None:
            image_id = self.refs.get(parsed.tagged_or_latest())
            if image_id is not None and image_id in self.images:
                return self.images[image_id]
        if len(ref) >= 1 and all(c in "0123456789abcdef" for c in ref):
            found = by_prefix(ref, (i[7:] for i in self.images))
            if found:
                return self.images["sha256:" + found]
        if parsed is None:
            raise InvalidParameter(f"invalid reference format: {ref}")
        return None

    def find_quiet(self, ref: str) -> str | None:
        """The ID `ref` resolves to, or None (never raises)."""
        try:
            img = self.find(ref)
        except InvalidParameter:
            return None
        return img.id if img else None

    @staticmethod
    def _display(ref: str) -> str:
        try:
            return refs.parse(ref).tagged_or_latest().familiar()
        except InvalidParameter:
            return ref

    # ---- views ----------------------------------------------------------------------------

    def size(self, img: Image) -> int:
        return sum(layer.size for layer in self.layers.ancestry(img.top_layer))

    def summary(self, img: Image, containers: int = -1) -> dict[str, Any]:
        tags = self.refs.tags(img.id)
        digests = self.refs.digests(img.id)
        return {
            "Id": img.id,
            "ParentId": img.parent,
            "RepoTags": tags,
            "RepoDigests": digests,
            "Created": img.created_unix,
            "Size": self.size(img),
            "SharedSize": -1,
            "Labels": img.container_config.get("Labels") or {},
            "Containers": containers,
        }

    def list_images(self, all: bool, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        flt.check(filters, {"dangling", "label", "before", "since", "reference", "until"})
        before = self.resolve(filters["before"][0]).created_unix if filters.get("before") else None
        since = self.resolve(filters["since"][0]).created_unix if filters.get("since") else None
        dangling = flt.bool_filter(filters, "dangling")
        children = {img.parent for img in self.images.values() if img.parent}
        out = []
        for img in sorted(self.images.values(), key=lambda i: i.created_unix, reverse=True):
            tags = self.refs.tags(img.id)
            digests = self.refs.digests(img.id)
            is_dangling = not tags and not digests
            if dangling is not None and dangling != is_dangling:
                continue
            # Intermediate images (build parents without tags) are hidden unless -a.
            if not all and is_dangling and img.id in children:
                continue
            if not flt.match_labels(filters.get("label"), img.container_config.get("Labels") or {}):
                continue
            if before is not None and img.created_unix >= before:
                continue
            if since is not None and img.created_unix <= since:
                continue
            if filters.get("reference"):
                names = self.refs.for_image(img.id)
                if not any(flt.match_reference(p, r) for p in filters["reference"] for r in names):
                    continue
            summary = self.summary(img)
            if filters.get("reference"):
                summary["RepoTags"] = [
                    t for t in tags if any(flt.match_reference(p, refs.parse(t)) for p in filters["reference"])
                ]
            out.append(summary)
        return out

    def inspect(self, img: Image) -> dict[str, Any]:
        cfg = img.config
        driver = self.layers.driver
        graph = driver.metadata(self.layers.get(img.top_layer).cache_id) if img.top_layer else {}
        return {
            "Id": img.id,
            "RepoTags": self.refs.tags(img.id),
            "RepoDigests": self.refs.digests(img.id),
            "Parent": img.parent,
            "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ""),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": full_config(cfg.get("config")),
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant") or None,
            "Os": cfg.get("os", ""),
            "OsVersion": cfg.get("os.version") or None,
            "Size": self.size(img),
            "GraphDriver": {"Name": driver.name, "Data": graph},
            "RootFS": {"Type": "layers", "Layers": img.diff_ids},
            "Metadata": {"LastTagTime": img.last_tag_time or "0001-01-01T00:00:00Z"},
        }

    def history(self, img: Image) -> list[dict[str, Any]]:
        hist = list(img.config.get("history") or [])
        layers = list(self.layers.ancestry(img.top_layer))[::-1]
        out = []
        li = 0
        for h in hist:
            size = 0
            if not h.get("empty_layer") and li < len(layers):
                size = layers[li].size
                li += 1
            try:
                created = parse_rfc3339(h.get("created", "")) // 1_000_000_000
            except ValueError:
                created = 0
            out.append(
                {
                    "Id": "<missing>",
                    "Created": created,
                    "CreatedBy": h.get("created_by", ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": h.get("comment", ""),
                }
            )
        if not out:
            out.append(
                {
                    "Id": "<missing>",
                    "Created": img.created_unix,
                    "CreatedBy": "",
                    "Tags": None,
                    "Size": self.size(img),
                    "Comment": "",
                }
            )
        out.reverse()
        for entry in out:
            entry["Tags"] = []
        # Like dockerd, entries made by the local image chain (build steps, commits) show their
        # image's ID and tags; what came from elsewhere stays <missing>.
        cur: Image | None = img
        for entry in out:
            if cur is None:
                break
            entry["Id"] = cur.id
            entry["Tags"] = self.refs.tags(cur.id)
            cur = self.images.get(cur.parent) if cur.parent else None
        return out

    # ---- tags -----------------------------------------------------------------------------

    def tag(self, img: Image, ref: refs.Reference) -> None:
        if ref.digest is not None:
            raise InvalidParameter("refusing to create a tag with a digest reference")
        self.refs.add(ref, img.id)
        self._touch_tag(img)

    # ---- delete ---------------------------------------------------------------------------

    def delete(self, ref: str, force: bool, prune: bool) -> list[dict[str, str]]:
        img = self.resolve(ref)
        records: list[dict[str, str]] = []
        repo_refs = self.refs.for_image(img.id)
        is_id = _is_id_ref(img.id, ref)
        removed_ref = False
        if not is_id:
            parsed = refs.parse(ref).tagged_or_latest()
            if not force and len(repo_refs) <= 1:
                using = self.containers_using(img.id)
                if using:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                        f"{using[0][0][:12]} is using its referenced image {img.id[7:19]}"
                    )
            self.refs.delete(parsed)
            records.append({"Untagged": parsed.familiar()})
            repo_refs = self.refs.for_image(img.id)
            if parsed.digest is None and not any(r.digest is None and r.name == parsed.name for r in repo_refs):
                # Digest references of a repository go with its last tag.
                remaining = []
                for r in repo_refs:
                    if r.digest is not None and r.name == parsed.name:
                        self.refs.delete(r)
                        records.append({"Untagged": r.familiar()})
                    else:
                        remaining.append(r)
                repo_refs = remaining
            if repo_refs:
                return records
            removed_ref = True
        elif len({r.name for r in repo_refs}) <= 1 and len([r for r in repo_refs if r.digest is None]) <= 1:
            self._check_conflicts(img, hard_only=force, active_ref=False)
            for r in repo_refs:
                self.refs.delete(r)
                records.append({"Untagged": r.familiar()})
        self._delete_helper(img, records, force, prune, quiet=removed_ref)
        return records

    def _check_conflicts(self, img: Image, hard_only: bool, active_ref: bool = True) -> Conflict | None:
        short = img.id[7:19]
        if any(other.parent == img.id for other in self.images.values()):
            raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - image has dependent child images")
        for cid, running in self.containers_using(img.id):
            if running:
                raise Conflict(
                    f"conflict: unable to delete {short} (cannot be forced) - image is being used by running "
                    f"container {cid[:12]}"
                )
        if hard_only:
            return None
        if active_ref and self.refs.for_image(img.id):
            raise Conflict(
                f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
            )
        for cid, _ in self.containers_using(img.id):
            raise Conflict(
                f"conflict: unable to delete {short} (must be forced) - image is being used by stopped "
                f"container {cid[:12]}"
            )
        return None

    def _delete_helper(self, img: Image, records: list[dict[str, str]], force: bool, prune: bool, quiet: bool) -> None:
        try:
            self._check_conflicts(img, hard_only=force)
        except Conflict:
            dangling = not self.refs.for_image(img.id)
            if quiet and (not dangling or self.containers_using(img.id)):
                return
            raise
        for r in self.refs.for_image(img.id):
            self.refs.delete(r)
            records.append({"Untagged": r.familiar()})
        parent = img.parent
        self._forget(img)
        records.append({"Deleted": img.id})
        for chain in self.collect_layers():
            records.append({"Deleted": chain})
        if prune and parent and parent in self.images:
            self._delete_helper(self.images[parent], records, False, True, True)

    def collect_layers(self) -> list[str]:
        tops = [img.top_layer for img in list(self.images.values()) if img.top_layer]
        return self.layers.collect(tops + list(self.pinned))

    def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        flt.check(filters, {"dangling", "label", "label!", "until"})
        dangling_only = flt.bool_filter(filters, "dangling")
        if dangling_only is None:
            dangling_only = True
        until = flt.until_filter(filters)
        records: list[dict[str, str]] = []
        # What the deleted layers held, not the images' sizes: layers another image still
        # uses free nothing, and an image's Size may leave out what its layers really hold.
        before = self._stored_bytes()
        for img in sorted(self.images.values(), key=lambda i: -i.created_unix):
            if img.id not in self.images:
                continue
            if dangling_only and self.refs.for_image(img.id):
                continue
            if self.containers_using(img.id):
                continue
            if any(other.parent == img.id for other in self.images.values()):
                continue
            if until is not None and img.created_unix >= until:
                continue
            if not flt.match_prune_labels(filters, img.container_config.get("Labels") or {}):
                continue
            try:
                # Like dockerd's prune -a, which deletes by each reference: untag, then delete
                # (containers and child images were ruled out above).
                for r in self.refs.for_image(img.id):
                    self.refs.delete(r)
                    records.append({"Untagged": r.familiar()})
                self._delete_helper(img, records, force=False, prune=True, quiet=False)
            except Conflict:
                continue
        return {"ImagesDeleted": records or None, "SpaceReclaimed": max(0, before - self._stored_bytes())}

    def _stored_bytes(self) -> int:
        return sum(layer.size for layer in list(self.layers.layers.values()))

    # ---- import ---------------------------------------------------------------------------

    async def import_tar(
        self,
        chunks: AsyncIterator[bytes],
        *,
        repo: str,
        tag: str,
        message: str,
        changes: list[str],
        src: str,
        progress: ProgressSink,
    ) -> Image:
        ref = refs.parse_repo_tag(repo, tag or None) if repo else None
        config: dict[str, Any] = {}
        for change in changes:
            for line in change.splitlines():
                if line.strip():
                    apply_config_change(config, line)
        # Spooled to an unlinked file under the data root, then extracted by a layer worker
        # process like pulled layers (off the daemon's GIL).
        with tempfile.TemporaryFile(dir=self.layers.tmp_dir()) as spool:
            await feed_thread(chunks, lambda src: shutil.copyfileobj(src, spool, 1 << 20))
            spool.flush()
            spool.seek(0)  # the worker shares this file description, and its offset
            layer = await self.layers.register_file(spool.fileno(), None)
        now = rfc3339nano()
        comment = message or f"Imported from {src}"
        img_config = {
            "architecture": host_arch(),
            "config": config,
            "created": now,
            "history": [{"created": now, "comment": comment}],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        if message:
            img_config["comment"] = message
        raw = json.dumps(img_config, separators=(",", ":")).encode()
        img = self.store(raw)
        if ref is not None:
            self.tag(img, ref)
        progress(Message(status=img.id))
        return img


def _is_id_ref(image_id: str, ref: str) -> bool:
    r = ref[7:] if ref.startswith("sha256:") else ref
    return len(r) > 0 and image_id[7:].startswith(r) and all(c in "0123456789abcdef" for c in r)

