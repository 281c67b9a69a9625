"""Reading tar streams: the byte source (DiffID hashing, tar-split recording), header fields,
member names, PAX records and GNU long names.

The parser is our own (ustar, GNU long names, PAX) because tar-split needs the exact bytes of
every header, and reading them straight from the stream avoids double buffering. `docker load`
reads its outer archive with it too (engine/archive.py), so both keep the same hard limits on
untrusted input, like Go's archive/tar that dockerd uses:

- an extended header (PAX record set, GNU long name or long link) is at most 1 MiB, refused
  from its size field before any of it is read;
- at most MAX_EXTENDED_RUN extended headers precede one member (they are merged);
- PAX records are parsed in one pass, in time linear in their size.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from bocker_engine.errors import EngineError, InvalidParameter, System
from bocker_engine.storage.layers.common import (
    BLOCK,
    CHUNK,
    MAX_EXTENDED_RUN,
    MAX_PAX_DIGITS,
    MAX_SPECIAL,
    T_AREG,
    T_BLK,
    T_CHR,
    T_CONTIG,
    T_DIR,
    T_FIFO,
    T_GNU_LONGLINK,
    T_GNU_LONGNAME,
    T_LNK,
    T_PAX,
    T_PAX_GLOBAL,
    T_REG,
    T_SYM,
    ZERO_BLOCK,
)
from bocker_engine.storage.tarsplit import SplitRecorder


class Source:
    """Reads the layer stream once: hashes every byte (DiffID) and hands header bytes, padding
    and other non-content bytes to the tar-split recorder. `kind` names the stream in errors
    ("invalid layer: ...", "invalid archive: ...")."""

    def __init__(self, src: BinaryIO, rec: SplitRecorder | None, *, kind: str = "layer", digest: bool = True) -> None:
        self._src = src
        self._rec = rec
        self.kind = kind
        self._sha = hashlib.sha256() if digest else None
        self._buf = b""
        self._pos = 0

    def hexdigest(self) -> str:
        assert self._sha is not None
        return self._sha.hexdigest()

    def _more(self) -> bool:
        try:
            data = self._src.read(CHUNK)
        except EngineError:
            raise
        except OSError as e:
            raise System(f"reading {self.kind} stream: {e}") from None
        if not data:
            return False
        if self._sha is not None:
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
                raise InvalidParameter(f"invalid {self.kind}: unexpected end of tar stream in {what}")
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
                raise InvalidParameter(f"invalid {self.kind}: unexpected end of tar stream in {what}")
            if self._rec is not None:
                self._rec.raw(mv)
            n -= len(mv)

    def copy_to(self, fd: int, n: int, what: str) -> int:
        """Write n content bytes to fd; returns their crc32 (0 when not recording)."""
        crc = 0
        while n:
            mv = self._take(min(n, CHUNK))
            if not mv:
                raise InvalidParameter(f"invalid {self.kind}: unexpected end of tar stream in {what}")
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
class Member:
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


def cstr(b: bytes) -> bytes:
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def num(b: bytes, what: str) -> int:
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


def checksum_ok(blk: bytes) -> bool:
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


def clean_name(name: bytes, entry: str, what: str = "name") -> list[bytes]:
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


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """PAX records `<length> <key>=<value>\\n`, in one pass: every record is checked against its
    own length, so the work is linear in the size of the header whatever it holds."""
    out: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:
            if data.count(0, pos) == end - pos:
                break  # NUL padding after the last record
            raise InvalidParameter("invalid layer: malformed PAX header record")
        # The length is decimal digits only, and no more of them than an int64 has (like Go).
        sp = data.find(b" ", pos, min(end, pos + MAX_PAX_DIGITS + 1))
        digits = data[pos:sp] if sp > pos else b""
        length = int(digits) if digits.isdigit() else 0
        if length <= sp - pos + 1 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise InvalidParameter("invalid layer: malformed PAX header record")
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq or not key:
            raise InvalidParameter("invalid layer: malformed PAX header record")
        out[key] = value
        pos += length
    return out


def pax_time(v: bytes) -> int:
    s = v.decode("ascii", "replace")
    neg = s.startswith("-")
    ip, _, fp = s.lstrip("-").partition(".")
    if not (ip.isdigit() or (ip == "" and fp)) or (fp and not fp.isdigit()):
        raise InvalidParameter(f"invalid layer: bad PAX time {s!r}")
    ns = int(ip or "0") * 1_000_000_000 + int((fp + "000000000")[:9])
    return -ns if neg else ns


def pax_int(v: bytes, key: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidParameter(f"invalid layer: bad PAX {key} {v!r}")
    return n


def member_of(blk: bytes, pax: dict[bytes, bytes], longname: bytes | None, longlink: bytes | None) -> Member:
    typ = blk[156:157]
    name = cstr(blk[0:100])
    if blk[257:263] == b"ustar\0":
        prefix = cstr(blk[345:500])
        if prefix:
            name = prefix + b"/" + name
    if longname is not None:
        name = longname
    linkname = longlink if longlink is not None else cstr(blk[157:257])
    mode = num(blk[100:108], "mode")
    uid = num(blk[108:116], "uid")
    gid = num(blk[116:124], "gid")
    size = num(blk[124:136], "size")
    mtime_ns = num(blk[136:148], "mtime") * 1_000_000_000
    devmajor = num(blk[329:337], "devmajor")
    devminor = num(blk[337:345], "devminor")
    xattrs: dict[str, bytes] = {}
    for k, v in pax.items():
        if k == b"path" and v:
            name = v
        elif k == b"linkpath" and v:
            linkname = v
        elif k == b"size":
            size = pax_int(v, "size")
        elif k == b"uid":
            uid = pax_int(v, "uid")
        elif k == b"gid":
            gid = pax_int(v, "gid")
        elif k == b"mtime":
            mtime_ns = pax_time(v)
        elif k.startswith(b"SCHILY.xattr."):
            xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
        elif k.startswith(b"GNU.sparse."):
            raise InvalidParameter("invalid layer: sparse files in layer tars are not supported")
    if typ == T_AREG and name.endswith(b"/"):
        typ = T_DIR
    elif typ in (T_AREG, T_CONTIG):
        typ = T_REG
    display = name.decode("utf-8", "backslashreplace")
    if size < 0 or uid < 0 or gid < 0:
        raise InvalidParameter(f"invalid layer: tar entry {display}: negative size or id")
    if b"\0" in linkname:
        raise InvalidParameter(f"invalid layer: tar entry {display}: NUL byte in link target")
    return Member(name, [], typ, mode & 0o7777, uid, gid, size, mtime_ns, linkname, devmajor, devminor, xattrs)


def data_size(m: Member) -> int:
    """The bytes of data that follow the member's header (before padding). Types that carry no
    data have none even when the size field says otherwise (Go and Python agree)."""
    return m.size if m.type not in (T_LNK, T_SYM, T_CHR, T_BLK, T_DIR, T_FIFO) else 0


def next_member(src: Source) -> Member | None:
    """The next member of a layer: its header (see `next_entry`) with its name cleaned into
    path components below the layer root."""
    m = next_entry(src)
    if m is not None:
        m.parts = clean_name(m.name, m.display)
    return m


def next_entry(src: Source) -> Member | None:
    """The next member's header, with its PAX records and GNU long names applied; None at the
    end of the archive. The caller consumes the member's data and padding. The name is as the
    archive has it (`parts` is left empty)."""
    run = 0  # extended headers read for this member
    pax: dict[bytes, bytes] = {}
    longname: bytes | None = None
    longlink: bytes | None = None
    while True:
        blk = src.read(BLOCK, "header", eof_ok=True)
        if blk is None:
            return None
        if blk == ZERO_BLOCK:
            nxt = src.read(BLOCK, "end-of-archive marker", eof_ok=True)
            if nxt is None or nxt == ZERO_BLOCK:
                return None
            raise InvalidParameter("invalid layer: data after a zero block in the tar stream")
        if not checksum_ok(blk):
            raise InvalidParameter("invalid layer: tar header checksum mismatch (not a tar stream?)")
        typ = blk[156:157]
        if typ in (T_PAX, T_PAX_GLOBAL, T_GNU_LONGNAME, T_GNU_LONGLINK):
            run += 1
            if run > MAX_EXTENDED_RUN:
                raise InvalidParameter(
                    f"invalid layer: more than {MAX_EXTENDED_RUN} extended tar headers (PAX, GNU long names) in a row"
                )
            size = num(blk[124:136], "size")
            if size > MAX_SPECIAL or size < 0:
                raise InvalidParameter(
                    f"invalid layer: tar extended header of {size} bytes (the limit is {MAX_SPECIAL})"
                )
            data = cast(bytes, src.read(size, "extended header"))
            src.read(-size % BLOCK, "padding")
            if typ == T_PAX:
                pax.update(parse_pax(data))
            elif typ == T_PAX_GLOBAL:
                parse_pax(data)  # validated, then ignored like Docker does
            elif typ == T_GNU_LONGNAME:
                longname = cstr(data)
            else:
                longlink = cstr(data)
            continue
        return member_of(blk, pax, longname, longlink)
