"""`docker save` / `docker load` archives.

Save writes what Docker 25+ writes: an OCI image layout (`oci-layout`, `index.json`, blobs under
`blobs/sha256/`, an OCI manifest per image) that also carries Docker's own `manifest.json` and
`repositories`. Layer blobs are the uncompressed layer tars, byte for byte what their diff IDs
name, and are written once however many images share them.

Load reads that and the older layout (`<id>/layer.tar`, `<hex>.json`, symlinks between layer
directories), plain or gzip/xz/bzip2-compressed, and OCI layouts without `manifest.json`. The
outer archive is untrusted: it is read as a stream, every regular file is copied into a fresh
temporary directory under a *numbered* name (nothing on disk is ever named after archive
content), links are resolved by name inside the archive and never created, and a member name
that is absolute or climbs with `..` fails the load before anything is stored. Its tar headers
are read by the layer engine's parser (storage/layers/tarread.py), with its limits on extended
headers (1 MiB each, a bounded number in a row, PAX parsed in linear time) like dockerd's Go
archive/tar; Python's tarfile has none of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from bocker_engine.engine.distribution import Distribution
from bocker_engine.engine.images import Image, ImageService
from bocker_engine.engine.layers import DiffIDMismatch, Layer, LayerStore, chain_ids
from bocker_engine.engine.pipes import feed_thread
from bocker_engine.errors import InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry import reference as refs
from bocker_engine.registry.manifest import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST
from bocker_engine.storage.layers import decompressed
from bocker_engine.storage.layers.common import BLOCK, T_LNK, T_REG, T_SYM
from bocker_engine.storage.layers.tarread import Source, data_size, next_entry

MAX_JSON = 32 << 20
MAX_MEMBERS = 1 << 20
MAX_LINK_HOPS = 40
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


# ---- save -----------------------------------------------------------------------------------


@dataclass
class SaveItem:
    image: Image
    tags: list[refs.Reference] = field(default_factory=list)


def save_items(images: ImageService, names: list[str]) -> list[SaveItem]:
    """dockerd's parseNames: an ID saves the image untagged, `repo` every tag of repo, `repo:tag` one."""
    items: dict[str, SaveItem] = {}

    def add(img: Image, ref: refs.Reference | None) -> None:
        item = items.setdefault(img.id, SaveItem(img))
        if ref is not None and ref.tag is not None and all(str(t) != str(ref) for t in item.tags):
            item.tags.append(ref)

    for name in names:
        img = images.resolve(name)  # NotFound with dockerd's wording
        try:
            parsed = refs.parse(name)
        except InvalidParameter:
            parsed = None
        by_ref = parsed is not None and images.refs.get(parsed.tagged_or_latest()) == img.id
        if parsed is None or not by_ref and images.refs.get(parsed) is None:
            add(img, None)  # an ID or ID prefix
        elif parsed.tag is None and parsed.digest is None:
            for key, img_id in sorted(images.refs.refs.items()):
                r = images.refs.refs_full[key]
                if r.name == parsed.name and r.tag is not None and img_id in images.images:
                    add(images.images[img_id], r)
        elif parsed.digest is not None:
            add(img, None)
        else:
            add(img, parsed)
    if not items:
        raise NotFound("no images to save")
    return list(items.values())


