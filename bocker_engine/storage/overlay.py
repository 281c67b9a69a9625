"""overlay2 driver, laid out like dockerd's so that users find their way.

<home>/<id>/diff      this layer's own files (an overlay upper dir once it has a parent)
<home>/<id>/link      short name; <home>/l/<short> -> ../<id>/diff keeps mount options short
<home>/<id>/lower     the parents' short names, nearest first ("l/AAA:l/BBB")
<home>/<id>/work, merged   overlayfs work dir and mount point
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import string
import threading
from typing import BinaryIO

from bocker_engine import linux
from bocker_engine.errors import System
from bocker_engine.storage import layers
from bocker_engine.storage.driver import Driver, is_mountpoint, private_dir

_SHORT_ALPHABET = string.ascii_uppercase + string.digits


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


class OverlayDriver(Driver):
    name = "overlay2"

    def __init__(self, home: str) -> None:
        super().__init__(home)
        self.links = os.path.join(home, "l")
        self.refs: dict[str, int] = {}
        self.lock = threading.Lock()

    def setup(self) -> None:
        private_dir(self.home, 0o710)  # dockerd's mode: layers and containers' rootfs are private
        private_dir(self.links, 0o700)
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                with contextlib.suppress(Exception):
                    import subprocess

                    subprocess.run(["modprobe", "overlay"], check=False, capture_output=True)

    def status(self) -> list[list[str]]:
        from bocker_engine.storage.driver import fs_type

        return [
            ["Backing Filesystem", fs_type(self.home) or "unknown"],
            ["Supports d_type", "true"],
            ["Using metacopy", "false"],
            ["Native Overlay Diff", "true"],
            ["userxattr", "false"],
        ]

    def _dir(self, id: str) -> str:
        return os.path.join(self.home, id)

    def layer_dir(self, id: str) -> str:
        return os.path.join(self._dir(id), "diff")

    def _lowers(self, id: str) -> list[str]:
        """Absolute diff dirs of the parents, nearest first."""
        lower = _read(os.path.join(self._dir(id), "lower"))
        return [os.path.join(self.home, p) for p in lower.split(":")] if lower else []

    def metadata(self, id: str) -> dict[str, str]:
        d = self._dir(id)
        data = {
            "MergedDir": os.path.join(d, "merged"),
            "UpperDir": os.path.join(d, "diff"),
            "WorkDir": os.path.join(d, "work"),
        }
        lowers = self._lowers(id)
        if lowers:
            data["LowerDir"] = ":".join(lowers)
        return data

    def create(self, id: str, parent: str | None) -> None:
        d = self._dir(id)
        short = "".join(secrets.choice(_SHORT_ALPHABET) for _ in range(26))
        try:
            self._create(d, id, short, parent)
        except BaseException:
            # A failure part-way (a full disk) leaves neither the directory nor its short link,
            # which remove() could not find once the `link` file is missing.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.links, short))
            shutil.rmtree(d, ignore_errors=True)
            raise

    def _create(self, d: str, id: str, short: str, parent: str | None) -> None:
        os.makedirs(os.path.join(d, "diff"), mode=0o755)
        os.symlink(f"../{id}/diff", os.path.join(self.links, short))
        with open(os.path.join(d, "link"), "w") as f:
            f.write(short)
        if parent:
            plink = _read(os.path.join(self._dir(parent), "link"))
            plower = _read(os.path.join(self._dir(parent), "lower"))
            lower = f"l/{plink}" + (f":{plower}" if plower else "")
            with open(os.path.join(d, "lower"), "w") as f:
                f.write(lower)
            os.makedirs(os.path.join(d, "work"), mode=0o700)
            os.makedirs(os.path.join(d, "merged"), mode=0o700)

    def get(self, id: str) -> str:
        d = self._dir(id)
        lowers = self._lowers(id)
        if not lowers:
            return os.path.join(d, "diff")
        merged = os.path.join(d, "merged")
        with self.lock:
            count = self.refs.get(id, 0)
            if count == 0 and not is_mountpoint(merged):
                opts = f"lowerdir={':'.join(lowers)},upperdir={d}/diff,workdir={d}/work"
                try:
                    linux.mount("overlay", merged, "overlay", 0, opts)
                except OSError as e:
                    raise System(f"overlay mount {merged}: {e.strerror}") from None
            self.refs[id] = count + 1
        return merged

    def put(self, id: str) -> None:
        merged = os.path.join(self._dir(id), "merged")
        with self.lock:
            count = self.refs.get(id, 0) - 1
            if count > 0:
                self.refs[id] = count
                return
            self.refs.pop(id, None)
            if is_mountpoint(merged):
                with contextlib.suppress(OSError):
                    linux.umount(merged, linux.MNT_DETACH)

    def exists(self, id: str) -> bool:
        return os.path.isdir(self._dir(id))

    def remove(self, id: str) -> None:
        d = self._dir(id)
        if not os.path.isdir(d):
            return
        merged = os.path.join(d, "merged")
        if is_mountpoint(merged):
            with contextlib.suppress(OSError):
                linux.umount(merged, linux.MNT_DETACH)
        self.refs.pop(id, None)
        link = _read(os.path.join(d, "link"))
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.links, link))
        shutil.rmtree(d)

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO, tar_split: BinaryIO | None) -> tuple[str, int]:
        res = layers.apply_layer(stream, self.layer_dir(id), whiteouts=layers.Whiteouts.OVERLAY, tar_split=tar_split)
        return res.diff_id, res.size

    def diff(self, id: str, parent: str | None, out: BinaryIO, mtime_clamp: int | None = None) -> None:
        if parent is None:
            layers.diff_layer(self.layer_dir(id), None, out, mtime_clamp)
        else:
            layers.overlay_upper_to_tar(self.layer_dir(id), out, mtime_clamp)

    def changes(self, id: str, parent: str | None) -> list[tuple[str, int]]:
        if parent is None:
            return layers.changes(self.layer_dir(id), None)
        return layers.overlay_changes(self.layer_dir(id), self._lowers(id))

    def cleanup(self) -> None:
        with self.lock:
            for id in list(self.refs):
                merged = os.path.join(self._dir(id), "merged")
                if is_mountpoint(merged):
                    with contextlib.suppress(OSError):
                        linux.umount(merged, linux.MNT_DETACH)
            self.refs.clear()

    def diff_size(self, id: str, parent: str | None) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.layer_dir(id)):
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    if st.st_rdev == 0:
                        total += st.st_size
        return total
