"""`docker cp` on a container's root filesystem: stat, tar out, extract in.

Every path is resolved inside the container's root with openat2(RESOLVE_IN_ROOT) (see
safepath): a symlink the container made (`/escape -> /`, `/up -> ../../..`) resolves to the
container's own `/`, never the host's, while absolute links inside the image (`/var/run -> /run`)
work as they do in the container. Tars go out through the layer engine's `tar_path` and come in
through its extractor, so they get the same no-follow, fd-relative treatment as image layers.

The extractor differs from a layer apply where dockerd's archive.Untar differs from applying a
layer: no whiteouts, the archive's `.` entry leaves the destination directory alone, an optional
`noOverwriteDirNonDir` check, and an optional owner for everything (copyUIDGID).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from bocker_engine.errors import EngineError, InvalidParameter, NotFound, System
from bocker_engine.storage import safepath

# The layer engine's extraction internals, reused rather than copied (one safe tar reader).
# Kept together here: if the engine's module layout changes, this is the one place to follow.
from bocker_engine.storage.layers import Whiteouts, tar_path
from bocker_engine.storage.layers.apply import _Applier, _run, _skipped
from bocker_engine.storage.layers.common import T_BLK, T_CHR, T_DIR, T_FIFO, T_LNK, T_REG, T_SYM, lstat_at
from bocker_engine.storage.layers.tarread import Member, Source

# Go's os.FileMode type bits (what the CLI decodes from X-Docker-Container-Path-Stat).
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    """st_mode as Go's os.FileMode (fillFileStatFromSys)."""
    mode = st_mode & 0o777
    fmt = stat.S_IFMT(st_mode)
    mode |= {
        stat.S_IFBLK: MODE_DEVICE,
        stat.S_IFCHR: MODE_DEVICE | MODE_CHAR_DEVICE,
        stat.S_IFDIR: MODE_DIR,
        stat.S_IFIFO: MODE_NAMED_PIPE,
        stat.S_IFLNK: MODE_SYMLINK,
        stat.S_IFSOCK: MODE_SOCKET,
    }.get(fmt, 0)
    if st_mode & stat.S_ISGID:
        mode |= MODE_SETGID
    if st_mode & stat.S_ISUID:
        mode |= MODE_SETUID
    if st_mode & stat.S_ISVTX:
        mode |= MODE_STICKY
    return mode


def go_time(ns: int) -> str:
    """Go's time.Time JSON form (RFC 3339 with nanoseconds, trailing zeros trimmed), in UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return base + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


# ---- path arithmetic (Go's filepath rules on container paths) --------------------------------


def clean_parts(path: str) -> list[str]:
    """filepath.Clean("/" + path) as components: `..` at the top stays at the top."""
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
        else:
            parts.append(comp)
    return parts


def follows_final(path: str) -> bool:
    """A trailing `/` or `/.` asks for what the last component points to (Lstat("x/") follows)."""
    return path.endswith("/") or path.endswith("/.") or path == "."


def base_name(path: str) -> str:
    """filepath.Base of archive.PreserveTrailingDotOrSeparator(filepath.Join("/", path), path)."""
    parts = clean_parts(path)
    if path.endswith("/.") or path == ".":
        return "."
    return parts[-1] if parts else "/"


# ---- resolution ------------------------------------------------------------------------------


class Root:
    """An O_PATH handle on a container's root; every lookup below is anchored to it."""

    def __init__(self, path: str) -> None:
        self.fd = safepath.open_root(path)
        self.real = os.readlink(f"/proc/self/fd/{self.fd}")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, parts: list[str], flags: int) -> int:
        return safepath.open_in_root(self.fd, "/".join(parts), flags)

    def container_path(self, fd: int) -> str:
        """Where an fd opened under this root sits, as a path inside the container."""
        host = os.readlink(f"/proc/self/fd/{fd}")
        if host == self.real:
            return "/"
        if not host.startswith(self.real.rstrip("/") + "/"):
            raise System("a path resolved outside the container's root")
        return host[len(self.real.rstrip("/")) :]

    def resolve(self, path: str) -> str:
        """The fully resolved container path (symlinks followed in the container's scope, like
        FollowSymlinkInScope); a dangling tail is joined lexically to what does resolve."""
        parts = clean_parts(path)
        tail: list[str] = []
        while True:
            try:
                fd = self.open(parts, os.O_PATH)
            except (FileNotFoundError, NotADirectoryError):
                if not parts:
                    raise
                last = parts.pop()
                try:
                    pfd = self.open(parts, os.O_PATH | os.O_DIRECTORY)
                except OSError:
                    tail.insert(0, last)
                    continue
                try:
                    link = os.readlink(last, dir_fd=pfd)
                except OSError:
                    link = None
                finally:
                    os.close(pfd)
                if link is None:
                    tail.insert(0, last)
                    continue
                # A dangling symlink: resolve what it points to (one level, as far as it goes).
                target = link if link.startswith("/") else "/".join(["", *parts, link])
                parts = clean_parts(target)
                continue
            try:
                where = self.container_path(fd)
            finally:
                os.close(fd)
            return "/" + "/".join(clean_parts(where) + tail)