class _TarWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def dir(self, name: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        self.tf.addfile(ti)

    def file(self, name: str, size: int, src: BinaryIO, mtime: int = 0) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mode = 0o644
        ti.mtime = mtime
        self.tf.addfile(ti, src)

    def data(self, name: str, data: bytes, mtime: int = 0) -> None:
        self.file(name, len(data), io.BytesIO(data), mtime)

    def close(self) -> None:
        self.tf.close()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _platform(img: Image) -> dict[str, str]:
    p = {"architecture": str(img.config.get("architecture", "")), "os": str(img.config.get("os", ""))}
    if img.config.get("variant"):
        p["variant"] = str(img.config["variant"])
    return p


def write_archive(layers: LayerStore, items: list[SaveItem], out: BinaryIO, temp_file: Callable[[], int]) -> None:
    """Blocking: the whole archive to `out` (run in a thread)."""
    w = _TarWriter(out)
    w.dir("blobs/")
    w.dir("blobs/sha256/")
    sizes: dict[str, int] = {}  # blob path -> size, for blobs already in the archive
    docker_manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for item in items:
        img = item.image
        diff_ids = img.diff_ids
        layer_descs = []
        for diff_id, chain in zip(diff_ids, chain_ids(diff_ids), strict=True):
            path = "blobs/sha256/" + diff_id.split(":", 1)[1]
            if path not in sizes:
                sizes[path] = _write_layer(w, layers, chain, path, temp_file)
            size = sizes[path]
            layer_descs.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": size})
        config_path = "blobs/sha256/" + img.id.split(":", 1)[1]
        created = img.created_unix
        if config_path not in sizes:
            w.data(config_path, img.raw, created)
            sizes[config_path] = len(img.raw)
        platform = _platform(img)
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": img.id, "size": len(img.raw), "platform": platform},
                "layers": layer_descs,
            }
        )
        mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        mpath = "blobs/sha256/" + mdigest.split(":", 1)[1]
        if mpath not in sizes:
            w.data(mpath, manifest)
            sizes[mpath] = len(manifest)
        desc = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(manifest), "platform": platform}
        for ref in item.tags:
            assert ref.tag is not None
            annotations = {IMAGE_NAME_ANNOTATION: str(ref), REF_NAME_ANNOTATION: ref.tag}
            index.append({**desc, "annotations": annotations})
            if diff_ids:
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = diff_ids[-1].split(":", 1)[1]
        if not item.tags:
            index.append(desc)
        docker_manifest.append(
            {
                "Config": config_path,
                "RepoTags": [r.familiar() for r in item.tags] or None,
                "Layers": ["blobs/sha256/" + d.split(":", 1)[1] for d in diff_ids],
            }
        )
    w.data("index.json", _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}))
    w.data("manifest.json", _json(docker_manifest) + b"\n")
    w.data("oci-layout", OCI_LAYOUT)
    if repositories:
        w.data("repositories", _json(repositories) + b"\n")
    w.close()


def _write_layer(w: _TarWriter, layers: LayerStore, chain: str, path: str, temp_file: Callable[[], int]) -> int:
    # A tar member needs its size up front: rebuild the layer into a scratch file first.
    fd = temp_file()
    with os.fdopen(fd, "w+b") as f:
        layers.tar(chain, f)
        size = f.tell()
        f.seek(0)
        w.file(path, size, f)
    return size


# ---- load: reading the outer archive --------------------------------------------------------


