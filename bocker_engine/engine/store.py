"""State on disk: every write is atomic (temp file, fsync, rename), so a crash never leaves a
half-written config behind."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any


def write_atomic(path: str, data: bytes, mode: int = 0o600, sync: bool = True, durable: bool = True) -> None:
    """`sync`: the data is on disk before the rename, so that no crash leaves a torn file under
    `path` (the atomic guarantee). `durable` (with sync): the directory too, so the rename
    itself survives a crash; without it, as with dockerd's atomic writes, a crash soon after
    may leave the previous version (or none) in place, never a partial one."""
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
    if sync and durable:
        sync_dir(os.path.dirname(path) or ".")


def write_new(path: str, data: bytes, mode: int = 0o600) -> None:
    """A file in a directory that is not visible yet and is renamed into place whole later (a
    layer's metadata): no temp file of its own, the directory's rename is the atomic step; the
    data is synced so that the file is complete by then (see sync_dir)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: str, obj: Any, sync: bool = True, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, separators=(",", ":")).encode(), sync=sync, durable=durable)


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
