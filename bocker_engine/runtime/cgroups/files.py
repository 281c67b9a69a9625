"""cgroupfs file helpers: plain reads and writes, errors turned into System with the path in them.

Callers reach these through the module (`fs.write(...)`), so tests can stand in for the kernel's
refusals by replacing one function here.
"""

from __future__ import annotations

import os
import re

from bocker_engine.errors import System


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise System(f"cgroups: cannot read {path}: {e.strerror or e}") from e


def read_or(path: str, default: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise System(f"cgroups: cannot write {value!r} to {path}: {e.strerror or e}") from e


def read_int(path: str, default: int = 0) -> int:
    text = read_or(path, "").strip()
    if text in ("", "max"):
        return default
    try:
        return int(text)
    except ValueError:
        return default


def flat_keyed(path: str) -> dict[str, int]:
    """Parse "key value" lines (memory.stat, cpu.stat, ...); values that are not integers are skipped."""
    out: dict[str, int] = {}
    for line in read_or(path, "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def ncpu() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def remove_files(path: str) -> None:
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if not os.path.isdir(full):
            os.unlink(full)

