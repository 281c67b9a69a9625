"""Layer tars in Docker's format: extract (pull/load), produce (commit/push/save), export.

A layer is a tar stream; `.wh.NAME` deletes NAME from the layers below and `DIR/.wh..wh..opq`
hides everything below in DIR. Layer content is untrusted, so extraction resolves every parent
directory with openat2(RESOLVE_IN_ROOT) against the layer root (a symlink `a -> /etc` followed by
`a/passwd` writes the layer's own etc/passwd, as in Docker's chroot) and creates the final
component with no-follow calls relative to that directory fd. Nothing is ever looked up by an
absolute host path built from tar content.

The tar parser is our own (ustar, GNU long names, PAX) because tar-split needs the exact bytes of
every header, and reading them straight from the stream avoids double buffering.
"""

from __future__ import annotations

import bz2
import enum
import errno
import hashlib
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, cast

from bocker_engine.errors import EngineError, InvalidParameter, NotFound, System
from bocker_engine.storage import safepath
from bocker_engine.storage.tarsplit import SplitRecorder, assemble

CHUNK = 1 << 20
BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
# Go's archive/tar refuses PAX/GNU records above 1 MiB too; they are held in memory.
MAX_SPECIAL = 1 << 20

WH_PREFIX = b".wh."
WH_META = b".wh..wh."
WH_OPAQUE = b".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

MODIFIED, ADDED, DELETED = 0, 1, 2

_REG, _AREG, _CONTIG = b"0", b"\0", b"7"
_LNK, _SYM, _CHR, _BLK, _DIR, _FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"

# errnos that mean the host is in trouble rather than the layer being bad.
_HOST_ERRNOS = {
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
_NOTSUP = {errno.ENOTSUP, errno.EOPNOTSUPP}

InodeKey = tuple[int, int]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Whiteouts(enum.Enum):
    DELETE = "delete"
    OVERLAY = "overlay"


@dataclass
class ApplyResult:
    diff_id: str
    size: int


# ---------------------------------------------------------------------------------------------
# decompression


class Prefixed(io.RawIOBase):
    """The bytes sniffed for the magic, then the rest of the source."""

    def __init__(self, prefix: bytes, src: BinaryIO) -> None:
        self._prefix = prefix
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class _Engine(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def step(self, data: bytes) -> bytes: ...


class _ZlibEngine:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._full = False

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        # A full output chunk may leave output pending inside zlib even with no input left.
        return not self._d.unconsumed_tail and not self._full

    def step(self, data: bytes) -> bytes:
        out = self._d.decompress(self._d.unconsumed_tail + data, CHUNK)
        self._full = len(out) == CHUNK
        return out


class _StdEngine:
    """lzma / bz2 decompressors, which share one API."""

    def __init__(self, d: lzma.LZMADecompressor | bz2.BZ2Decompressor) -> None:
        self._d = d

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    def step(self, data: bytes) -> bytes:
        return self._d.decompress(data, CHUNK)


class _Decompressor(io.RawIOBase):
    """Streams a (possibly multi-member) compressed source with bounded memory: output is
    produced at most CHUNK bytes at a time, so a compression bomb cannot blow up memory."""

    def __init__(self, src: BinaryIO, factory: Callable[[], _Engine], kind: str) -> None:
        self._src = src
        self._factory = factory
        self._kind = kind
        self._d = factory()
        self._out = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            if self._done:
                return 0
            self._out, self._pos = self._produce(), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _produce(self) -> bytes:
        if self._d.eof:
            rest = self._d.unused_data.lstrip(b"\0")
            # Concatenated members are one stream (pigz, multi-stream xz); zero padding after
            # the last member is tolerated like gzip(1) does.
            while not rest:
                data = self._src.read(CHUNK)
                if not data:
                    self._done = True
                    return b""
                rest = data.lstrip(b"\0")
            self._d = self._factory()
            return self._step(rest)
        data = b""
        if self._d.needs_input:
            data = self._src.read(CHUNK)
            if not data:
                raise InvalidParameter(f"invalid layer: {self._kind} stream is truncated")
        return self._step(data)

    def _step(self, data: bytes) -> bytes:
        try:
            return self._d.step(data)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
            raise InvalidParameter(f"invalid layer: bad {self._kind} data: {e}") from None


def decompressed(src: BinaryIO) -> BinaryIO:
    """Sniff the compression of a layer stream and return its uncompressed bytes as a stream.
    Works on pipes and sockets: only the first few bytes are buffered for the sniffing."""
    head = b""
    while len(head) < 6:
        data = src.read(6 - len(head))
        if not data:
            break
        head += data
    chained = Prefixed(head, src)
    if head.startswith(b"\x1f\x8b"):
        raw: io.RawIOBase = _Decompressor(cast(BinaryIO, chained), _ZlibEngine, "gzip")
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise InvalidParameter("zstd not supported") from None
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, chained), read_across_frames=True, closefd=False
        )
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=CHUNK))
    elif head.startswith(b"\xfd7zXZ\x00"):
        raw = _Decompressor(cast(BinaryIO, chained), lambda: _StdEngine(lzma.LZMADecompressor()), "xz")
    elif head.startswith(b"BZh"):
        raw = _Decompressor(cast(BinaryIO, chained), lambda: _StdEngine(bz2.BZ2Decompressor()), "bzip2")
    else:
        raw = chained
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=CHUNK))


