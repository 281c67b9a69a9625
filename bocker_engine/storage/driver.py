"""The storage driver interface (moby's graphdriver, trimmed to what we use).

A driver stores directories by opaque id ("cache id"); each may have a parent whose contents it
starts from. Image layers are filled once by `apply_diff`; container layers are written by the
container through the path `get` returns. Drivers are synchronous; the engine runs them in
threads where they can be slow.
"""

from __future__ import annotations

import abc
import os
import subprocess
from typing import BinaryIO

from bocker_engine.errors import System


class Driver(abc.ABC):
    name: str = ""

    def __init__(self, home: str) -> None:
        self.home = home

    @abc.abstractmethod
    def setup(self) -> None:
        """Prepare `home` (mount a filesystem if needed). Idempotent."""

    @abc.abstractmethod
    def status(self) -> list[list[str]]:
        """DriverStatus pairs for `docker info`."""

    @abc.abstractmethod
    def create(self, id: str, parent: str | None) -> None:
        """A new directory starting as a copy of `parent` (or empty)."""

    @abc.abstractmethod
    def get(self, id: str) -> str:
        """Path of the directory's full contents (mounts it when the driver needs to)."""

    @abc.abstractmethod
    def put(self, id: str) -> None:
        """Release what `get` mounted."""

    @abc.abstractmethod
    def remove(self, id: str) -> None:
        """Delete the directory; missing ids are fine (removal must be idempotent)."""

    @abc.abstractmethod
    def exists(self, id: str) -> bool: ...

    @abc.abstractmethod
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO, tar_split: BinaryIO | None) -> tuple[str, int]:
        """Apply an uncompressed layer tar to a freshly created `id`: (diff id, size)."""

    @abc.abstractmethod
    def diff(self, id: str, parent: str | None, out: BinaryIO, mtime_clamp: int | None = None) -> None:
        """Write the tar of what `id` changed relative to `parent` (mtimes at most `mtime_clamp`)."""

    @abc.abstractmethod
    def changes(self, id: str, parent: str | None) -> list[tuple[str, int]]:
        """`docker diff`: (path, kind) with kind 0 modified, 1 added, 2 deleted."""

    @abc.abstractmethod
    def layer_dir(self, id: str) -> str:
        """Where this layer's own files are (for reassembling its original tar)."""

    def metadata(self, id: str) -> dict[str, str]:
        """GraphDriver.Data of inspect (moby's GetMetadata): where the driver keeps `id`."""
        return {}

    def diff_size(self, id: str, parent: str | None) -> int:
        """Bytes this layer adds: the size of regular files it changed (SizeRw)."""
        root = self.get(id)
        try:
            total = 0
            for path, kind in self.changes(id, parent):
                if kind == 2:
                    continue
                try:
                    st = os.lstat(root + path)
                except OSError:
                    continue
                if not os.path.isdir(root + path):
                    total += st.st_size
            return total
        finally:
            self.put(id)

    def cleanup(self) -> None:
        """Unmount everything the driver mounted (daemon shutdown)."""


def private_dir(path: str, mode: int) -> None:
    """`path` as a directory with exactly `mode`, owned by root: made so, or made so again at
    every start (a data root from an older version, or touched by hand). Like dockerd's, the
    data root keeps other local users out: layers and containers' files are the host's."""
    os.makedirs(path, mode=mode, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    os.chmod(path, mode)


def run(*args: str) -> str:
    try:
        res = subprocess.run(args, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise System(f"{' '.join(args)}: {e.stderr.strip() or e.returncode}") from None
    except FileNotFoundError:
        raise System(f"{args[0]} not found; run `make install`") from None
    return res.stdout


def fs_type(path: str) -> str:
    """Filesystem type of the mount containing `path`, from /proc/self/mountinfo."""
    path = os.path.realpath(path)
    best, best_type = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, best_type = mnt, right.split()[0]
    return best_type


def is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].replace("\\040", " ") == path for line in f)
