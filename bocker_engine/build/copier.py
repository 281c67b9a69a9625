"""COPY and ADD: sources found in a tree (the context, a stage's or an image's root), hashed for
the cache, and copied into a container's root filesystem.

Every source path is resolved inside its tree as a process chrooted there would resolve it
(openat2 RESOLVE_IN_ROOT): `../x` and symlinks pointing outside the context resolve inside it.
Copies travel as a tar from the tree walker to the `docker cp` extractor (no symlink followed,
nothing written outside the destination root).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from bocker_engine.engine.pipes import piped
from bocker_engine.errors import InvalidParameter, NotFound
from bocker_engine.storage import container_copy, safepath
from bocker_engine.storage.layers import Prefixed, decompressed, tar_path
from bocker_engine.storage.layers.apply import _run
from bocker_engine.storage.layers.tarread import Member
from bocker_engine.storage.layers.tarread import Source as TarSource

_GLOB = set("*?[")


@dataclass(frozen=True)
class Source:
    root: str  # the tree it comes from
    path: str  # resolved inside `root`, "/a/b"
    is_dir: bool
    archive: bool  # ADD of a local archive: extracted, not copied


def _clean(path: str) -> list[str]:
    return container_copy.clean_parts(path)


def _is_archive(root: str, path: str) -> bool:
    rootfd = safepath.open_root(root)
    try:
        fd = safepath.open_in_root(rootfd, path.lstrip("/"), os.O_RDONLY)
    finally:
        os.close(rootfd)
    with os.fdopen(fd, "rb") as f:
        try:
            stream = decompressed(f)
            head = stream.read(512)
        except Exception:
            return False
    return len(head) == 512 and head[257:262] == b"ustar"


def _lstat(root: container_copy.Root, parts: list[str]) -> os.stat_result | None:
    try:
        pfd = root.open(parts[:-1], os.O_PATH | os.O_DIRECTORY) if parts else None
    except OSError:
        return None
    if pfd is None:
        return os.fstat(root.fd)
    try:
        return os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(pfd)


def _glob(root: container_copy.Root, parts: list[str]) -> list[str]:
    """Paths in `root` matching the pattern parts (each part a glob), resolved in scope."""
    found: list[list[str]] = [[]]
    for part in parts:
        nxt: list[list[str]] = []
        for base in found:
            if not (_GLOB & set(part)):
                nxt.append([*base, part])
                continue
            try:
                fd = root.open(base, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                names = sorted(os.listdir(fd))
            finally:
                os.close(fd)
            nxt.extend([*base, n] for n in names if fnmatch.fnmatchcase(n, part))
        found = nxt
    return ["/" + "/".join(p) for p in found]


def _not_found(what: str, pattern: str) -> NotFound:
    return NotFound(
        f"{what} failed: file not found in build context or excluded by .dockerignore: "
        f"stat {pattern.lstrip('/')}: file does not exist"
    )


def resolve(root: str, patterns: list[str], *, archives: bool, what: str = "COPY") -> list[Source]:
    """The sources named by `patterns` in `root` (globs expanded); NotFound when one matches
    nothing, with dockerd's words."""
    out: list[Source] = []
    with container_copy.Root(root) as r:
        for pattern in patterns:
            parts = _clean(pattern)
            paths = _glob(r, parts) if any(_GLOB & set(p) for p in parts) else ["/" + "/".join(parts)]
            if not paths:
                raise NotFound(f"{what} failed: no source files were specified")
            for p in paths:
                try:
                    resolved = r.resolve(p)
                except OSError:
                    raise _not_found(what, pattern) from None
                st = _lstat(r, _clean(resolved))
                if st is None:
                    raise _not_found(what, pattern)
                is_dir = stat.S_ISDIR(st.st_mode)
                archive = archives and stat.S_ISREG(st.st_mode) and _is_archive(root, resolved)
                out.append(Source(root, resolved, is_dir, archive))
    return out


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return len(b)


def content_hash(sources: list[Source]) -> str:
    """dockerd's `file:`, `dir:` or `multi:` prefix and a hash of names, modes, owners and
    contents (mtimes left out, so a touched but unchanged file still hits the cache)."""
    total = hashlib.sha256()
    for src in sources:
        h = _Hasher()
        name = "." if src.is_dir else os.path.basename(src.path)
        tar_path(src.root, src.path, h, name=name, mtime_clamp=0)  # type: ignore[arg-type]
        total.update(h.h.hexdigest().encode())
    digest = total.hexdigest()
    if len(sources) == 1:
        return f"{'dir' if sources[0].is_dir else 'file'}:{digest}"
    return f"multi:{digest}"


