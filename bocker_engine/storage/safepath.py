"""Path resolution that cannot leave a directory: a thin wrapper over Linux `openat2(2)`.

Layer extraction and export look names up inside trees whose symlinks were written by image
authors or by container processes. Resolving those names in userspace is racy and easy to get
wrong, so every lookup that may cross a symlink goes through the kernel with one of:

- ``RESOLVE_IN_ROOT``: the directory fd acts as ``/`` (chroot semantics: ``..`` at the top stays
  there, an absolute symlink restarts at the fd). Used to mirror what a process inside the
  container would see.
- ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``: for walks that only ever descend into directories
  they just listed; any symlink met on the way means the tree changed under us.
"""

from __future__ import annotations

import ctypes
import errno
import os

from bocker_engine.errors import System

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
BENEATH_NO_SYMLINKS = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

# openat2 got the same number on every architecture (it was added after the syscall tables
# were unified in 5.1).
_SYS_OPENAT2 = 437


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: bytes | str, flags: int, resolve: int, mode: int = 0) -> int:
    """Open `path` relative to `dirfd` with the given RESOLVE_* flags; raises OSError like os.open."""
    if isinstance(path, str):
        path = os.fsencode(path)
    if b"\0" in path:
        raise ValueError("embedded NUL in path")
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    # The kernel answers EAGAIN for RESOLVE_IN_ROOT/BENEATH when a concurrent rename or mount
    # could have let `..` escape; a retry is the documented remedy.
    for _ in range(64):
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            continue
        if err == errno.ENOSYS:
            raise System("openat2 is not available (Linux >= 5.6 required)")
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(path))


def open_root(path: str | bytes) -> int:
    """An O_PATH fd of a directory that later lookups are anchored to."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_in_root(rootfd: int, path: bytes | str, flags: int, mode: int = 0) -> int:
    """Resolve `path` as a process chrooted at `rootfd` would (magic links refused)."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return openat2(rootfd, path or b".", flags, IN_ROOT, mode)


def open_beneath(dirfd: int, path: bytes | str, flags: int, mode: int = 0, *, same_mount: bool = False) -> int:
    """Resolve `path` below `dirfd` through real directories only (no symlink, no `..` escape);
    with `same_mount`, also without crossing into another mount (EXDEV)."""
    if isinstance(path, str):
        path = os.fsencode(path)
    resolve = BENEATH_NO_SYMLINKS | (RESOLVE_NO_XDEV if same_mount else 0)
    return openat2(dirfd, path or b".", flags, resolve, mode)


def fd_path(dirfd: int, name: bytes) -> bytes:
    """A path naming `name` inside the directory behind `dirfd`, for calls without a dir_fd form
    (l*xattr, chmod of a node we must not open). The magic link is the directory itself, so only
    `name` is looked up, and callers pass follow_symlinks=False for it."""
    return b"/proc/self/fd/%d/%s" % (dirfd, name) if name else b"/proc/self/fd/%d" % dirfd
