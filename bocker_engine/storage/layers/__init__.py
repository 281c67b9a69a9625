"""Layer tars in Docker's format: extract (pull/load), produce (commit/push/save), export.

A layer is a tar stream; `.wh.NAME` deletes NAME from the layers below and `DIR/.wh..wh..opq`
hides everything below in DIR. The modules, along the way a layer travels:

    compress   sniff and stream-decompress (gzip, zstd, xz, bzip2)
    tarread    the byte source (DiffID, tar-split recording), headers, PAX, GNU long names
    apply      extract a layer into a directory, safely (openat2 RESOLVE_IN_ROOT)
    tree       read-only walks of trees and the changes between two
    tarwrite   the deterministic tar writer
    diff       layer tars of changes (commit, push) and `docker diff`, btrfs and overlay
    export     one path of a container's filesystem as a tar (export, cp)
    common     block sizes, type flags, whiteout names, errno classes
"""

from __future__ import annotations

from bocker_engine.storage.layers.apply import apply_layer, assemble_layer
from bocker_engine.storage.layers.common import ADDED, DELETED, MODIFIED, ApplyResult, Whiteouts
from bocker_engine.storage.layers.compress import Prefixed, decompressed
from bocker_engine.storage.layers.diff import changes, diff_layer, overlay_changes, overlay_upper_to_tar
from bocker_engine.storage.layers.export import tar_path

__all__ = [
    "ADDED",
    "DELETED",
    "MODIFIED",
    "ApplyResult",
    "Prefixed",
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