# ---------------------------------------------------------------------------------------------
# tar parsing


class _Source:
    """Reads the layer stream once: hashes every byte (DiffID) and hands header bytes, padding
    and other non-content bytes to the tar-split recorder."""

    def __init__(self, src: BinaryIO, rec: SplitRecorder | None) -> None:
        self._src = src
        self._rec = rec
        self._sha = hashlib.sha256()
        self._buf = b""
        self._pos = 0

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def _more(self) -> bool:
        try:
            data = self._src.read(CHUNK)
        except EngineError:
            raise
        except OSError as e:
            raise System(f"reading layer stream: {e}") from None
        if not data:
            return False
        self._sha.update(data)
        self._buf, self._pos = data, 0
        return True

    def _take(self, n: int) -> memoryview:
        if self._pos >= len(self._buf) and not self._more():
            return memoryview(b"")
        k = min(n, len(self._buf) - self._pos)
        mv = memoryview(self._buf)[self._pos : self._pos + k]
        self._pos += k
        return mv

    def read(self, n: int, what: str, *, eof_ok: bool = False) -> bytes | None:
        """Exactly n bytes (recorded as raw), or None at a clean EOF when eof_ok."""
        parts = []
        left = n
        while left:
            mv = self._take(left)
            if not mv:
                if eof_ok and left == n:
                    return None
                raise InvalidParameter(f"invalid layer: unexpected end of tar stream in {what}")
            parts.append(mv)
            left -= len(mv)
        data = b"".join(parts)
        if self._rec is not None:
            self._rec.raw(data)
        return data

    def skip(self, n: int, what: str) -> None:
        while n:
            mv = self._take(min(n, CHUNK))
            if not mv:
                raise InvalidParameter(f"invalid layer: unexpected end of tar stream in {what}")
            if self._rec is not None:
                self._rec.raw(mv)
            n -= len(mv)

    def copy_to(self, fd: int, n: int, what: str) -> int:
        """Write n content bytes to fd; returns their crc32 (0 when not recording)."""
        crc = 0
        while n:
            mv = self._take(min(n, CHUNK))
            if not mv:
                raise InvalidParameter(f"invalid layer: unexpected end of tar stream in {what}")
            if self._rec is not None:
                crc = zlib.crc32(mv, crc)
            n -= len(mv)
            while mv:
                mv = mv[os.write(fd, mv) :]
        return crc

    def drain(self) -> None:
        # DiffID covers every byte up to EOF, padding after the end-of-archive blocks included.
        while True:
            mv = self._take(CHUNK)
            if not mv:
                return
            if self._rec is not None:
                self._rec.raw(mv)


@dataclass
class _Member:
    name: bytes
    parts: list[bytes]
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")


def _cstr(b: bytes) -> bytes:
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def _num(b: bytes, what: str) -> int:
    if b and b[0] & 0x80:
        # GNU base-256: big-endian two's complement, sign in bit 6 of the first byte.
        v = int.from_bytes(bytes([b[0] & 0x7F]) + b[1:], "big")
        return v - (1 << (8 * len(b) - 1)) if b[0] & 0x40 else v
    s = b.strip(b" \0")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise InvalidParameter(f"invalid layer: bad {what} field {s!r} in tar header") from None


def _checksum_ok(blk: bytes) -> bool:
    try:
        want = int(blk[148:156].strip(b" \0"), 8)
    except ValueError:
        return False
    unsigned = sum(blk) - sum(blk[148:156]) + 8 * 32
    if want == unsigned:
        return True
    # Some old tars summed signed chars.
    signed = unsigned - 256 * sum(1 for c in blk[:148] + blk[156:] if c > 127)
    return want == signed


def _clean(name: bytes, entry: str, what: str = "name") -> list[bytes]:
    """Member name -> path components below the layer root, Docker style (lexical Clean)."""
    if b"\0" in name:
        raise InvalidParameter(f"invalid layer: tar entry {entry}: NUL byte in {what}")
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if not parts:
                raise InvalidParameter(
                    f"invalid layer: tar entry {entry}: {what} {name.decode('utf-8', 'backslashreplace')!r} "
                    "climbs above the layer root"
                )
            parts.pop()
        else:
            parts.append(comp)
    return parts


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if not data[pos:].strip(b"\0"):
            break
        sp = data.find(b" ", pos)
        try:
            length = int(data[pos:sp]) if sp > pos else 0
        except ValueError:
            length = 0
        if length <= sp - pos or pos + length > len(data) or data[pos + length - 1] != 0x0A:
            raise InvalidParameter("invalid layer: malformed PAX header record")
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq or not key:
            raise InvalidParameter("invalid layer: malformed PAX header record")
        out[key] = value
        pos += length
    return out


def _pax_time(v: bytes) -> int:
    s = v.decode("ascii", "replace")
    neg = s.startswith("-")
    ip, _, fp = s.lstrip("-").partition(".")
    if not (ip.isdigit() or (ip == "" and fp)) or (fp and not fp.isdigit()):
        raise InvalidParameter(f"invalid layer: bad PAX time {s!r}")
    ns = int(ip or "0") * 1_000_000_000 + int((fp + "000000000")[:9])
    return -ns if neg else ns


