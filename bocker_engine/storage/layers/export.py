"""Exporting a path of a container's filesystem as a tar (`docker export`, `docker cp` out)."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from bocker_engine.errors import NotFound
from bocker_engine.storage import safepath
from bocker_engine.storage.layers.common import lstat_at
from bocker_engine.storage.layers.tarwrite import TarOut
from bocker_engine.storage.layers.tree import Info, Tree, join, read_xattrs, walk_changes


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


def tar_path(root: str, path: str, out: BinaryIO, *, name: str | None = None, mtime_clamp: int | None = None) -> None:
    """Tar of `path` (file or tree) inside `root`, resolved as a process chrooted at `root`
    would; the final component is not followed, nor any symlink below it."""
    parts = _clean_clamped(path)
    rootfd = safepath.open_root(root)
    try:
        w = TarOut(out, mtime_clamp)
        top = os.fsencode(name).strip(b"/") if name else b""
        if not parts:
            tree = Tree(os.dup(rootfd))
            if top:
                w.add(top, Info(os.fstat(rootfd), b"", read_xattrs(rootfd, b"")), None)
        else:
            try:
                pfd = safepath.open_in_root(rootfd, b"/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"no such file or directory: {path}") from None
            try:
                base = parts[-1]
                st = lstat_at(pfd, base)
                if st is None:
                    raise NotFound(f"no such file or directory: {path}")
                link = os.readlink(base, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else b""
                top = top or base
                opener = lambda: os.open(  # noqa: E731
                    base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=pfd
                )
                w.add(top, Info(st, link, read_xattrs(pfd, base)), opener)
                if not stat.S_ISDIR(st.st_mode):
                    w.close()
                    return
                tree = Tree(os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd))
            finally:
                os.close(pfd)
        try:
            for rel, _, info in walk_changes(tree, None):
                w.add(join(top, rel), info, tree.opener(rel))
        finally:
            tree.close()
        w.close()
    finally:
        os.close(rootfd)
