"""Live resource updates that the kernel refuses leave the old limits in place.

`docker update` writes several cgroup files in turn; the kernel can refuse one of them (a
memory limit below what the container uses and cannot reclaim answers EBUSY) after others were
written. The resource files are read before the update and written back if it fails. Some
files constrain each other (v1 memory.limit_in_bytes <= memory.memsw.limit_in_bytes), so the
restore retries what failed until nothing moves.
"""

from __future__ import annotations

import logging
import os

from bocker_engine.runtime.cgroups import Cgroups, Resources

log = logging.getLogger(__name__)

# Everything Cgroups.update may write, v1 and v2 names together (absent files are skipped).
RESOURCE_FILES = (
    "memory.memsw.limit_in_bytes",
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.swappiness",
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "blkio.weight",
    "blkio.bfq.weight",
    "memory.max",
    "memory.swap.max",
    "memory.low",
    "cpu.weight",
    "cpu.max",
    "io.weight",
    "io.bfq.weight",
)


def _read_first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def snapshot(dirs: list[str]) -> dict[str, str]:
    """The first line of every resource file in `dirs` (io.weight lists devices after it)."""
    out: dict[str, str] = {}
    for d in dirs:
        for name in RESOURCE_FILES:
            value = _read_first_line(os.path.join(d, name))
            if value is not None:
                out[os.path.join(d, name)] = value
    return out


def restore(saved: dict[str, str]) -> list[str]:
    """Write back what changed; returns the files that could not be restored."""
    pending = [p for p, v in saved.items() if _read_first_line(p) != v]
    while pending:
        failed = []
        for path in pending:
            try:
                with open(path, "w") as f:
                    f.write(saved[path])
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            return failed  # no progress: nothing else will change
        pending = failed
    return []


def update_or_roll_back(cgroups: Cgroups, name: str, res: Resources) -> None:
    """Cgroups.update, undone when it fails part way."""
    dirs = [os.path.dirname(p) for p in cgroups.procs_files(name)]
    saved = snapshot(dirs)
    try:
        cgroups.update(name, res)
    except BaseException:
        left = restore(saved)
        if left:
            log.warning("cgroups of %s: could not restore %s after a failed update", name, ", ".join(left))
        raise