def mkdir_all(rootfs: str, path: str, owner: tuple[int, int]) -> None:
    """`mkdir -p` inside `rootfs`, resolved in scope; new directories get `owner`."""
    parts = _clean(path)
    rootfd = safepath.open_root(rootfs)
    try:
        for i in range(len(parts)):
            sub = "/".join(parts[: i + 1])
            try:
                os.close(safepath.open_in_root(rootfd, sub, os.O_PATH | os.O_DIRECTORY))
                continue
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise InvalidParameter(f"mkdir {'/' + sub}: not a directory") from None
            pfd = safepath.open_in_root(rootfd, "/".join(parts[:i]), os.O_PATH | os.O_DIRECTORY)
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parts[i], 0o755, dir_fd=pfd)
                    os.chown(parts[i], owner[0], owner[1], dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)
    finally:
        os.close(rootfd)


def is_dir_in(rootfs: str, path: str) -> bool:
    rootfd = safepath.open_root(rootfs)
    try:
        os.close(safepath.open_in_root(rootfd, path.lstrip("/"), os.O_PATH | os.O_DIRECTORY))
        return True
    except OSError:
        return False
    finally:
        os.close(rootfd)


class _Applier(container_copy._CopyApplier):
    def __init__(self, dest: str, dest_name: str, owner: tuple[int, int] | None, chmod: int | None) -> None:
        super().__init__(dest, dest_name, no_overwrite_dir_non_dir=False, owner=owner)
        self.chmod = chmod

    def apply(self, m: Member, src: TarSource) -> None:
        if self.chmod is not None and m.type != b"2":
            m.mode = (m.mode & ~0o7777) | self.chmod
        super().apply(m, src)


def _extract(stream: BinaryIO, rootfs: str, dest_dir: str, owner: tuple[int, int] | None, chmod: int | None) -> None:
    fd, name = container_copy.extract_dir(rootfs, dest_dir)
    try:
        ap = _Applier(safepath.fd_path(fd, b"").decode(), name, owner, chmod)
    finally:
        os.close(fd)
    try:
        source = TarSource(stream, None)
        _run(ap, source)
        source.drain()
        ap.set_dir_times()
    finally:
        ap.close()


def copy_into(
    rootfs: str,
    sources: list[Source],
    dest: str,
    *,
    owner: tuple[int, int] | None,
    chmod: int | None,
) -> None:
    """Copy `sources` to `dest` (absolute, inside `rootfs`) with COPY's rules; blocking."""
    dir_owner = owner or (0, 0)
    file_owner = owner or (0, 0)
    into_dir = dest.endswith("/") or len(sources) > 1 or is_dir_in(rootfs, dest)
    for src in sources:
        if src.archive:
            mkdir_all(rootfs, dest, dir_owner)
            rootfd = safepath.open_root(src.root)
            try:
                fd = safepath.open_in_root(rootfd, src.path.lstrip("/"), os.O_RDONLY)
            finally:
                os.close(rootfd)
            with os.fdopen(fd, "rb") as f:
                _extract(decompressed(f), rootfs, dest, owner, chmod)
            continue
        if src.is_dir:
            target_dir, name = dest, "."
        elif into_dir:
            target_dir, name = dest, os.path.basename(src.path)
        else:
            target_dir, name = os.path.dirname(dest.rstrip("/")) or "/", os.path.basename(dest.rstrip("/"))
        mkdir_all(rootfs, target_dir, dir_owner)
        src_copy = src

        def produce(out: BinaryIO, s: Source = src_copy, n: str = name) -> None:
            tar_path(s.root, s.path, out, name=n)

        def consume(inp: BinaryIO, where: str = target_dir) -> None:
            _extract(inp, rootfs, where, file_owner, chmod)

        piped(produce, consume)


def parse_chmod(value: str | None) -> int | None:
    if not value:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise InvalidParameter(f"invalid chmod parameter: {value}") from None
    if mode < 0 or mode > 0o7777:
        raise InvalidParameter(f"invalid chmod parameter: {value}")
    return mode


def write_file(rootfs_dir: str, name: str, data: bytes, mode: int = 0o600) -> None:
    """A file in a plain directory (ADD of a URL, downloaded next to the context)."""
    path = os.path.join(rootfs_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


__all__ = ["Prefixed", "Source", "content_hash", "copy_into", "mkdir_all", "parse_chmod", "resolve"]
