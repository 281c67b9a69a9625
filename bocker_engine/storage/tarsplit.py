"""Tar-split: enough metadata to rebuild a layer tar byte for byte from its extracted files.

A registry addresses a layer by the digest of its exact bytes, and `docker save`/`push` must
reproduce them, yet we only keep the extracted tree. Like github.com/vbatts/tar-split we record
everything of the stream except the contents of regular files that landed on disk intact.

Format: a gzip stream of UTF-8 JSON lines (one object per line)::

    {"tar-split": "bocker", "v": 1}          first line
    {"r": "<base64>"}                        bytes copied verbatim (headers, PAX/GNU records,
                                             padding, end blocks, trailing bytes, and contents
                                             that could not be trusted on disk)
    {"f": "<path>", "s": <size>, "c": <crc>} <size> bytes read from <path> in the layer dir;
                                             <crc> is zlib.crc32 of them
    {"end": <total>}                         last line: length of the whole tar

`<path>` is the normalized member name (bytes decoded as UTF-8 with surrogateescape, so any
filename survives JSON) and is resolved like the extraction did: inside the layer dir with
RESOLVE_IN_ROOT, final component not followed. Contents go inline when the file that received
them was later removed or replaced within the same layer (duplicate names, whiteouts, a
replaced parent), which `SplitRecorder` detects by inode.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import stat
import tempfile
import zlib
from typing import BinaryIO

from bocker_engine.errors import System
from bocker_engine.storage import safepath

CHUNK = 1 << 20
_MAGIC = {"tar-split": "bocker", "v": 1}

InodeKey = tuple[int, int]


def _raw_line(data: bytes | bytearray | memoryview) -> bytes:
    return b'{"r":"' + base64.b64encode(data) + b'"}\n'


class SplitRecorder:
    """Collects the tar-split of one extraction; `finish` writes it once the tree is final.

    Records are spooled to a temporary file because whether a file's content can be referenced
    by path is only known at the end of the layer. The spool and the saved contents can be as
    large as the layer, whose author chooses: they go in `spool_dir`, under the data root, never
    in /tmp (often a tmpfs, so memory).
    """

    def __init__(self, spool_dir: str) -> None:
        self._spool_dir = spool_dir
        # Both temporary files live as long as the recorder; close() releases them.
        self._spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        self._raw = bytearray()
        self._files: list[tuple[bytes, int, int, InodeKey]] = []
        self._by_inode: dict[InodeKey, int] = {}
        self._blobs: BinaryIO | None = None
        self._saved: dict[int, tuple[int, int]] = {}
        self.total = 0

    def close(self) -> None:
        self._spool.close()
        if self._blobs is not None:
            self._blobs.close()

    def raw(self, data: bytes | memoryview) -> None:
        self._raw += data
        self.total += len(data)
        if len(self._raw) >= CHUNK:
            self._flush_raw()

    def _flush_raw(self) -> None:
        if self._raw:
            self._spool.write(_raw_line(self._raw))
            self._raw.clear()

    def file(self, path: bytes, size: int, crc: int, key: InodeKey) -> None:
        """`size` content bytes of the stream were written to the new inode `key` at `path`."""
        self._flush_raw()
        idx = len(self._files)
        self._files.append((path, size, crc, key))
        self._by_inode[key] = idx
        self.total += size
        self._spool.write(b"F %d\n" % idx)

    def wants(self, key: InodeKey) -> bool:
        idx = self._by_inode.get(key)
        return idx is not None and idx not in self._saved

    def save(self, key: InodeKey, fd: int) -> None:
        """Keep the content of a file of this layer that is about to lose its last name."""
        idx = self._by_inode[key]
        size = self._files[idx][1]
        if self._blobs is None:
            self._blobs = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115
        blobs = self._blobs
        blobs.seek(0, os.SEEK_END)
        start = blobs.tell()
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise System(f"tar-split: {os.fsdecode(self._files[idx][0])} shrank while saving it")
            blobs.write(chunk)
            left -= len(chunk)
        self._saved[idx] = (start, size)

    def finish(self, rootfd: int, out: BinaryIO, *, verify: bool) -> None:
        """Write the final tar-split to `out`. `verify`: the tree saw removals, so check that each
        referenced path still names the inode its content was written to."""
        self._flush_raw()
        if verify:
            self._relocate(rootfd)
        self._spool.seek(0)
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(json.dumps(_MAGIC, separators=(",", ":")).encode() + b"\n")
            for line in self._spool:
                if not line.startswith(b"F "):
                    gz.write(line)
                    continue
                idx = int(line[2:])
                path, size, crc, _ = self._files[idx]
                if idx in self._saved:
                    self._inline(gz, *self._saved[idx])
                    continue
                rec = {"f": path.decode("utf-8", "surrogateescape"), "s": size, "c": crc}
                gz.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
            gz.write(b'{"end":%d}\n' % self.total)

    def _inline(self, gz: gzip.GzipFile, start: int, size: int) -> None:
        assert self._blobs is not None
        self._blobs.seek(start)
        while size:
            chunk = self._blobs.read(min(CHUNK, size))
            gz.write(_raw_line(chunk))
            size -= len(chunk)

    def _relocate(self, rootfd: int) -> None:
        lost: dict[InodeKey, int] = {}
        for idx, (path, _, _, key) in enumerate(self._files):
            if idx in self._saved:
                continue
            try:
                fd = safepath.open_in_root(rootfd, path, os.O_PATH | os.O_NOFOLLOW)
            except OSError:
                lost[key] = idx
                continue
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if (st.st_dev, st.st_ino) != key or not stat.S_ISREG(st.st_mode):
                lost[key] = idx
        if not lost:
            return
        # The inode still has a name (we save content whenever a last name goes), but its
        # recorded path now leads elsewhere: an ancestor symlink was replaced, or only another
        # hard link is left. Find that name.
        for dirpath, _dirs, files, dfd in os.fwalk(b".", dir_fd=rootfd):
            for name in files:
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue
                idx_found = lost.pop((st.st_dev, st.st_ino), None)
                if idx_found is not None and stat.S_ISREG(st.st_mode):
                    rel = os.path.join(dirpath, name)[2:]
                    path, size, crc, key = self._files[idx_found]
                    self._files[idx_found] = (rel, size, crc, key)
            if not lost:
                return
        first = self._files[next(iter(lost.values()))][0]
        raise System(f"tar-split: lost the content of {os.fsdecode(first)}")


def assemble(tar_split: BinaryIO, layer_dir: str, out: BinaryIO) -> None:
    """Write the original tar to `out` from a tar-split and the layer's files (see module doc)."""
    rootfd = safepath.open_root(layer_dir)
    written = 0
    try:
        with gzip.GzipFile(fileobj=tar_split, mode="rb") as gz:
            try:
                first = json.loads(gz.readline())
            except (ValueError, OSError, EOFError) as e:
                raise System(f"tar-split: unreadable: {e}") from None
            if first != _MAGIC:
                raise System("tar-split: unknown format")
            try:
                for line in gz:
                    rec = json.loads(line)
                    if "r" in rec:
                        data = base64.b64decode(rec["r"], validate=True)
                        out.write(data)
                        written += len(data)
                    elif "f" in rec:
                        _copy_file(rootfd, os.fsencode(rec["f"]), int(rec["s"]), int(rec["c"]), out)
                        written += int(rec["s"])
                    elif "end" in rec:
                        if int(rec["end"]) != written:
                            raise System(f"tar-split: wrote {written} bytes, expected {rec['end']}")
                        return
                    else:
                        raise System("tar-split: unknown record")
            except (ValueError, KeyError, TypeError, EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise System(f"tar-split: corrupt: {e}") from None
        raise System("tar-split: truncated (no end record)")
    finally:
        os.close(rootfd)


def _copy_file(rootfd: int, path: bytes, size: int, crc: int, out: BinaryIO) -> None:
    name = path.decode("utf-8", "surrogateescape")
    try:
        fd = safepath.open_in_root(rootfd, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise System(f"layer content {name}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise System(f"layer content {name}: expected a {size}-byte file, found {st.st_size} bytes")
        got = 0
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise System(f"layer content {name}: file shrank while reading")
            got = zlib.crc32(chunk, got)
            out.write(chunk)
            left -= len(chunk)
        if got != crc:
            raise System(f"layer content {name}: checksum mismatch, the layer was modified")
    except OSError as e:
        raise System(f"layer content {name}: {e.strerror or e}") from None
    finally:
        os.close(fd)
