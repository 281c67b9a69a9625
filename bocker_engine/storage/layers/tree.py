"""Read-only walks of directory trees and the changes between two of them, for diff and export."""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bocker_engine.errors import NotFound, System
from bocker_engine.storage import safepath
from bocker_engine.storage.layers.common import ADDED, DELETED, MODIFIED, NOTSUP

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


class Info:
    """An entry's stat, symlink target and xattrs; the last two read on first use when listed
    lazily (most entries of a snapshot never need them)."""

    __slots__ = ("st", "_link", "_xattrs", "_src")

    def __init__(
        self,
        st: os.stat_result,
        link: bytes = b"",
        xattrs: dict[str, bytes] | None = None,
        src: tuple[Tree, bytes, bytes] | None = None,
    ) -> None:
        self.st = st
        self._link = link
        self._xattrs = xattrs
        # (tree, directory, name) to read them from, when not given.
        self._src = src

    def _load(self) -> None:
        if self._src is not None:
            tree, rel, name = self._src
            self._link, self._xattrs = tree.read_extra(rel, name, self.st.st_mode)
            self._src = None

    @property
    def link(self) -> bytes:
        self._load()
        return self._link

    @property
    def xattrs(self) -> dict[str, bytes]:
        self._load()
        return self._xattrs if self._xattrs is not None else {}


def read_xattrs(dirfd: int, name: bytes) -> dict[str, bytes]:
    path = safepath.fd_path(dirfd, name)
    # Without a name the path is the fd's magic link, which must be followed to reach the dir.
    follow = not name
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as e:
        if e.errno in NOTSUP or e.errno == errno.ENOENT:
            return {}
        raise
    out: dict[str, bytes] = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=follow)
        except OSError:
            continue
    return out


def public_xattrs(info: Info) -> dict[str, bytes]:
    # overlay's own bookkeeping and the host's SELinux labels are not image content.
    return {k: v for k, v in info.xattrs.items() if not k.startswith("trusted.overlay.") and k != "security.selinux"}


class Tree:
    """Read-only view of a directory tree that only descends through real directories.
    A layer tree (`same_mount`) is one filesystem: whatever is mounted inside it (a runtime's
    bind mounts on a live rootfs) is not layer content, so the walk does not enter it."""

    def __init__(self, fd: int, *, same_mount: bool = False) -> None:
        self.fd = fd
        self.same_mount = same_mount

    @classmethod
    def open(cls, path: str) -> Tree:
        try:
            return cls(safepath.open_root(path), same_mount=True)
        except FileNotFoundError:
            raise NotFound(f"no such directory: {path}") from None

    def close(self) -> None:
        os.close(self.fd)

    def list(self, rel: bytes, lazy: bool = False) -> dict[bytes, Info]:
        """The entries of directory `rel`; with `lazy`, symlink targets and xattrs are read only
        when asked for."""
        try:
            fd = safepath.open_beneath(self.fd, rel, os.O_RDONLY | os.O_DIRECTORY, same_mount=self.same_mount)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return {}  # a mount point
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return {}  # changed while we walk (a live container)
            raise System(f"reading {rel.decode('utf-8', 'replace')}: {e.strerror}") from None
        try:
            out: dict[bytes, Info] = {}
            with os.scandir(fd) as it:
                for ent in it:
                    name = ent.name.encode(_FS_ENCODING, _FS_ERRORS)  # os.fsencode, inlined
                    try:
                        st = ent.stat(follow_symlinks=False)
                        if lazy:
                            out[name] = Info(st, src=(self, rel, name))
                            continue
                        link = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else b""
                    except FileNotFoundError:
                        continue
                    out[name] = Info(st, link, read_xattrs(fd, name))
            return out
        finally:
            os.close(fd)

    def read_extra(self, rel: bytes, name: bytes, mode: int) -> tuple[bytes, dict[str, bytes]]:
        """The symlink target and xattrs of `rel`/`name`, for a lazily listed entry."""
        try:
            fd = safepath.open_beneath(self.fd, rel, os.O_PATH | os.O_DIRECTORY, same_mount=self.same_mount)
        except OSError:
            return b"", {}  # gone meanwhile (a live container), as if listed a moment later
        try:
            try:
                link = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(mode) else b""
            except OSError:
                link = b""
            return link, read_xattrs(fd, name)
        finally:
            os.close(fd)

    def opener(self, rel: bytes) -> Callable[[], int]:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        return lambda: safepath.open_beneath(self.fd, rel, flags, same_mount=self.same_mount)


def same_time(a: int, b: int) -> bool:
    # Tar keeps whole seconds: a file extracted from a layer compares equal to its source.
    if a == b:
        return True
    return a // 1_000_000_000 == b // 1_000_000_000 and (a % 1_000_000_000 == 0 or b % 1_000_000_000 == 0)


def differs(n: Info, o: Info, snapshot: bool = False) -> bool:
    a, b = n.st, o.st
    if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) != (b.st_mode, b.st_uid, b.st_gid, b.st_rdev):
        return True
    if not same_time(a.st_mtime_ns, b.st_mtime_ns):
        return True
    if not stat.S_ISDIR(a.st_mode) and a.st_size != b.st_size:
        return True
    if snapshot and a.st_ino == b.st_ino and a.st_ctime_ns == b.st_ctime_ns:
        # The same inode, untouched since the snapshot: any change of its xattrs would have
        # moved its ctime, and a symlink's target never changes in place.
        return False
    return n.link != o.link or public_xattrs(n) != public_xattrs(o)


@dataclass
class Frame:
    rel: bytes
    info: Info | None
    emitted: bool
    names: list[bytes]
    new: dict[bytes, Info]
    old: dict[bytes, Info]


def join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def walk_changes(new: Tree, old: Tree | None, snapshot: bool = False) -> Iterator[tuple[bytes, int, Info]]:
    """Changes from `old` to `new` in sorted pre-order. A directory that did not change itself
    but contains changes is reported as modified, right before its first changed child.

    `snapshot`: `new` began as a snapshot of `old` (btrfs), so inode numbers are shared and an
    inode whose ctime did not move is unchanged; only changed entries have their symlink
    target and xattrs read."""
    lazy = snapshot and old is not None
    nroot = new.list(b"", lazy)
    oroot = old.list(b"", lazy) if old is not None else {}
    stack = [Frame(b"", None, True, sorted(nroot.keys() | oroot.keys(), reverse=True), nroot, oroot)]

    def pending() -> Iterator[tuple[bytes, int, Info]]:
        for fr in stack[1:]:
            if not fr.emitted:
                fr.emitted = True
                assert fr.info is not None
                yield fr.rel, MODIFIED, fr.info

    while stack:
        fr = stack[-1]
        if not fr.names:
            stack.pop()
            continue
        name = fr.names.pop()
        rel = join(fr.rel, name)
        n = fr.new.get(name)
        o = fr.old.get(name)
        if n is None:
            assert o is not None
            yield from pending()
            yield rel, DELETED, o
            continue
        changed = o is None or differs(n, o, snapshot)
        if changed:
            yield from pending()
            yield rel, ADDED if o is None else MODIFIED, n
        if stat.S_ISDIR(n.st.st_mode):
            nc = new.list(rel, lazy)
            both_dirs = old is not None and o is not None and stat.S_ISDIR(o.st.st_mode)
            oc = old.list(rel, lazy) if old is not None and both_dirs else {}
            stack.append(Frame(rel, n, changed, sorted(nc.keys() | oc.keys(), reverse=True), nc, oc))
