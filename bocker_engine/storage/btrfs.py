"""btrfs driver: a subvolume per layer, a snapshot for each child layer and container.

Snapshots are made and destroyed with ioctls rather than the `btrfs` command: a container start
makes one and `docker rm` destroys one, so a subprocess each time would show in `run --rm`.
If the data root is not on btrfs, a sparse loopback file under it is formatted and mounted,
so the driver works out of the box on any host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from typing import BinaryIO

from bocker_engine import linux
from bocker_engine.errors import System
from bocker_engine.storage import layers
from bocker_engine.storage.driver import Driver, fs_type, is_mountpoint, private_dir, run

# linux/btrfs.h: _IOW(0x94, nr, 4096-byte args)
_IOC_SUBVOL_CREATE = 0x5000940E
_IOC_SNAP_DESTROY = 0x5000940F
_IOC_SNAP_CREATE_V2 = 0x50009417
_NAME_MAX = 4087

LOOPBACK_SIZE = 100 * 1024**3  # sparse: only what is written takes space


# The btrfs structs are 4 KiB, passed as mutable buffers (see linux.ioctl_buffer).
def _vol_args(name: str, fd: int = 0) -> bytearray:
    raw = name.encode()
    if len(raw) > _NAME_MAX:
        raise System(f"btrfs subvolume name too long: {name}")
    return bytearray(struct.pack("q4088s", fd, raw))


def _vol_args_v2(name: str, fd: int) -> bytearray:
    return bytearray(struct.pack("qQQ32s4040s", fd, 0, 0, b"", name.encode()))


def create_subvolume(parent: str, name: str) -> None:
    """A fresh, empty subvolume `parent/name` (volumes use one each when the data root is btrfs)."""
    dirfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        linux.ioctl_buffer(dirfd, _IOC_SUBVOL_CREATE, _vol_args(name))
    finally:
        os.close(dirfd)


def destroy_subvolume(parent: str, name: str) -> None:
    dirfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        linux.ioctl_buffer(dirfd, _IOC_SNAP_DESTROY, _vol_args(name))
    finally:
        os.close(dirfd)


class BtrfsDriver(Driver):
    name = "btrfs"

    def __init__(self, home: str) -> None:
        super().__init__(home)
        self.subvols = os.path.join(home, "subvolumes")
        self.image = os.path.join(os.path.dirname(home.rstrip("/")), "btrfs.img")
        self.loopback = False

    def setup(self) -> None:
        # dockerd's modes: the driver's home 0710, the loopback image 0600 (it holds every layer).
        private_dir(self.home, 0o710)
        if fs_type(self.home) != "btrfs":
            self._mount_loopback()
            private_dir(self.home, 0o710)  # the mounted filesystem's root, this time
        private_dir(self.subvols, 0o700)

    def _mount_loopback(self) -> None:
        if not os.path.exists(self.image):
            fd = os.open(self.image + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.truncate(LOOPBACK_SIZE)
            run("mkfs.btrfs", "-q", "-f", self.image + ".tmp")
            os.replace(self.image + ".tmp", self.image)
        os.chmod(self.image, 0o600)
        if not is_mountpoint(self.home):
            # `mount -o loop` attaches the loop device with autoclear: unmounting frees it.
            run("mount", "-o", "loop,user_subvol_rm_allowed", self.image, self.home)
        self.loopback = True

    def cleanup(self) -> None:
        if self.loopback and is_mountpoint(self.home):
            with contextlib.suppress(System):
                run("umount", self.home)

    def status(self) -> list[list[str]]:
        st = os.statvfs(self.home)
        return [
            ["Btrfs", ""],
            ["Build Version", "Btrfs v6"],
            ["Library Version", "102"],
            ["Backing Filesystem", "btrfs (loopback file)" if self.loopback else "btrfs"],
            ["Data Space Available", f"{st.f_bavail * st.f_frsize // 1024**2} MB"],
        ]

    def _path(self, id: str) -> str:
        return os.path.join(self.subvols, id)

    def layer_dir(self, id: str) -> str:
        return self._path(id)

    def create(self, id: str, parent: str | None) -> None:
        dirfd = os.open(self.subvols, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if parent:
                src = os.open(self._path(parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    linux.ioctl_buffer(dirfd, _IOC_SNAP_CREATE_V2, _vol_args_v2(id, src))
                finally:
                    os.close(src)
            else:
                linux.ioctl_buffer(dirfd, _IOC_SUBVOL_CREATE, _vol_args(id))
        except OSError as e:
            raise System(f"btrfs: creating {id}: {e.strerror}") from None
        finally:
            os.close(dirfd)

    def get(self, id: str) -> str:
        return self._path(id)

    def put(self, id: str) -> None:
        pass

    def exists(self, id: str) -> bool:
        return os.path.isdir(self._path(id))

    def remove(self, id: str) -> None:
        if not self.exists(id):
            return
        self._destroy(self.subvols, id)

    def _destroy(self, parent: str, name: str) -> None:
        dirfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                linux.ioctl_buffer(dirfd, _IOC_SNAP_DESTROY, _vol_args(name))
            except OSError as e:
                if e.errno != errno.ENOTEMPTY:
                    raise System(f"btrfs: removing {name}: {e.strerror}") from None
                # A container made subvolumes inside its own (btrfs tools, nested engines):
                # only then is the tree worth walking.
                for inner in _nested_subvolumes(os.path.join(parent, name)):
                    self._destroy(os.path.dirname(inner), os.path.basename(inner))
                linux.ioctl_buffer(dirfd, _IOC_SNAP_DESTROY, _vol_args(name))
        finally:
            os.close(dirfd)

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO, tar_split: BinaryIO | None) -> tuple[str, int]:
        res = layers.apply_layer(stream, self._path(id), whiteouts=layers.Whiteouts.DELETE, tar_split=tar_split)
        return res.diff_id, res.size

    def diff(self, id: str, parent: str | None, out: BinaryIO, mtime_clamp: int | None = None) -> None:
        # `create` made `id` a snapshot of `parent`, which no one writes to afterwards.
        layers.diff_layer(self._path(id), self._path(parent) if parent else None, out, mtime_clamp, snapshot=True)

    def changes(self, id: str, parent: str | None) -> list[tuple[str, int]]:
        return layers.changes(self._path(id), self._path(parent) if parent else None, snapshot=True)


def _nested_subvolumes(path: str) -> list[str]:
    """Subvolumes below `path` (their inode number is 256), deepest first."""
    found = []
    dev = os.lstat(path).st_dev
    for dirpath, dirnames, _ in os.walk(path):
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if st.st_ino == 256 and st.st_dev != dev:
                found.append(full)
                dirnames.remove(d)
    return found[::-1]
