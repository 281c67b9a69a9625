"""The deterministic tar writer that diff, commit and export share."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from bocker_engine.errors import System
from bocker_engine.storage.layers.common import BLOCK, CHUNK, InodeKey
from bocker_engine.storage.layers.tree import Info, public_xattrs


def as_str(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class TarOut:
    """Deterministic tar writer: ustar unless a field needs PAX, numeric ids only, whole-second
    mtimes (like Docker), hard links to the first archived name of an inode."""

    def __init__(self, out: BinaryIO, mtime_clamp: int | None = None) -> None:
        self.out = out
        self.links: dict[InodeKey, str] = {}
        # Reproducible builds (SOURCE_DATE_EPOCH): no mtime later than this.
        self.mtime_clamp = mtime_clamp

    def _write(self, ti: tarfile.TarInfo) -> None:
        self.out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def whiteout(self, name: bytes) -> None:
        ti = tarfile.TarInfo(as_str(name))
        ti.mode, ti.mtime, ti.uname, ti.gname = 0, 0, "", ""
        self._write(ti)

    def add(self, name: bytes, info: Info, opener: Callable[[], int] | None) -> None:
        st = info.st
        ti = tarfile.TarInfo(as_str(name))
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
        ti.mtime = st.st_mtime_ns // 1_000_000_000
        if self.mtime_clamp is not None:
            ti.mtime = min(ti.mtime, self.mtime_clamp)
        content = False
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                ti.type, ti.linkname = tarfile.LNKTYPE, first
            else:
                if st.st_nlink > 1:
                    self.links[key] = ti.name
                ti.type, ti.size = tarfile.REGTYPE, st.st_size
                content = st.st_size > 0
        elif fmt == stat.S_IFDIR:
            ti.type = tarfile.DIRTYPE
        elif fmt == stat.S_IFLNK:
            ti.type, ti.linkname = tarfile.SYMTYPE, as_str(info.link)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
        else:
            return  # sockets are not archived (Docker skips them too)
        if ti.type != tarfile.LNKTYPE:
            ti.pax_headers = {"SCHILY.xattr." + k: as_str(v) for k, v in public_xattrs(info).items()}
        self._write(ti)
        if content:
            assert opener is not None
            self._copy(opener, ti.size, name)

    def _copy(self, opener: Callable[[], int], size: int, name: bytes) -> None:
        try:
            fd = opener()
        except OSError as e:
            raise System(f"archiving {as_str(name)}: {e.strerror}") from None
        try:
            left = size
            while left:
                chunk = os.read(fd, min(CHUNK, left))
                if not chunk:
                    raise System(f"archiving {as_str(name)}: file shrank while reading it")
                self.out.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        self.out.write(bytes(-size % BLOCK))

    def close(self) -> None:
        self.out.write(bytes(2 * BLOCK))
