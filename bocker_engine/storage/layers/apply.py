"""Applying a layer tar to a directory.

Layer content is untrusted, so extraction resolves every parent directory with
openat2(RESOLVE_IN_ROOT) against the layer root (a symlink `a -> /etc` followed by `a/passwd`
writes the layer's own etc/passwd, as in Docker's chroot) and creates the final component with
no-follow calls relative to that directory fd. Nothing is ever looked up by an absolute host path
built from tar content.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from bocker_engine.errors import EngineError, InvalidParameter, System, os_error_message
from bocker_engine.storage import safepath
from bocker_engine.storage.layers.common import (
    BLOCK,
    DIR_FLAGS,
    HOST_ERRNOS,
    NOTSUP,
    OPAQUE_XATTR,
    T_BLK,
    T_CHR,
    T_DIR,
    T_FIFO,
    T_LNK,
    T_REG,
    T_SYM,
    WH_META,
    WH_OPAQUE,
    WH_PREFIX,
    ApplyResult,
    Whiteouts,
    lstat_at,
)
from bocker_engine.storage.layers.tarread import Member, Source, clean_name, data_size, next_member
from bocker_engine.storage.tarsplit import SplitRecorder, assemble


def _os_error(e: OSError, entry: str) -> EngineError:
    # Go's wording of the errno ("no space left on device"), as dockerd reports it.
    msg = os_error_message(OSError(e.errno, e.strerror)) if e.errno else str(e)
    if e.errno in HOST_ERRNOS:
        return System(f"extracting layer entry {entry}: {msg}")
    return InvalidParameter(f"invalid layer: tar entry {entry}: {msg}")


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
                    nfd = os.open(comp, DIR_FLAGS, dir_fd=cur)
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
        st = lstat_at(dirfd, name)
        if st is None:
            return None
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return st
        self._remove(dirfd, name, st)
        return None

    # -- metadata

    def _xattrs_fd(self, fd: int, m: Member) -> None:
        for k, v in m.xattrs.items():
            if k.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(fd, k, v)
            except OSError as e:
                # Docker ignores these too: the filesystem or namespace does not take this name.
                if e.errno not in NOTSUP and e.errno != errno.EPERM:
                    raise
            except ValueError:
                raise InvalidParameter(f"invalid layer: entry {m.display}: bad xattr name {k!r}") from None

    def _xattrs_path(self, dirfd: int, name: bytes, m: Member) -> None:
        path = safepath.fd_path(dirfd, name)
        for k, v in m.xattrs.items():
            if k.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(path, k, v, follow_symlinks=False)
            except OSError as e:
                if e.errno not in NOTSUP and e.errno != errno.EPERM:
                    raise
            except ValueError:
                raise InvalidParameter(f"invalid layer: entry {m.display}: bad xattr name {k!r}") from None

    def _meta_fd(self, fd: int, m: Member) -> None:
        # chown clears setuid/setgid and security.capability, hence this order.
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode)
        self._xattrs_fd(fd, m)

    # -- members

    def apply(self, m: Member, src: Source) -> None:
        if not m.parts:
            if m.type != T_DIR:
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
        if m.type == T_REG:
            self._file(m, src)
        elif m.type == T_DIR:
            self._dir(m)
        elif m.type == T_SYM:
            self._symlink(m)
        elif m.type == T_LNK:
            self._hardlink(m)
        elif m.type in (T_CHR, T_BLK, T_FIFO):
            self._node(m)
        elif m.type == b"S":
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: sparse files are not supported")
        else:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: unsupported type {m.type!r}")

    def _file(self, m: Member, src: Source) -> None:
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

    def _dir(self, m: Member) -> None:
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

    def _symlink(self, m: Member) -> None:
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

    def _hardlink(self, m: Member) -> None:
        tparts = clean_name(m.linkname, m.display, "link target")
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
            tst = lstat_at(tfd, tparts[-1])
            if tst is None:
                raise missing
            if stat.S_ISDIR(tst.st_mode):
                raise InvalidParameter(f"invalid layer: tar entry {m.display}: hard link to a directory")
            pfd, pst = self._parent_fd(m.parts[:-1])
            name = m.parts[-1]
            st = lstat_at(pfd, name)
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

    def _node(self, m: Member) -> None:
        pfd, pst = self._parent_fd(m.parts[:-1])
        name = m.parts[-1]
        self._clear_existing(pfd, name)
        kind = {T_CHR: stat.S_IFCHR, T_BLK: stat.S_IFBLK, T_FIFO: stat.S_IFIFO}[m.type]
        dev = os.makedev(m.devmajor, m.devminor) if m.type != T_FIFO else 0
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

    def _whiteout(self, m: Member) -> None:
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
        st = lstat_at(pfd, target)
        if st is not None:
            self._remove(pfd, target, st)
        if self.mode is Whiteouts.OVERLAY:
            os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)
            os.chown(target, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, m: Member) -> None:
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
                    st = lstat_at(fd, name)
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
            st = lstat_at(got[0], parts[-1])
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.utime(parts[-1], ns=(ns, ns), dir_fd=got[0], follow_symlinks=False)


def _skipped(m: Member) -> bool:
    """Regular-file members whose data is not extracted (whiteouts, aufs metadata)."""
    return bool(m.parts) and (m.parts[-1].startswith(WH_PREFIX) or m.parts[0].startswith(WH_META))


def _run(ap: _Applier, src: Source) -> None:
    while (m := next_member(src)) is not None:
        size = data_size(m)
        try:
            ap.apply(m, src)
        except OSError as e:
            raise _os_error(e, m.display) from None
        except ValueError as e:
            raise InvalidParameter(f"invalid layer: tar entry {m.display}: {e}") from None
        if m.type != T_REG or _skipped(m):
            src.skip(size, m.display)
        src.skip(-size % BLOCK, "padding")


def apply_layer(
    src: BinaryIO,
    dest: str,
    *,
    whiteouts: Whiteouts,
    tar_split: BinaryIO | None = None,
    spool_dir: str | None = None,
) -> ApplyResult:
    """Extract the uncompressed layer tar `src` into `dest` (see module doc for the safety
    rules). With `tar_split`, also write what `assemble_layer` needs to rebuild the exact tar,
    spooling it meanwhile in `spool_dir` (by default the directory holding `dest`: the driver's,
    on the data root's filesystem)."""
    if spool_dir is None:
        spool_dir = os.path.dirname(os.path.abspath(dest))
    try:
        rec = SplitRecorder(spool_dir) if tar_split is not None else None
    except OSError as e:
        raise System(f"spooling tar-split in {spool_dir}: {e.strerror}") from None
    try:
        try:
            ap = _Applier(dest, whiteouts, rec)
        except OSError as e:
            raise System(f"opening layer directory {dest}: {e.strerror}") from None
        try:
            source = Source(src, rec)
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