class Archive:
    """The members of an untrusted archive, by name, with the files in a scratch directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # member name -> scratch path
        self.links: dict[str, str] = {}  # member name -> member name it points at

    def resolve(self, name: str) -> str | None:
        current = _clean(name, strict=False)
        for _ in range(MAX_LINK_HOPS):
            if current is None:
                return None
            if current in self.files:
                return self.files[current]
            current = self.links.get(current)
        return None

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def open(self, name: str) -> BinaryIO:
        path = self.resolve(name)
        if path is None:
            raise InvalidParameter(f"invalid archive: {name} not found")
        return open(path, "rb")  # noqa: SIM115

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise InvalidParameter(f"invalid archive: {name} is too large")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidParameter(f"invalid archive: {name}: {e}") from e

    def raw(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise InvalidParameter(f"invalid archive: {name} is too large")
        return data


def _clean(name: str, strict: bool = True) -> str | None:
    """A member name as a relative path inside the archive; None (or an error) if it leaves it.

    Member names with `..` are refused outright (`strict`); link targets may use it to climb
    between directories, as old archives' `../<id>/layer.tar` links do, but never above the root.
    """
    if "\x00" in name:
        raise InvalidParameter("invalid archive: NUL in a member name")
    if name.startswith("/"):
        if strict:
            raise InvalidParameter(f"invalid archive: absolute path {name!r}")
        name = name.lstrip("/")
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p != "..":
            parts.append(p)
        elif strict:
            raise InvalidParameter(f"invalid archive: path {name!r} points outside the archive")
        elif not parts:
            return None  # climbs above the archive's root
        else:
            parts.pop()
    return "/".join(parts)


def read_archive(src: BinaryIO, root: str) -> Archive:
    """Blocking: copy the regular files of `src` (any compression) into `root` under numbered names."""
    try:
        return _read_archive(src, root)
    except InvalidParameter as e:
        # The tar engine speaks of layers.
        if e.message.startswith("invalid layer:"):
            raise InvalidParameter("invalid archive:" + e.message[len("invalid layer:") :]) from None
        raise


def _read_archive(src: BinaryIO, root: str) -> Archive:
    archive = Archive(root)
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        stream = Source(decompressed(src), None, kind="archive", digest=False)
        count = 0
        while (m := next_entry(stream)) is not None:
            count += 1
            if count > MAX_MEMBERS:
                raise InvalidParameter("invalid archive: too many members")
            cleaned = _clean(m.name.decode("utf-8", "surrogateescape"))
            assert cleaned is not None
            name = cleaned
            size = data_size(m)
            linkname = m.linkname.decode("utf-8", "surrogateescape")
            if m.type == T_REG:
                scratch = str(count)
                fd = os.open(
                    scratch,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dirfd,
                )
                try:
                    stream.copy_to(fd, size, m.display)
                finally:
                    os.close(fd)
                size = 0
                archive.files[name] = os.path.join(root, scratch)
                archive.links.pop(name, None)
            elif m.type == T_SYM:
                # Relative to the link's directory; an absolute target means the archive's root.
                base = "" if linkname.startswith("/") else posixpath.dirname(name)
                target = _clean(posixpath.join(base, linkname), strict=False)
                if target is not None:
                    archive.links[name] = target
            elif m.type == T_LNK:
                target = _clean(linkname, strict=False)
                if target is not None:
                    archive.links[name] = target
            # Directories, devices and fifos carry nothing a load needs.
            stream.skip(size, m.display)
            stream.skip(-data_size(m) % BLOCK, "padding")
    finally:
        os.close(dirfd)
    return archive


# ---- load: what the archive holds ----------------------------------------------------------


@dataclass
class LoadItem:
    config: bytes
    layers: list[str]  # member names of the layer tars, bottom first
    tags: list[refs.Reference]


def load_items(archive: Archive) -> list[LoadItem]:
    if archive.has("manifest.json"):
        return _docker_items(archive)
    if archive.has("index.json"):
        return _oci_items(archive)
    raise InvalidParameter(
        "invalid archive: neither manifest.json nor index.json found "
        "(archives from Docker before 1.10 are not supported)"
    )


def _docker_items(archive: Archive) -> list[LoadItem]:
    manifest = archive.json("manifest.json")
    if not isinstance(manifest, list):
        raise InvalidParameter("invalid archive: manifest.json is not a list")
    items = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidParameter("invalid archive: manifest.json entry without Config")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise InvalidParameter("invalid archive: manifest.json Layers is not a list of paths")
        tags = []
        for t in entry.get("RepoTags") or []:
            if not isinstance(t, str):
                continue
            try:
                r = refs.parse(t)
            except InvalidParameter as e:
                raise InvalidParameter(f"invalid archive: invalid tag {t!r}: {e.message}") from e
            if r.tag is None or r.digest is not None:
                raise InvalidParameter(f"invalid archive: {t!r} is not a tag")
            tags.append(r)
        items.append(LoadItem(archive.raw(entry["Config"]), layers, tags))
    return items


def _blob_path(digest: Any) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise InvalidParameter(f"invalid archive: unsupported digest {digest!r}")
    return "blobs/sha256/" + digest[7:]


def _oci_items(archive: Archive) -> list[LoadItem]:
    index = archive.json("index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise InvalidParameter("invalid archive: index.json has no manifests")
    by_digest: dict[str, LoadItem] = {}
    for e in entries:
        if not isinstance(e, dict) or e.get("mediaType", OCI_MANIFEST) not in (
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json",
        ):
            continue  # nested indexes (multi-platform) are not loadable into one image store
        item = by_digest.get(e.get("digest", ""))
        if item is None:
            m = archive.json(_blob_path(e.get("digest")))
            if not isinstance(m, dict) or not isinstance(m.get("config"), dict):
                raise InvalidParameter("invalid archive: OCI manifest without config")
            layers = [_blob_path(x.get("digest")) for x in m.get("layers") or [] if isinstance(x, dict)]
            item = LoadItem(archive.raw(_blob_path(m["config"].get("digest"))), layers, [])
            by_digest[e["digest"]] = item
        ann = e.get("annotations") or {}
        name = ann.get(IMAGE_NAME_ANNOTATION) or ann.get(REF_NAME_ANNOTATION)
        if isinstance(name, str) and name:
            try:
                r = refs.parse(name)
            except InvalidParameter:
                continue  # a bare ref.name like "latest" names no repository
            if r.tag is not None and r.digest is None:
                item.tags.append(r)
    if not by_digest:
        raise InvalidParameter("invalid archive: no image manifests in index.json")
    return list(by_digest.values())


def config_diff_ids(raw: bytes) -> list[str]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter(f"invalid archive: invalid image config: {e}") from e
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidParameter("invalid archive: image config without rootfs.diff_ids")
    return diff_ids


async def register_layers(
    layers: LayerStore, archive: Archive, item: LoadItem, on_layer: Callable[[Layer], None]
) -> None:
    """Apply the item's layers that the store lacks, each checked against its diff ID.

    The layer files are extracted by a layer worker process, which reads them directly.
    """
    diff_ids = config_diff_ids(item.config)
    if len(diff_ids) != len(item.layers):
        raise InvalidParameter("invalid archive: the image config and the manifest disagree on the layers")
    parent: str | None = None
    for diff_id, chain, member in zip(diff_ids, chain_ids(diff_ids), item.layers, strict=True):
        if not layers.has(chain):
            with archive.open(member) as f:
                try:
                    layer = await layers.register_file(f.fileno(), parent, expect_diff_id=diff_id)
                except DiffIDMismatch as e:
                    raise InvalidParameter(
                        f"invalid archive: layer {member} has diff ID {e.actual}, the config says {diff_id}"
                    ) from None
            on_layer(layer)
        parent = chain


def iter_chains(items: list[LoadItem]) -> Iterator[str]:
    for item in items:
        yield from chain_ids(config_diff_ids(item.config))


# ---- orchestration ----------------------------------------------------------------------------


async def load(dist: Distribution, chunks: AsyncIterator[bytes], quiet: bool, progress: ProgressSink) -> list[str]:
    """`docker load`: returns what was loaded (tags, or IDs of untagged images)."""
    images = dist.images
    tmpdir = dist.temp_dir()
    loaded: list[str] = []
    ok = False
    try:
        archive = await feed_thread(chunks, lambda f: read_archive(f, tmpdir))
        items = load_items(archive)
        with dist.pinned(iter_chains(items)):
            for item in items:

                def on_layer(layer: Layer) -> None:
                    if not quiet:
                        progress(
                            Message(
                                status="Loading layer",
                                id=short(layer.diff_id),
                                current=layer.size,
                                total=layer.size or None,
                                detail=True,
                            )
                        )

                await register_layers(dist.layers, archive, item, on_layer)
                img = images.store(item.config)
                for ref in item.tags:
                    old = images.refs.get(ref)
                    if old is not None and old != img.id:
                        progress(
                            Message(
                                stream=f"The image {ref.familiar()} already exists, renaming the "
                                f"old one with ID {old} to empty string\n"
                            )
                        )
                    images.tag(img, ref)
                    progress(Message(stream=f"Loaded image: {ref.familiar()}\n"))
                    loaded.append(ref.familiar())
                if not item.tags:
                    progress(Message(stream=f"Loaded image ID: {img.id}\n"))
                    loaded.append(img.id)
        ok = True
        return loaded
    finally:
        await asyncio.to_thread(shutil.rmtree, tmpdir, True)
        if not ok:
            await dist.collect_orphans()


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def all_chains(items: list[SaveItem]) -> list[str]:
    return [c for item in items for c in chain_ids(item.image.diff_ids)]