def _pax_int(v: bytes, key: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidParameter(f"invalid layer: bad PAX {key} {v!r}")
    return n


def _member(blk: bytes, pax: dict[bytes, bytes], longname: bytes | None, longlink: bytes | None) -> _Member:
    typ = blk[156:157]
    name = _cstr(blk[0:100])
    if blk[257:263] == b"ustar\0":
        prefix = _cstr(blk[345:500])
        if prefix:
            name = prefix + b"/" + name
    if longname is not None:
        name = longname
    linkname = longlink if longlink is not None else _cstr(blk[157:257])
    mode = _num(blk[100:108], "mode")
    uid = _num(blk[108:116], "uid")
    gid = _num(blk[116:124], "gid")
    size = _num(blk[124:136], "size")
    mtime_ns = _num(blk[136:148], "mtime") * 1_000_000_000
    devmajor = _num(blk[329:337], "devmajor")
    devminor = _num(blk[337:345], "devminor")
    xattrs: dict[str, bytes] = {}
    for k, v in pax.items():
        if k == b"path" and v:
            name = v
        elif k == b"linkpath" and v:
            linkname = v
        elif k == b"size":
            size = _pax_int(v, "size")
        elif k == b"uid":
            uid = _pax_int(v, "uid")
        elif k == b"gid":
            gid = _pax_int(v, "gid")
        elif k == b"mtime":
            mtime_ns = _pax_time(v)
        elif k.startswith(b"SCHILY.xattr."):
            xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
        elif k.startswith(b"GNU.sparse."):
            raise InvalidParameter("invalid layer: sparse files in layer tars are not supported")
    if typ == _AREG and name.endswith(b"/"):
        typ = _DIR
    elif typ in (_AREG, _CONTIG):
        typ = _REG
    display = name.decode("utf-8", "backslashreplace")
    if size < 0 or uid < 0 or gid < 0:
        raise InvalidParameter(f"invalid layer: tar entry {display}: negative size or id")
    if b"\0" in linkname:
        raise InvalidParameter(f"invalid layer: tar entry {display}: NUL byte in link target")
    parts = _clean(name, display)
    return _Member(name, parts, typ, mode & 0o7777, uid, gid, size, mtime_ns, linkname, devmajor, devminor, xattrs)


# ---------------------------------------------------------------------------------------------
# extraction


def _os_error(e: OSError, entry: str) -> EngineError:
    msg = e.strerror or str(e)
    if e.errno in _HOST_ERRNOS:
        return System(f"extracting layer entry {entry}: {msg}")
    return InvalidParameter(f"invalid layer: tar entry {entry}: {msg}")


def _lstat(dirfd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class _Applier:
    def __init__(self, dest: str, whiteouts: Whiteouts, rec: SplitRecorder | None) -> None:
        self.mode = whiteouts
        self.rec = rec
        self.rootfd = safepath.open_root(dest)
        try:
            self.root_st = os.fstat(self.rootfd)
        except OSError:
            os.close(self.rootfd)
            raise
        self.size = 0
        self.removed_any = False
        # (parent dev, parent ino, name) of every entry this layer created or updated, so that
        # an opaque marker (DELETE mode) spares them.
        self.created: set[tuple[int, int, bytes]] = set()
        self.dirs: list[tuple[list[bytes], int]] = []
        # One cached parent directory: consecutive members usually share it. Any removal marks
        # it stale because a removed entry may have been one of its path components.
        self._pc_key: bytes | None = None
        self._pc_fd = -1
        self._pc_st: os.stat_result | None = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.rootfd)

    def _drop_cache(self) -> None:
        if self._pc_fd >= 0:
            os.close(self._pc_fd)
        self._pc_key, self._pc_fd, self._pc_st = None, -1, None

    # -- parents

    def _parent(self, dparts: list[bytes], *, create: bool = True) -> tuple[int, os.stat_result] | None:
        """O_PATH fd (owned by the cache) of the directory `dparts`, resolved in root."""
        if not dparts:
            return self.rootfd, self.root_st
        key = b"/".join(dparts)
        if key == self._pc_key and self._pc_st is not None:
            return self._pc_fd, self._pc_st
        try:
            fd = safepath.open_in_root(self.rootfd, key, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            if not create:
                return None
            fd = self._mkdirall(dparts)
        except NotADirectoryError:
            if not create:
                return None
            raise InvalidParameter(
                f"invalid layer: {key.decode('utf-8', 'backslashreplace')} is not a directory"
            ) from None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._drop_cache()
        self._pc_key, self._pc_fd, self._pc_st = key, fd, st
        return fd, st

    def _parent_fd(self, dparts: list[bytes]) -> tuple[int, os.stat_result]:
        got = self._parent(dparts)
        assert got is not None
        return got

    def _mkdirall(self, dparts: list[bytes]) -> int:
        cur, cur_st, owned = self.rootfd, self.root_st, False
        try:
            for i, comp in enumerate(dparts):
                prefix = b"/".join(dparts[: i + 1])
                try:
                    nfd = safepath.open_in_root(self.rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        os.mkdir(comp, 0o755, dir_fd=cur)
                    except FileExistsError:
                        raise InvalidParameter(
                            "invalid layer: cannot create directory "
                            f"{prefix.decode('utf-8', 'backslashreplace')}: a dangling symlink is in the way"
                        ) from None
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                    os.fchmod(nfd, 0o755)  # mkdir honoured the umask
                    self._mark(cur_st, comp)
                if owned:
                    os.close(cur)
                cur, owned = nfd, True
                cur_st = os.fstat(cur)
            return cur
        except BaseException:
            if owned:
                os.close(cur)
            raise

    def _mark(self, parent_st: os.stat_result, name: bytes) -> None:
        if self.mode is Whiteouts.DELETE:
            self.created.add((parent_st.st_dev, parent_st.st_ino, name))

    # -- removal

    def _remove(self, dirfd: int, name: bytes, st: os.stat_result) -> None:
        self.removed_any = True
        self._pc_st = None  # stale: force the next lookup to resolve again
        self._pc_key = None
        if stat.S_ISDIR(st.st_mode):
            self._rmtree(dirfd, name)
        else:
            self._save(dirfd, name, st)
            os.unlink(name, dir_fd=dirfd)

    def _save(self, dirfd: int, name: bytes, st: os.stat_result) -> None:
        """Before a file of this layer loses its last name, copy its content into the tar-split."""
        if self.rec is None or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return
        key = (st.st_dev, st.st_ino)
        if not self.rec.wants(key):
            return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            self.rec.save(key, fd)
        finally:
            os.close(fd)

    def _rmtree(self, dirfd: int, name: bytes) -> None:
        # Iterative and fd-relative: never follows a symlink, no recursion limit.
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        stack: list[tuple[int, bytes, list[str]]] = []
        try:
            fd = os.open(name, flags, dir_fd=dirfd)
            stack.append((fd, name, []))
            stack[-1] = (fd, name, os.listdir(fd))
            while stack:
                fd, dname, names = stack[-1]
                if names:
                    child = os.fsencode(names.pop())
                    cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(cst.st_mode):
                        cfd = os.open(child, flags, dir_fd=fd)
                        stack.append((cfd, child, []))
                        stack[-1] = (cfd, child, os.listdir(cfd))
                    else:
                        self._save(fd, child, cst)
                        os.unlink(child, dir_fd=fd)
                    continue
                stack.pop()
                os.close(fd)
                os.rmdir(dname, dir_fd=stack[-1][0] if stack else dirfd)
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def _clear_existing(self, dirfd: int, name: bytes, *, keep_dir: bool = False) -> os.stat_result | None:
        st = _lstat(dirfd, name)
        if st is None:
            return None
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return st
        self._remove(dirfd, name, st)
        return None

    # -- metadata

    def _xattrs_fd(self, fd: int, m: _Member) -> None:
        for k, v in m.xattrs.items():
            if k.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(fd, k, v)
            except OSError as e:
                # Docker ignores these too: the filesystem or namespace does not take this name.
                if e.errno not in _NOTSUP and e.errno != errno.EPERM:
                    raise
            except ValueError:
                raise InvalidParameter(f"invalid layer: entry {m.display}: bad xattr name {k!r}") from None

    def _xattrs_path(self, dirfd: int, name: bytes, m: _Member) -> None:
        path = safepath.fd_path(dirfd, name)
        for k, v in m.xattrs.items():
            if k.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(path, k, v, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _NOTSUP and e.errno != errno.EPERM:
                    raise
            except ValueError:
                raise InvalidParameter(f"invalid layer: entry {m.display}: bad xattr name {k!r}") from None

    def _meta_fd(self, fd: int, m: _Member) -> None:
        # chown clears setuid/setgid and security.capability, hence this order.
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode)
        self._xattrs_fd(fd, m)

    # -- members

    def apply(self, m: _Member, src: _Source) -> None:
        if not m.parts:
            if m.type != _DIR:
                raise InvalidParameter(f"invalid layer: tar entry {m.display!r} would replace the layer root")
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.rootfd)
            try:
                self._meta_fd(fd, m)
            finally:
                os.close(fd)
            self.dirs.append(([], m.mtime_ns))
            return
        base = m.parts[-1]
        if m.parts[0].startswith(WH_META) and m.parts != [WH_OPAQUE]:
            return  # aufs bookkeeping (.wh..wh.plnk/, .wh..wh.aufs): not content
        if base.startswith(WH_PREFIX):
            self._whiteout(m)
            return
        if m.type == _REG:
            self._file(m, src)
        elif m.type == _DIR:
            self._dir(m)
        elif m.type == _SYM:
            self._symlink(m)
        elif m.type == _LNK:
            self._hardlink(m)
        elif m.type in (_CHR, _BLK, _FIFO):
            self._node(m)
        elif m.type == b"S":
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: sparse files are not supported")
        else:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: unsupported type {m.type!r}")

    def _file(self, m: _Member, src: _Source) -> None:
        pfd, pst = self._parent_fd(m.parts[:-1])
        name = m.parts[-1]
        self._clear_existing(pfd, name)
        # O_EXCL|O_NOFOLLOW after the unlink: we never write through an existing inode, which
        # could be a hard link to a file that lives outside the layer.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            crc = src.copy_to(fd, m.size, m.display)
            self._meta_fd(fd, m)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
            if self.rec is not None and m.size:
                st = os.fstat(fd)
                self.rec.file(b"/".join(m.parts), m.size, crc, (st.st_dev, st.st_ino))
        finally:
            os.close(fd)
        self.size += m.size
        self._mark(pst, name)

    def _dir(self, m: _Member) -> None:
        pfd, pst = self._parent_fd(m.parts[:-1])
        name = m.parts[-1]
        if self._clear_existing(pfd, name, keep_dir=True) is None:
            os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._meta_fd(fd, m)
        finally:
            os.close(fd)
        self.dirs.append((m.parts, m.mtime_ns))
        self._mark(pst, name)

    def _symlink(self, m: _Member) -> None:
        if not m.linkname:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: empty symlink target")
        pfd, pst = self._parent_fd(m.parts[:-1])
        name = m.parts[-1]
        self._clear_existing(pfd, name)
        os.symlink(m.linkname, name, dir_fd=pfd)
        os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        self._xattrs_path(pfd, name, m)
        os.utime(name, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        self._mark(pst, name)

    def _hardlink(self, m: _Member) -> None:
        tparts = _clean(m.linkname, m.display, "link target")
        target = m.linkname.decode("utf-8", "backslashreplace")
        if not tparts:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: hard link to the layer root")
        where = "in this layer" if self.mode is Whiteouts.OVERLAY else "in the layer"
        missing = InvalidParameter(
            f"invalid layer: tar entry {m.display}: hard link target {target!r} does not exist {where}"
            + (" (links into lower layers are not supported)" if self.mode is Whiteouts.OVERLAY else "")
        )
        # Not through the parent cache: the link needs two directories at once.
        try:
            tfd = safepath.open_in_root(self.rootfd, b"/".join(tparts[:-1]), os.O_PATH | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        try:
            tst = _lstat(tfd, tparts[-1])
            if tst is None:
                raise missing
            if stat.S_ISDIR(tst.st_mode):
                raise InvalidParameter(f"invalid layer: tar entry {m.display}: hard link to a directory")
            pfd, pst = self._parent_fd(m.parts[:-1])
            name = m.parts[-1]
            st = _lstat(pfd, name)
            if st is not None and (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
                self._mark(pst, name)
                return
            if st is not None:
                self._remove(pfd, name, st)
            try:
                os.link(tparts[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise missing from None
        finally:
            os.close(tfd)
        # The inode's metadata is the target's: touching it here could change a file that an
        # earlier layer (or, with a hostile lower, the host) shares.
        self._mark(pst, name)

    def _node(self, m: _Member) -> None:
        pfd, pst = self._parent_fd(m.parts[:-1])
        name = m.parts[-1]
        self._clear_existing(pfd, name)
        kind = {_CHR: stat.S_IFCHR, _BLK: stat.S_IFBLK, _FIFO: stat.S_IFIFO}[m.type]
        dev = os.makedev(m.devmajor, m.devminor) if m.type != _FIFO else 0
        os.mknod(name, kind | 0o600, dev, dir_fd=pfd)
        os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        self._chmod_node(pfd, name, m.mode)
        self._xattrs_path(pfd, name, m)
        os.utime(name, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        self._mark(pst, name)

    @staticmethod
    def _chmod_node(dirfd: int, name: bytes, mode: int) -> None:
        # Opening a device or fifo for fchmod could block or have side effects; an O_PATH fd
        # pins the inode and chmod through its /proc magic link changes exactly that inode.
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise System("node replaced by a symlink during extraction")
            os.chmod(safepath.fd_path(fd, b""), mode)
        finally:
            os.close(fd)

    def _whiteout(self, m: _Member) -> None:
        base = m.parts[-1]
        if base == WH_OPAQUE:
            self._opaque(m)
            return
        if base.startswith(WH_META):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
        target = base[len(WH_PREFIX) :]
        if target in (b"", b".", b".."):
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: whiteout of {target!r}")
        pfd, _ = self._parent_fd(m.parts[:-1])
        st = _lstat(pfd, target)
        if st is not None:
            self._remove(pfd, target, st)
        if self.mode is Whiteouts.OVERLAY:
            os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)
            os.chown(target, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, m: _Member) -> None:
        dfd, _ = self._parent_fd(m.parts[:-1])
        if self.mode is Whiteouts.OVERLAY:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            except OSError as e:
                raise System(f"marking {m.display} opaque: {e.strerror} (needs trusted.* xattrs)") from None
            finally:
                os.close(fd)
            return
        # DELETE: drop what the lower layers put in the directory, recursively keeping the
        # entries this layer wrote (Docker walks the same way with its unpackedPaths).
        stack = [b""]
        while stack:
            rel = stack.pop()
            fd = safepath.open_beneath(dfd, rel, os.O_RDONLY | os.O_DIRECTORY)
            try:
                dst = os.fstat(fd)
                for sname in os.listdir(fd):
                    name = os.fsencode(sname)
                    st = _lstat(fd, name)
                    if st is None:
                        continue
                    if (dst.st_dev, dst.st_ino, name) in self.created:
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(rel + b"/" + name if rel else name)
                    else:
                        self._remove(fd, name, st)
            finally:
                os.close(fd)

    def set_dir_times(self) -> None:
        # Last, deepest first: creating children changes a directory's mtime.
        for parts, ns in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            if not parts:
                os.utime(".", ns=(ns, ns), dir_fd=self.rootfd, follow_symlinks=False)
                continue
            got = self._parent(parts[:-1], create=False)
            if got is None:
                continue
            st = _lstat(got[0], parts[-1])
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.utime(parts[-1], ns=(ns, ns), dir_fd=got[0], follow_symlinks=False)


def _skipped(m: _Member) -> bool:
    """Regular-file members whose data is not extracted (whiteouts, aufs metadata)."""
    return bool(m.parts) and (m.parts[-1].startswith(WH_PREFIX) or m.parts[0].startswith(WH_META))


def _run(ap: _Applier, src: _Source) -> None:
    pax: dict[bytes, bytes] = {}
    longname: bytes | None = None
    longlink: bytes | None = None
    while True:
        blk = src.read(BLOCK, "header", eof_ok=True)
        if blk is None:
            return
        if blk == ZERO_BLOCK:
            nxt = src.read(BLOCK, "end-of-archive marker", eof_ok=True)
            if nxt is None or nxt == ZERO_BLOCK:
                return
            raise InvalidParameter("invalid layer: data after a zero block in the tar stream")
        if not _checksum_ok(blk):
            raise InvalidParameter("invalid layer: tar header checksum mismatch (not a tar stream?)")
        typ = blk[156:157]
        if typ in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
            size = _num(blk[124:136], "size")
            if size > MAX_SPECIAL or size < 0:
                raise InvalidParameter(f"invalid layer: tar extended header of {size} bytes")
            data = cast(bytes, src.read(size, "extended header"))
            src.read(-size % BLOCK, "padding")
            if typ == _PAX:
                pax.update(_parse_pax(data))
            elif typ == _PAX_GLOBAL:
                _parse_pax(data)  # validated, then ignored like Docker does
            elif typ == _GNU_LONGNAME:
                longname = _cstr(data)
            else:
                longlink = _cstr(data)
            continue
        m = _member(blk, pax, longname, longlink)
        pax, longname, longlink = {}, None, None
        # Types that carry no data even when the size field says otherwise (Go and Python agree).
        data_size = m.size if m.type not in (_LNK, _SYM, _CHR, _BLK, _DIR, _FIFO) else 0
        try:
            ap.apply(m, src)
        except OSError as e:
            raise _os_error(e, m.display) from None
        except ValueError as e:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: {e}") from None
        if m.type != _REG or _skipped(m):
            src.skip(data_size, m.display)
        src.skip(-data_size % BLOCK, "padding")


def apply_layer(src: BinaryIO, dest: str, *, whiteouts: Whiteouts, tar_split: BinaryIO | None = None) -> ApplyResult:
    """Extract the uncompressed layer tar `src` into `dest` (see module doc for the safety
    rules). With `tar_split`, also write what `assemble_layer` needs to rebuild the exact tar."""
    rec = SplitRecorder() if tar_split is not None else None
    try:
        try:
            ap = _Applier(dest, whiteouts, rec)
        except OSError as e:
            raise System(f"opening layer directory {dest}: {e.strerror}") from None
        try:
            source = _Source(src, rec)
            _run(ap, source)
            source.drain()
            try:
                ap.set_dir_times()
            except OSError as e:
                raise _os_error(e, "(directory times)") from None
            if rec is not None and tar_split is not None:
                try:
                    rec.finish(ap.rootfd, tar_split, verify=ap.removed_any)
                except OSError as e:
                    raise System(f"writing tar-split: {e}") from None
            return ApplyResult("sha256:" + source.hexdigest(), ap.size)
        finally:
            ap.close()
    finally:
        if rec is not None:
            rec.close()


def assemble_layer(tar_split: BinaryIO, layer_dir: str, out: BinaryIO) -> None:
    """Write the original layer tar, byte for byte, from its tar-split and extracted files."""
    assemble(tar_split, layer_dir, out)


# ---------------------------------------------------------------------------------------------
# reading trees: diff, export


@dataclass
class _Info:
    st: os.stat_result
    link: bytes
    xattrs: dict[str, bytes]


def _read_xattrs(dirfd: int, name: bytes) -> dict[str, bytes]:
    path = safepath.fd_path(dirfd, name)
    # Without a name the path is the fd's magic link, which must be followed to reach the dir.
    follow = not name
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as e:
        if e.errno in _NOTSUP or e.errno == errno.ENOENT:
            return {}
        raise
    out: dict[str, bytes] = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=follow)
        except OSError:
            continue
    return out


def _public_xattrs(info: _Info) -> dict[str, bytes]:
    # overlay's own bookkeeping and the host's SELinux labels are not image content.
    return {k: v for k, v in info.xattrs.items() if not k.startswith("trusted.overlay.") and k != "security.selinux"}


class _Tree:
    """Read-only view of a directory tree that only descends through real directories.
    A layer tree (`same_mount`) is one filesystem: whatever is mounted inside it (a runtime's
    bind mounts on a live rootfs) is not layer content, so the walk does not enter it."""

    def __init__(self, fd: int, *, same_mount: bool = False) -> None:
        self.fd = fd
        self.same_mount = same_mount

    @classmethod
    def open(cls, path: str) -> _Tree:
        try:
            return cls(safepath.open_root(path), same_mount=True)
        except FileNotFoundError:
            raise NotFound(f"no such directory: {path}") from None

    def close(self) -> None:
        os.close(self.fd)

    def list(self, rel: bytes) -> dict[bytes, _Info]:
        try:
            fd = safepath.open_beneath(self.fd, rel, os.O_RDONLY | os.O_DIRECTORY, same_mount=self.same_mount)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return {}  # a mount point
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return {}  # changed while we walk (a live container)
            raise System(f"reading {rel.decode('utf-8', 'replace')}: {e.strerror}") from None
        try:
            out: dict[bytes, _Info] = {}
            with os.scandir(fd) as it:
                for ent in it:
                    name = os.fsencode(ent.name)
                    try:
                        st = ent.stat(follow_symlinks=False)
                        link = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else b""
                    except FileNotFoundError:
                        continue
                    out[name] = _Info(st, link, _read_xattrs(fd, name))
            return out
        finally:
            os.close(fd)

    def opener(self, rel: bytes) -> Callable[[], int]:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        return lambda: safepath.open_beneath(self.fd, rel, flags, same_mount=self.same_mount)


def _same_time(a: int, b: int) -> bool:
    # Tar keeps whole seconds: a file extracted from a layer compares equal to its source.
    if a == b:
        return True
    return a // 1_000_000_000 == b // 1_000_000_000 and (a % 1_000_000_000 == 0 or b % 1_000_000_000 == 0)


def _differs(n: _Info, o: _Info) -> bool:
    a, b = n.st, o.st
    if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) != (b.st_mode, b.st_uid, b.st_gid, b.st_rdev):
        return True
    if not _same_time(a.st_mtime_ns, b.st_mtime_ns):
        return True
    if not stat.S_ISDIR(a.st_mode) and a.st_size != b.st_size:
        return True
    return n.link != o.link or _public_xattrs(n) != _public_xattrs(o)


@dataclass
class _Frame:
    rel: bytes
    info: _Info | None
    emitted: bool
    names: list[bytes]
    new: dict[bytes, _Info]
    old: dict[bytes, _Info]


def _join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def _walk_changes(new: _Tree, old: _Tree | None) -> Iterator[tuple[bytes, int, _Info]]:
    """Changes from `old` to `new` in sorted pre-order. A directory that did not change itself
    but contains changes is reported as modified, right before its first changed child."""
    nroot = new.list(b"")
    oroot = old.list(b"") if old is not None else {}
    stack = [_Frame(b"", None, True, sorted(nroot.keys() | oroot.keys(), reverse=True), nroot, oroot)]

    def pending() -> Iterator[tuple[bytes, int, _Info]]:
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
        rel = _join(fr.rel, name)
        n = fr.new.get(name)
        o = fr.old.get(name)
        if n is None:
            assert o is not None
            yield from pending()
            yield rel, DELETED, o
            continue
        changed = o is None or _differs(n, o)
        if changed:
            yield from pending()
            yield rel, ADDED if o is None else MODIFIED, n
        if stat.S_ISDIR(n.st.st_mode):
            nc = new.list(rel)
            both_dirs = old is not None and o is not None and stat.S_ISDIR(o.st.st_mode)
            oc = old.list(rel) if old is not None and both_dirs else {}
            stack.append(_Frame(rel, n, changed, sorted(nc.keys() | oc.keys(), reverse=True), nc, oc))


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class _TarOut:
    """Deterministic tar writer: ustar unless a field needs PAX, numeric ids only, whole-second
    mtimes (like Docker), hard links to the first archived name of an inode."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.links: dict[InodeKey, str] = {}

    def _write(self, ti: tarfile.TarInfo) -> None:
        self.out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def whiteout(self, name: bytes) -> None:
        ti = tarfile.TarInfo(_s(name))
        ti.mode, ti.mtime, ti.uname, ti.gname = 0, 0, "", ""
        self._write(ti)

    def add(self, name: bytes, info: _Info, opener: Callable[[], int] | None) -> None:
        st = info.st
        ti = tarfile.TarInfo(_s(name))
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
        ti.mtime = st.st_mtime_ns // 1_000_000_000
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
            ti.type, ti.linkname = tarfile.SYMTYPE, _s(info.link)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
        else:
            return  # sockets are not archived (Docker skips them too)
        if ti.type != tarfile.LNKTYPE:
            ti.pax_headers = {"SCHILY.xattr." + k: _s(v) for k, v in _public_xattrs(info).items()}
        self._write(ti)
        if content:
            assert opener is not None
            self._copy(opener, ti.size, name)

    def _copy(self, opener: Callable[[], int], size: int, name: bytes) -> None:
        try:
            fd = opener()
        except OSError as e:
            raise System(f"archiving {_s(name)}: {e.strerror}") from None
        try:
            left = size
            while left:
                chunk = os.read(fd, min(CHUNK, left))
                if not chunk:
                    raise System(f"archiving {_s(name)}: file shrank while reading it")
                self.out.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        self.out.write(bytes(-size % BLOCK))

    def close(self) -> None:
        self.out.write(bytes(2 * BLOCK))


def _wh_name(rel: bytes) -> bytes:
    head, _, tail = rel.rpartition(b"/")
    return _join(head, WH_PREFIX + tail)


def diff_layer(new: str, old: str | None, out: BinaryIO) -> None:
    """Write the layer tar that turns tree `old` (None: empty) into tree `new`."""
    nt = _Tree.open(new)
    try:
        ot = _Tree.open(old) if old is not None else None
        try:
            w = _TarOut(out)
            for rel, kind, info in _walk_changes(nt, ot):
                if kind == DELETED:
                    w.whiteout(_wh_name(rel))
                else:
                    w.add(rel, info, nt.opener(rel))
            w.close()
        finally:
            if ot is not None:
                ot.close()
    finally:
        nt.close()


def _is_whiteout(info: _Info) -> bool:
    return stat.S_ISCHR(info.st.st_mode) and info.st.st_rdev == 0


def _is_opaque(info: _Info) -> bool:
    return stat.S_ISDIR(info.st.st_mode) and info.xattrs.get(OPAQUE_XATTR) == b"y"


def overlay_upper_to_tar(upper: str, out: BinaryIO) -> None:
    """Write the layer tar of an overlayfs upper dir (whiteout devices, opaque xattrs)."""
    tree = _Tree.open(upper)
    try:
        w = _TarOut(out)
        for rel, _, info in _walk_changes(tree, None):
            if _is_whiteout(info):
                w.whiteout(_wh_name(rel))
                continue
            w.add(rel, info, tree.opener(rel))
            if _is_opaque(info):
                w.whiteout(_join(rel, WH_OPAQUE))
        w.close()
    finally:
        tree.close()


def _path(rel: bytes) -> str:
    return "/" + _s(rel)


def changes(new: str, old: str | None) -> list[tuple[str, int]]:
    """`docker diff` between two trees: ("/path", 0 modified | 1 added | 2 deleted), by path."""
    nt = _Tree.open(new)
    try:
        ot = _Tree.open(old) if old is not None else None
        try:
            return sorted((_path(rel), kind) for rel, kind, _ in _walk_changes(nt, ot))
        finally:
            if ot is not None:
                ot.close()
    finally:
        nt.close()


def _lower_stat(fds: list[int], rel: bytes) -> os.stat_result | None:
    for fd in fds:
        try:
            f = safepath.open_in_root(fd, rel, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            return os.fstat(f)
        finally:
            os.close(f)
    return None


def overlay_changes(upper: str, lowers: list[str]) -> list[tuple[str, int]]:
    """`docker diff` of an overlay container: `upper` against `lowers` (topmost first).
    Mirrors Docker's overlay rules, including reporting an opaque directory that hides a lower
    one as deleted."""
    tree = _Tree.open(upper)
    fds: list[int] = []
    try:
        for lower in lowers:
            fds.append(safepath.open_root(lower))
        result: dict[str, int] = {}
        changed_dirs: set[bytes] = set()
        for rel, _, info in _walk_changes(tree, None):
            st = info.st
            lst = _lower_stat(fds, rel)
            if _is_whiteout(info) or (_is_opaque(info) and lst is not None):
                kind = DELETED
            elif lst is None:
                kind = ADDED
            else:
                if (
                    stat.S_ISDIR(st.st_mode)
                    and stat.S_ISDIR(lst.st_mode)
                    and (st.st_mode, st.st_uid, st.st_gid) == (lst.st_mode, lst.st_uid, lst.st_gid)
                    and _same_time(st.st_mtime_ns, lst.st_mtime_ns)
                ):
                    continue  # copied up for a child's sake; the child reports it
                kind = MODIFIED
            if stat.S_ISDIR(st.st_mode):
                changed_dirs.add(rel)
            result.setdefault(_path(rel), kind)
            parent = rel.rpartition(b"/")[0]
            if kind != MODIFIED and parent and parent not in changed_dirs:
                changed_dirs.add(parent)
                result.setdefault(_path(parent), MODIFIED)
        return sorted(result.items())
    finally:
        for fd in fds:
            os.close(fd)
        tree.close()


def _clean_clamped(path: str) -> list[bytes]:
    # Like filepath.Clean("/" + path): `..` at the top stays at the top.
    parts: list[bytes] = []
    for comp in os.fsencode(path).split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if parts:
                parts.pop()
        else:
            parts.append(comp)
    return parts


def tar_path(root: str, path: str, out: BinaryIO, *, name: str | None = None) -> None:
    """Tar of `path` (file or tree) inside `root`, resolved as a process chrooted at `root`
    would; the final component is not followed, nor any symlink below it."""
    parts = _clean_clamped(path)
    rootfd = safepath.open_root(root)
    try:
        w = _TarOut(out)
        top = os.fsencode(name).strip(b"/") if name else b""
        if not parts:
            tree = _Tree(os.dup(rootfd))
            if top:
                w.add(top, _Info(os.fstat(rootfd), b"", _read_xattrs(rootfd, b"")), None)
        else:
            try:
                pfd = safepath.open_in_root(rootfd, b"/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"no such file or directory: {path}") from None
            try:
                base = parts[-1]
                st = _lstat(pfd, base)
                if st is None:
                    raise NotFound(f"no such file or directory: {path}")
                link = os.readlink(base, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else b""
                top = top or base
                opener = lambda: os.open(  # noqa: E731
                    base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=pfd
                )
                w.add(top, _Info(st, link, _read_xattrs(pfd, base)), opener)
                if not stat.S_ISDIR(st.st_mode):
                    w.close()
                    return
                tree = _Tree(os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd))
            finally:
                os.close(pfd)
        try:
            for rel, _, info in _walk_changes(tree, None):
                w.add(_join(top, rel), info, tree.opener(rel))
        finally:
            tree.close()
        w.close()
    finally:
        os.close(rootfd)


__all__ = [
    "ADDED",
    "DELETED",
    "MODIFIED",
    "ApplyResult",
    "Whiteouts",
    "apply_layer",
    "assemble_layer",
    "changes",
    "decompressed",
    "diff_layer",
    "overlay_changes",
    "overlay_upper_to_tar",
    "tar_path",
]
