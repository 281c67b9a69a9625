"""Diffing trees: the layer tar of a container's changes (commit, push) and `docker diff`, for
plain trees (btrfs snapshots) and for overlayfs upper dirs."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from bocker_engine.storage import safepath
from bocker_engine.storage.layers.common import ADDED, DELETED, MODIFIED, OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX
from bocker_engine.storage.layers.tarwrite import TarOut, as_str
from bocker_engine.storage.layers.tree import Info, Tree, join, same_time, walk_changes


def _wh_name(rel: bytes) -> bytes:
    head, _, tail = rel.rpartition(b"/")
    return join(head, WH_PREFIX + tail)


def diff_layer(
    new: str, old: str | None, out: BinaryIO, mtime_clamp: int | None = None, *, snapshot: bool = False
) -> None:
    """Write the layer tar that turns tree `old` (None: empty) into tree `new` (`snapshot`: `new`
    began as a snapshot of `old`, see walk_changes)."""
    nt = Tree.open(new)
    try:
        ot = Tree.open(old) if old is not None else None
        try:
            w = TarOut(out, mtime_clamp)
            for rel, kind, info in walk_changes(nt, ot, snapshot):
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


def _is_whiteout(info: Info) -> bool:
    return stat.S_ISCHR(info.st.st_mode) and info.st.st_rdev == 0


def _is_opaque(info: Info) -> bool:
    return stat.S_ISDIR(info.st.st_mode) and info.xattrs.get(OPAQUE_XATTR) == b"y"


def overlay_upper_to_tar(upper: str, out: BinaryIO, mtime_clamp: int | None = None) -> None:
    """Write the layer tar of an overlayfs upper dir (whiteout devices, opaque xattrs)."""
    tree = Tree.open(upper)
    try:
        w = TarOut(out, mtime_clamp)
        for rel, _, info in walk_changes(tree, None):
            if _is_whiteout(info):
                w.whiteout(_wh_name(rel))
                continue
            w.add(rel, info, tree.opener(rel))
            if _is_opaque(info):
                w.whiteout(join(rel, WH_OPAQUE))
        w.close()
    finally:
        tree.close()


def _path(rel: bytes) -> str:
    return "/" + as_str(rel)


def changes(new: str, old: str | None, *, snapshot: bool = False) -> list[tuple[str, int]]:
    """`docker diff` between two trees: ("/path", 0 modified | 1 added | 2 deleted), by path."""
    nt = Tree.open(new)
    try:
        ot = Tree.open(old) if old is not None else None
        try:
            return sorted((_path(rel), kind) for rel, kind, _ in walk_changes(nt, ot, snapshot))
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
    tree = Tree.open(upper)
    fds: list[int] = []
    try:
        for lower in lowers:
            fds.append(safepath.open_root(lower))
        result: dict[str, int] = {}
        changed_dirs: set[bytes] = set()
        for rel, _, info in walk_changes(tree, None):
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
                    and same_time(st.st_mtime_ns, lst.st_mtime_ns)
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