def _not_found() -> NotFound:
    return NotFound("no such file or directory")


@dataclass
class PathStat:
    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": self.link_target,
        }


def _target(root: Root, path: str) -> tuple[str, os.stat_result]:
    """(container path to archive, its lstat): the last component is not followed unless the
    path ends in `/` or `/.`."""
    parts = clean_parts(path)
    try:
        if follows_final(path) or not parts:
            fd = root.open(parts, os.O_PATH)
            try:
                return root.container_path(fd), os.fstat(fd)
            finally:
                os.close(fd)
        pfd = root.open(parts[:-1], os.O_PATH | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found() from None
    try:
        st = lstat_at(pfd, os.fsencode(parts[-1]))
        if st is None:
            raise _not_found()
        return root.container_path(pfd).rstrip("/") + "/" + parts[-1], st
    finally:
        os.close(pfd)


def stat_path(rootfs: str, path: str) -> PathStat:
    """ContainerStatPath: lstat of `path` in the container; NotFound when it does not exist."""
    with Root(rootfs) as root:
        _, st = _target(root, path)
        link = root.resolve(path) if stat.S_ISLNK(st.st_mode) else ""
        return PathStat(base_name(path), st.st_size, go_file_mode(st.st_mode), go_time(st.st_mtime_ns), link)


def archive_path(rootfs: str, path: str, out: BinaryIO) -> None:
    """The tar of `path` (a file, a symlink itself, or a tree), entries named after the
    requested base name like dockerd's TarResourceRebase."""
    with Root(rootfs) as root:
        where, _ = _target(root, path)
    tar_path(rootfs, where, out, name=base_name(path))


# ---- extraction ------------------------------------------------------------------------------


def extract_dir(rootfs: str, path: str) -> tuple[int, str]:
    """An O_PATH fd of the directory `path` (symlinks followed, last one too) and its container
    path. NotFound when missing; InvalidParameter when it is not a directory."""
    root = Root(rootfs)
    try:
        parts = clean_parts(path)
        try:
            fd = root.open(parts, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            raise _not_found() from None
        except NotADirectoryError:
            try:
                os.close(root.open(parts, os.O_PATH))
            except FileNotFoundError:
                raise _not_found() from None
            except NotADirectoryError:
                raise System(f"lstat {path}: not a directory") from None
            raise InvalidParameter("extraction point is not a directory") from None
        try:
            return fd, root.container_path(fd)
        except BaseException:
            os.close(fd)
            raise
    finally:
        root.close()


class _CopyApplier(_Applier):
    """The layer applier with archive.Untar's rules instead of a layer's."""

    def __init__(
        self, dest: str, dest_name: str, *, no_overwrite_dir_non_dir: bool, owner: tuple[int, int] | None
    ) -> None:
        super().__init__(dest, Whiteouts.DELETE, None)
        self.dest_name = dest_name
        self.no_overwrite = no_overwrite_dir_non_dir
        self.owner = owner

    def apply(self, m: Member, src: Source) -> None:
        if not m.parts:
            if m.type != T_DIR:
                raise InvalidParameter(f"tar entry {m.display!r} would replace the extraction point")
            return  # the destination directory keeps its own metadata (Untar skips ".")
        if m.type == T_REG and _skipped(m):
            # The tar reader does not hand us the data of whiteout-named files.
            raise InvalidParameter(f"cannot copy {m.display}: names starting with .wh. are reserved for layers")
        if self.owner is not None:
            m.uid, m.gid = self.owner
        if self.no_overwrite:
            self._check_overwrite(m)
        handler: dict[bytes, Callable[[Member], None]] = {
            T_DIR: self._dir,
            T_SYM: self._symlink,
            T_LNK: self._hardlink,
            T_CHR: self._node,
            T_BLK: self._node,
            T_FIFO: self._node,
        }
        if m.type == T_REG:
            self._file(m, src)
        elif m.type in handler:
            handler[m.type](m)
        else:
            raise InvalidParameter(f"tar entry {m.display}: unsupported type {m.type!r}")

    def _check_overwrite(self, m: Member) -> None:
        got = self._parent(m.parts[:-1], create=False)
        if got is None:
            return
        st = lstat_at(got[0], m.parts[-1])
        if st is None:
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        name = self.dest_name.rstrip("/") + "/" + b"/".join(m.parts).decode("utf-8", "backslashreplace")
        # archive.Untar's words; dockerd answers them as a server error.
        if is_dir and m.type != T_DIR:
            raise System(f'cannot overwrite directory "{name}" with non-directory "{self.dest_name}"')
        if not is_dir and m.type == T_DIR:
            raise System(f'cannot overwrite non-directory "{name}" with directory "{self.dest_name}"')


def _reworded(e: EngineError) -> EngineError:
    # The layer engine's messages speak of layers; a cp upload is not one.
    msg = str(e).replace("invalid layer: ", "invalid tar archive: ").replace("extracting layer entry", "extracting")
    return type(e)(msg)


def extract(
    src: BinaryIO, dirfd: int, dest_name: str, *, no_overwrite_dir_non_dir: bool, owner: tuple[int, int] | None
) -> None:
    """Extract the uncompressed tar `src` into the directory behind `dirfd` (from extract_dir),
    whose container path is `dest_name`."""
    try:
        ap = _CopyApplier(
            safepath.fd_path(dirfd, b"").decode(),
            dest_name,
            no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
            owner=owner,
        )
    except OSError as e:
        raise System(f"opening the extraction point: {e.strerror}") from None
    try:
        source = Source(src, None)
        try:
            _run(ap, source)
            source.drain()
            ap.set_dir_times()
        except EngineError as e:
            raise _reworded(e) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise System(f"extracting: {e.strerror}") from None
            raise InvalidParameter(f"extracting: {e.strerror or e}") from None
    finally:
        ap.close()


# ---- users (copyUIDGID) ----------------------------------------------------------------------


def _db(root: Root, name: str) -> list[list[str]]:
    try:
        fd = root.open(["etc", name], os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "r", errors="replace") as f:
        return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]


def lookup_owner(rootfs: str, user: str) -> tuple[int, int]:
    """uid and gid of a container's `User` (name|uid[:group|gid]) from its own /etc/passwd and
    /etc/group (dockerd looks the name up on the host, which is a bug we do not copy)."""
    name, _, group = user.partition(":")
    with Root(rootfs) as root:
        passwd = _db(root, "passwd")
        entry = next((e for e in passwd if len(e) >= 4 and e[0] == name), None)
        if entry is None and name.isdigit():
            entry = next((e for e in passwd if len(e) >= 4 and e[2] == name), None)
        if entry is not None:
            uid, gid = int(entry[2]), int(entry[3])
        elif name.isdigit():
            uid, gid = int(name), 0
        else:
            raise NotFound(f"unable to find user {name}: no matching entries in passwd file")
        if group:
            g = next((e for e in _db(root, "group") if len(e) >= 3 and e[0] == group), None)
            if g is not None:
                gid = int(g[2])
            elif group.isdigit():
                gid = int(group)
            else:
                raise NotFound(f"unable to find group {group}: no matching entries in group file")
        return uid, gid
