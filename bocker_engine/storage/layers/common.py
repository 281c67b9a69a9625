"""What the layer modules share: tar block sizes and type flags, whiteout names, errno classes."""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass

CHUNK = 1 << 20
BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
# Go's archive/tar refuses PAX/GNU records above 1 MiB too; they are held in memory.
MAX_SPECIAL = 1 << 20
# Extended headers merged into one member. Writers put one or two there (a global header, a PAX
# header, or a GNU long name and long link); more is an attack on time or memory.
MAX_EXTENDED_RUN = 16
# The decimal length of a PAX record: an int64 has 19 digits.
MAX_PAX_DIGITS = 19

WH_PREFIX = b".wh."
WH_META = b".wh..wh."
WH_OPAQUE = b".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

MODIFIED, ADDED, DELETED = 0, 1, 2

T_REG, T_AREG, T_CONTIG = b"0", b"\0", b"7"
T_LNK, T_SYM, T_CHR, T_BLK, T_DIR, T_FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
T_PAX, T_PAX_GLOBAL, T_GNU_LONGNAME, T_GNU_LONGLINK = b"x", b"g", b"L", b"K"

# errnos that mean the host is in trouble rather than the layer being bad.
HOST_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EROFS,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOMEM,
    errno.EBADF,
    errno.EFAULT,
}
NOTSUP = {errno.ENOTSUP, errno.EOPNOTSUPP}

InodeKey = tuple[int, int]
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Whiteouts(enum.Enum):
    DELETE = "delete"
    OVERLAY = "overlay"


@dataclass
class ApplyResult:
    diff_id: str
    size: int


def lstat_at(dirfd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
