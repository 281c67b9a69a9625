"""The interface every cgroup implementation offers, and what v1 and v2 share."""

from __future__ import annotations

import abc
import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter, System
from bocker_engine.runtime.cgroups import files as fs
from bocker_engine.runtime.cgroups.resources import NAME_RE, HostCaps, Resources

# How long freeze() and destroy() wait for the kernel before giving up. Freezing or emptying a cgroup
# normally takes milliseconds; a task stuck in uninterruptible sleep must not hang the daemon.
WAIT_SECONDS = 2.0

CONTAINER_CGROUP_DIR = "/sys/fs/cgroup"


@dataclass
class CgroupMount:
    """One step of building the container's /sys/fs/cgroup, to be performed in order.

    tmpfs: mount a tmpfs at target. bind: bind `source` (host path) at target, read-only if `readonly`.
    cgroup2: mount the cgroup2 filesystem at target; the process must already be inside its own cgroup
    namespace, created after it joined its cgroup, so the mount's root is the container's cgroup.
    symlink: create a symlink at target pointing to `source` (relative). remount-ro: remount target ro.
    """

    kind: str
    source: str
    target: str
    readonly: bool
    options: str = ""


class Cgroups(abc.ABC):
    version: int
    driver: str = "cgroupfs"

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "bocker", *, proc: str = "/proc") -> None:
        parts = [p for p in parent.split("/") if p]
        for part in parts:
            if not NAME_RE.match(part):
                raise InvalidParameter(f"invalid cgroup parent: {parent!r}")
        self.root = root
        self.parent = "/".join(parts)
        self.proc = proc

    # -- to implement ------------------------------------------------------------------------------

    @abc.abstractmethod
    def caps(self) -> HostCaps: ...

    @abc.abstractmethod
    def _dirs(self, name: str) -> list[str]:
        """The container's cgroup directory in every hierarchy (one on v2)."""

    @abc.abstractmethod
    def _pids_dir(self, name: str) -> str:
        """The directory whose cgroup.procs lists the container's processes."""

    @abc.abstractmethod
    def _make_dirs(self, rel: str) -> None:
        """Create the container's cgroup directories (`rel` below every hierarchy's mountpoint)."""

    @abc.abstractmethod
    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        """Write the limits; on create an unset value keeps the kernel's default, on update the current one."""

    @abc.abstractmethod
    def freeze(self, name: str) -> None: ...

    @abc.abstractmethod
    def thaw(self, name: str) -> None: ...

    @abc.abstractmethod
    def is_frozen(self, name: str) -> bool: ...

    @abc.abstractmethod
    def stats(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def container_mounts(self, name: str, cgroupns: bool = True) -> list[CgroupMount]: ...

    # -- shared ------------------------------------------------------------------------------------

    def create(self, name: str, res: Resources) -> None:
        """Create the cgroup with its limits; a failure at any step removes what was created."""
        rel = self._rel(name)
        try:
            self._make_dirs(rel)
            self._apply(name, res, create=True)
        except BaseException:
            try:
                self.destroy(name)
            except System:
                pass
            raise

    def update(self, name: str, res: Resources) -> None:
        self._existing(name)
        self._apply(name, res, create=False)

    def validate(self, res: Resources, *, update: bool = False) -> list[str]:
        return res.validate(self.caps(), update=update)

    def _rel(self, name: str) -> str:
        if not NAME_RE.match(name):
            raise InvalidParameter(f"invalid cgroup name: {name!r}")
        return f"{self.parent}/{name}" if self.parent else name

    def _existing(self, name: str) -> str:
        path = self._pids_dir(name)
        if not os.path.isdir(path):
            raise System(f"cgroups: no cgroup for {name} ({path})")
        return path

    def procs_files(self, name: str) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self._dirs(name)]

    def add_process(self, name: str, pid: int) -> None:
        for path in self.procs_files(name):
            fs.write(path, str(pid))

    def pids(self, name: str) -> list[int]:
        """Processes in the container's cgroup and any cgroup below it (a container may nest)."""
        top = self._pids_dir(name)
        found: list[int] = []
        for dirpath, _dirs, _files in os.walk(top):
            for line in fs.read_or(os.path.join(dirpath, "cgroup.procs"), "").split():
                if line.isdigit():
                    found.append(int(line))
        return sorted(set(found))

    def _signal_pids(self, name: str, sig: int) -> None:
        for pid in self.pids(name):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except OSError as e:
                raise System(f"cgroups: cannot signal {pid} in {name}: {e.strerror}") from e

    def kill_all(self, name: str, sig: int) -> None:
        """Signal every process. A frozen cgroup is thawed after SIGKILL is queued rather than before,
        so the paused processes never run user code again but still get to die."""
        frozen = sig == signal.SIGKILL and self.is_frozen(name)
        self._signal_pids(name, sig)
        if frozen:
            self.thaw(name)

    def oom_killed(self, name: str) -> bool:
        """Whether the kernel's OOM killer killed something in this cgroup (State.OOMKilled)."""
        return self._oom_kills(name) > 0

    @abc.abstractmethod
    def _oom_kills(self, name: str) -> int: ...

    def destroy(self, name: str) -> None:
        dirs = [d for d in self._dirs(name) if os.path.isdir(d)]
        if not dirs:
            return
        deadline = time.monotonic() + WAIT_SECONDS
        self.kill_all(name, signal.SIGKILL)
        while self.pids(name):
            if time.monotonic() > deadline:
                raise System(f"cgroups: processes of {name} did not exit: {self.pids(name)}")
            time.sleep(0.01)
            self._signal_pids(name, signal.SIGKILL)
        for top in dirs:
            self._rmtree(top, deadline)

    @staticmethod
    def _rmtree(top: str, deadline: float) -> None:
        # cgroup directories are removed with rmdir only (their files are virtual), deepest first;
        # EBUSY right after the last task exited is transient, so retry until the deadline.
        subdirs = [dp for dp, _d, _f in os.walk(top)]
        for path in reversed(subdirs):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # cgroupfs answers EBUSY, never ENOTEMPTY: that only comes from a plain directory
                    # standing in for cgroupfs (tests), whose interface files are real files.
                    if e.errno == errno.ENOTEMPTY:
                        fs.remove_files(path)
                        continue
                    if time.monotonic() > deadline:
                        raise System(f"cgroups: cannot remove {path}: {e.strerror}") from e
                    time.sleep(0.01)

    # -- host figures for stats --------------------------------------------------------------------

    def _machine_memory(self) -> int:
        for line in fs.read_or(os.path.join(self.proc, "meminfo"), "").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
        return 0

    def _system_cpu(self) -> tuple[int, int]:
        """(system_cpu_usage in ns, online_cpus), computed from /proc/stat as Docker does."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        online = 0
        for line in fs.read_or(os.path.join(self.proc, "stat"), "").splitlines():
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "cpu":
                total = sum(int(v) for v in fields[1:8]) * 10**9 // ticks
            elif fields[0].startswith("cpu"):
                online += 1
        return total, online or fs.ncpu()

    def _limit(self, raw: int) -> int:
        machine = self._machine_memory()
        return machine if machine and (raw == 0 or raw > machine) else raw


def blkio_stats(service_bytes: list[dict[str, Any]], serviced: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "io_service_bytes_recursive": service_bytes,
        "io_serviced_recursive": serviced,
        "io_queue_recursive": None,
        "io_service_time_recursive": None,
        "io_wait_time_recursive": None,
        "io_merged_recursive": None,
        "io_time_recursive": None,
        "sectors_recursive": None,
    }

