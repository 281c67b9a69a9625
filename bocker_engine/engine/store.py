"""State on disk: every write is atomic (temp file, fsync, rename), so a crash never leaves a
half-written config behind."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any


def write_atomic(path: str, data: bytes, mode: int = 0o600, sync: bool = True, sync_dir: bool = True) -> None:
    """`sync`: the file's data is on disk before the rename, so a crash leaves the old file or
    the new one, never a torn one; `sync_dir` (with it): the rename itself is on disk too. A
    state that the next change rewrites anyway, and whose older version is as good after a
    machine crash, needs only the first."""
    # Per thread too: two threads writing the same file (concurrent starts write one network's
    # IPAM file) must not share, and rename away, each other's temp file.
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                # A nearly full disk takes part of a write and says so only on the next one.
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        remove_quiet(tmp)  # a failed write (ENOSPC) leaves neither a torn file nor its temp
        raise
    if sync and sync_dir:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_json(path: str, obj: Any, sync: bool = True, sync_dir: bool = True) -> None:
    write_atomic(path, json.dumps(obj, separators=(",", ":")).encode(), sync=sync, sync_dir=sync_dir)


def read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


def remove_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
