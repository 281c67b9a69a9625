"""Container cgroups: one interface, a cgroup v1 and a cgroup v2 implementation picked from the host.

Everything here is plain reads and writes of cgroupfs files (no shell, no libraries), so the same code
runs against a fake tree in tests. Resource semantics follow Docker's HostConfig; the translation to
kernel files follows runc, so a container limited here reports the same numbers as under Docker.
"""

from __future__ import annotations

import abc
import errno
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter, System

MIN_MEMORY = 6 * 1024 * 1024  # Docker's linuxMinMemory
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144
DEFAULT_CFS_PERIOD = 100000
CONTAINER_CGROUP_DIR = "/sys/fs/cgroup"

SWAP_UNSUPPORTED_WARNING = (
    "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
    "Memory limited without swap."
)

# How long freeze() and destroy() wait for the kernel before giving up. Freezing or emptying a cgroup
# normally takes milliseconds; a task stuck in uninterruptible sleep must not hang the daemon.
WAIT_SECONDS = 2.0

# Controllers a container cgroup needs on v2; enabled in every ancestor's cgroup.subtree_control.
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------------
# Resources


def parse_cpuset(value: str) -> set[int]:
    """Parse a cpuset list such as "0-2,4" the way moby's parsers.ParseUintList does."""
    result: set[int] = set()
    if value == "":
        return result
    for part in value.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"invalid format: {value}")
        start = int(lo)
        end = int(hi) if sep else start
        if end < start:
            raise ValueError(f"invalid format: {value}")
        result.update(range(start, end + 1))
    return result


@dataclass(frozen=True)
class HostCaps:
    """What the host's cgroups can enforce; Docker's sysinfo.SysInfo, reduced to what validate() uses."""

    ncpu: int
    cpus: str
    mems: str
    memory_limit: bool = True
    swap_limit: bool = True
    memory_reservation: bool = True
    memory_swappiness: bool = True
    cpu_shares: bool = True
    cpu_cfs: bool = True
    cpuset: bool = True
    blkio_weight: bool = True
    pids_limit: bool = True

    @classmethod
    def probe(cls) -> HostCaps:
        """CPU facts only, everything else assumed supported (no cgroup tree at hand)."""
        ncpu = _ncpu()
        return cls(
            ncpu=ncpu,
            cpus=_read_or("/sys/devices/system/cpu/online", f"0-{ncpu - 1}").strip(),
            mems=_read_or("/sys/devices/system/node/online", "0").strip(),
        )


@dataclass
class Resources:
    """Docker HostConfig resource fields; 0 / None / "" mean "not set"."""

    memory: int = 0
    memory_reservation: int = 0
    memory_swap: int = 0  # memory + swap; -1 unlimited; 0 with memory set => 2 * memory on create
    memory_swappiness: int | None = None  # v1 only
    cpu_shares: int = 0
    nano_cpus: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0  # -1 removes the quota
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None  # None: not set; 0 or -1: unlimited
    blkio_weight: int = 0

    @classmethod
    def from_host_config(cls, hc: dict[str, Any]) -> Resources:
        def num(key: str) -> int:
            value = hc.get(key)
            return int(value) if value is not None else 0

        swappiness = hc.get("MemorySwappiness")
        pids = hc.get("PidsLimit")
        return cls(
            memory=num("Memory"),
            memory_reservation=num("MemoryReservation"),
            memory_swap=num("MemorySwap"),
            # Old clients send -1 for "use the default", which is the same as not setting it.
            memory_swappiness=None if swappiness is None or int(swappiness) == -1 else int(swappiness),
            cpu_shares=num("CpuShares"),
            nano_cpus=num("NanoCpus"),
            cpu_period=num("CpuPeriod"),
            cpu_quota=num("CpuQuota"),
            cpuset_cpus=hc.get("CpusetCpus") or "",
            cpuset_mems=hc.get("CpusetMems") or "",
            pids_limit=None if pids is None else int(pids),
            blkio_weight=num("BlkioWeight"),
        )

    def memsw_total(self) -> int:
        """memory+swap limit to apply at create: -1 unlimited, 0 nothing to set (Docker's default 2x)."""
        if self.memory_swap == -1:
            return -1
        if self.memory_swap > 0:
            return self.memory_swap
        if self.memory > 0:
            return 2 * self.memory
        return 0

    def validate(self, caps: HostCaps | None = None, *, update: bool = False) -> list[str]:
        """Docker's verifyPlatformContainerResources: raise on invalid values, return warnings.

        `update` relaxes the checks `docker update` relaxes (swap without memory).
        """
        caps = caps or HostCaps.probe()
        warnings: list[str] = []

        if self.memory != 0 and self.memory < MIN_MEMORY:
            raise InvalidParameter("Minimum memory limit allowed is 6MB")
        if self.memory > 0 and not caps.memory_limit:
            warnings.append(
                "Your kernel does not support memory limit capabilities or the cgroup is not mounted. "
                "Limitation discarded."
            )
        if self.memory > 0 and self.memory_swap != -1 and not caps.swap_limit:
            warnings.append(SWAP_UNSUPPORTED_WARNING)
        if self.memory > 0 and self.memory_swap > 0 and self.memory_swap < self.memory:
            raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
        if self.memory == 0 and self.memory_swap > 0 and not update:
            raise InvalidParameter(
                "You should always set the Memory limit when using Memoryswap limit, see usage"
            )
        if self.memory_swappiness is not None:
            if not caps.memory_swappiness:
                warnings.append(
                    "Your kernel does not support memory swappiness capabilities or the cgroup is not "
                    "mounted. Memory swappiness discarded."
                )
            elif not 0 <= self.memory_swappiness <= 100:
                raise InvalidParameter(
                    f"Invalid value: {self.memory_swappiness}, valid memory swappiness range is 0-100"
                )
        if self.memory_reservation > 0 and not caps.memory_reservation:
            warnings.append(
                "Your kernel does not support memory soft limit capabilities or the cgroup is not mounted. "
                "Limitation discarded."
            )
        if 0 < self.memory_reservation < MIN_MEMORY:
            raise InvalidParameter("Minimum memory reservation allowed is 6MB")
        if self.memory > 0 and self.memory_reservation > 0 and self.memory < self.memory_reservation:
            raise InvalidParameter(
                "Minimum memory limit can not be less than memory reservation limit, see usage"
            )

        if self.nano_cpus > 0 and self.cpu_period > 0:
            raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
        if self.nano_cpus > 0 and self.cpu_quota > 0:
            raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
        if self.nano_cpus > 0 and not caps.cpu_cfs:
            raise InvalidParameter(
                "NanoCPUs can not be set, as your kernel does not support CPU CFS scheduler or the cgroup "
                "is not mounted"
            )
        if self.nano_cpus < 0 or self.nano_cpus > caps.ncpu * 10**9:
            raise InvalidParameter(
                f"Range of CPUs is from 0.01 to {caps.ncpu}.00, as there are only {caps.ncpu} CPUs available"
            )
        if self.cpu_shares > 0 and not caps.cpu_shares:
            warnings.append(
                "Your kernel does not support CPU shares or the cgroup is not mounted. Shares discarded."
            )
        if self.cpu_period > 0 and not caps.cpu_cfs:
            warnings.append("Your kernel does not support CPU CFS scheduler. CPU period discarded.")
        if self.cpu_period != 0 and not 1000 <= self.cpu_period <= 1000000:
            raise InvalidParameter(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
            )
        if self.cpu_quota > 0 and not caps.cpu_cfs:
            warnings.append("Your kernel does not support CPU CFS scheduler. CPU quota discarded.")
        if 0 < self.cpu_quota < 1000:
            raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")

        if (self.cpuset_cpus or self.cpuset_mems) and not caps.cpuset:
            warnings.append(
                "Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded."
            )
        _check_cpuset(self.cpuset_cpus, caps.cpus, "cpus", "CPUs")
        _check_cpuset(self.cpuset_mems, caps.mems, "mems", "memory nodes")

        if self.blkio_weight > 0 and not caps.blkio_weight:
            warnings.append(
                "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
                "Weight discarded."
            )
        if self.blkio_weight > 0 and not 10 <= self.blkio_weight <= 1000:
            raise InvalidParameter("Range of blkio weight is from 10 to 1000")
        if self.pids_limit is not None and self.pids_limit > 0 and not caps.pids_limit:
            warnings.append(
                "Your kernel does not support PIDs limit capabilities or the cgroup is not mounted. "
                "PIDs limit discarded."
            )
        return warnings


def _check_cpuset(requested: str, available: str, kind: str, what: str) -> None:
    if not requested:
        return
    try:
        wanted = parse_cpuset(requested)
    except ValueError as e:
        raise InvalidParameter(f"Invalid value {requested} for cpuset {kind}: {e}") from None
    try:
        have = parse_cpuset(available)
    except ValueError:
        return  # an unreadable host list must not block containers; the kernel has the last word
    if not wanted <= have:
        raise InvalidParameter(
            f"Requested {what} are not available - requested {requested}, available: {available}"
        )


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for v1 cpu.shares: runc's ConvertCPUSharesToCgroupV2Value."""
    shares = min(max(shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(blkio_weight: int) -> int:
    """cgroup v2 io.weight for a v1 blkio weight: runc's ConvertBlkIOToIOWeightValue."""
    return 1 + (blkio_weight - 10) * 9999 // 990


def _cfs(res: Resources) -> tuple[int, int]:
    """(period, quota) to apply; 0 means leave that one alone."""
    if res.nano_cpus > 0:
        return DEFAULT_CFS_PERIOD, res.nano_cpus * DEFAULT_CFS_PERIOD // 10**9
    return res.cpu_period, res.cpu_quota


# --------------------------------------------------------------------------------------------------
# File helpers


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise System(f"cgroups: cannot read {path}: {e.strerror or e}") from e


def _read_or(path: str, default: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise System(f"cgroups: cannot write {value!r} to {path}: {e.strerror or e}") from e


def _read_int(path: str, default: int = 0) -> int:
    text = _read_or(path, "").strip()
    if text in ("", "max"):
        return default
    try:
        return int(text)
    except ValueError:
        return default


def _flat_keyed(path: str) -> dict[str, int]:
    """Parse "key value" lines (memory.stat, cpu.stat, ...); values that are not integers are skipped."""
    out: dict[str, int] = {}
    for line in _read_or(path, "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _ncpu() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


# --------------------------------------------------------------------------------------------------
# Interface


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
            if not _NAME_RE.match(part):
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
    def create(self, name: str, res: Resources) -> None: ...

    @abc.abstractmethod
    def update(self, name: str, res: Resources) -> None: ...

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

    def validate(self, res: Resources, *, update: bool = False) -> list[str]:
        return res.validate(self.caps(), update=update)

    def _rel(self, name: str) -> str:
        if not _NAME_RE.match(name):
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
            _write(path, str(pid))

    def pids(self, name: str) -> list[int]:
        """Processes in the container's cgroup and any cgroup below it (a container may nest)."""
        top = self._pids_dir(name)
        found: list[int] = []
        for dirpath, _dirs, _files in os.walk(top):
            for line in _read_or(os.path.join(dirpath, "cgroup.procs"), "").split():
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
                        _remove_files(path)
                        continue
                    if time.monotonic() > deadline:
                        raise System(f"cgroups: cannot remove {path}: {e.strerror}") from e
                    time.sleep(0.01)

    # -- host figures for stats --------------------------------------------------------------------

    def _machine_memory(self) -> int:
        for line in _read_or(os.path.join(self.proc, "meminfo"), "").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
        return 0

    def _system_cpu(self) -> tuple[int, int]:
        """(system_cpu_usage in ns, online_cpus), computed from /proc/stat as Docker does."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        online = 0
        for line in _read_or(os.path.join(self.proc, "stat"), "").splitlines():
            fields = line.split()
            if not fields:
                continue
            if fields[0] == "cpu":
                total = sum(int(v) for v in fields[1:8]) * 10**9 // ticks
            elif fields[0].startswith("cpu"):
                online += 1
        return total, online or _ncpu()

    def _limit(self, raw: int) -> int:
        machine = self._machine_memory()
        return machine if machine and (raw == 0 or raw > machine) else raw


def _remove_files(path: str) -> None:
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if not os.path.isdir(full):
            os.unlink(full)


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    """v1 blkio "MAJ:MIN Op value" lines; the per-cgroup "Total N" line is not a device entry."""
    out: list[dict[str, Any]] = []
    for line in _read_or(path, "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return out


def _blkio_stats(service_bytes: list[dict[str, Any]], serviced: list[dict[str, Any]]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# cgroup v1


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    controllers: tuple[str, ...]  # as the kernel lists them, e.g. ("cpu", "cpuacct") or ("name=systemd",)

    @property
    def dirname(self) -> str:
        """Directory name inside the container, as Docker shows it: "cpu,cpuacct", "systemd"."""
        return ",".join(c.removeprefix("name=") for c in self.controllers)


# Superblock options of a v1 cgroup mount that are not controllers (used when /proc/cgroups is absent).
_V1_NON_CONTROLLER_OPTS = {
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
}


def parse_mountinfo(text: str, known: set[str] | None = None) -> list[Hierarchy]:
    """v1 hierarchies from /proc/self/mountinfo; `known` is the controller list of /proc/cgroups."""
    found: dict[tuple[str, ...], Hierarchy] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lfields, rfields = left.split(), right.split()
        if len(lfields) < 5 or len(rfields) < 3 or rfields[0] != "cgroup":
            continue
        controllers: list[str] = []
        for opt in rfields[2].split(","):
            if opt.startswith("name="):
                controllers.append(opt)
            elif known is not None:
                if opt in known:
                    controllers.append(opt)
            elif opt not in _V1_NON_CONTROLLER_OPTS and "=" not in opt:
                controllers.append(opt)
        if not controllers:
            continue
        key = tuple(controllers)
        # The same hierarchy can be bind-mounted elsewhere too; the first mount (the system's) wins.
        found.setdefault(key, Hierarchy(_unescape_mountinfo(lfields[4]), key))
    return list(found.values())


class CgroupsV1(Cgroups):
    version = 1

    def __init__(
        self,
        root: str = "/sys/fs/cgroup",
        parent: str = "bocker",
        *,
        proc: str = "/proc",
        mountinfo: str | None = None,
    ) -> None:
        super().__init__(root, parent, proc=proc)
        text = _read(mountinfo or os.path.join(proc, "self", "mountinfo"))
        known: set[str] | None = None
        table = _read_or(os.path.join(proc, "cgroups"), "")
        if table:
            known = {ln.split()[0] for ln in table.splitlines() if ln and not ln.startswith("#")}
        self.hierarchies = parse_mountinfo(text, known)
        if not self.hierarchies:
            raise System("cgroups: no cgroup v1 hierarchy is mounted")
        self._by_controller: dict[str, Hierarchy] = {}
        for h in self.hierarchies:
            for c in h.controllers:
                self._by_controller[c] = h

    def _mount(self, controller: str) -> str | None:
        h = self._by_controller.get(controller)
        return h.mountpoint if h else None

    def _dir(self, controller: str, name: str) -> str | None:
        mount = self._mount(controller)
        return os.path.join(mount, self._rel(name)) if mount else None

    def _dirs(self, name: str) -> list[str]:
        rel = self._rel(name)
        return [os.path.join(h.mountpoint, rel) for h in self.hierarchies]

    def _pids_dir(self, name: str) -> str:
        for controller in ("pids", "freezer", "memory"):
            d = self._dir(controller, name)
            if d:
                return d
        return self._dirs(name)[0]

    def _oom_kills(self, name: str) -> int:
        memory = self._dir("memory", name)
        return _flat_keyed(os.path.join(memory, "memory.oom_control")).get("oom_kill", 0) if memory else 0

    def caps(self) -> HostCaps:
        def has(controller: str, *files: str) -> bool:
            mount = self._mount(controller)
            return mount is not None and all(os.path.exists(os.path.join(mount, f)) for f in files)

        ncpu = _ncpu()
        cpuset = self._mount("cpuset")
        cpus = _read_or(os.path.join(cpuset, "cpuset.cpus"), "").strip() if cpuset else ""
        mems = _read_or(os.path.join(cpuset, "cpuset.mems"), "").strip() if cpuset else ""
        blkio = self._mount("blkio")
        blkio_weight = blkio is not None and (
            os.path.exists(os.path.join(blkio, "blkio.weight"))
            # With BFQ the root has no weight file but every child gets blkio.bfq.weight.
            or any(f.startswith("blkio.bfq.") for f in _listdir(blkio))
        )
        return HostCaps(
            ncpu=ncpu,
            cpus=cpus or f"0-{ncpu - 1}",
            mems=mems or "0",
            memory_limit=has("memory", "memory.limit_in_bytes"),
            swap_limit=has("memory", "memory.memsw.limit_in_bytes"),
            memory_reservation=has("memory", "memory.soft_limit_in_bytes"),
            memory_swappiness=has("memory", "memory.swappiness"),
            cpu_shares=has("cpu", "cpu.shares"),
            cpu_cfs=has("cpu", "cpu.cfs_quota_us"),
            cpuset=cpuset is not None,
            blkio_weight=blkio_weight,
            pids_limit=self._mount("pids") is not None,
        )

    def create(self, name: str, res: Resources) -> None:
        rel = self._rel(name)
        try:
            for h in self.hierarchies:
                if "cpuset" in h.controllers:
                    self._mkdir_cpuset(h.mountpoint, rel)
                else:
                    try:
                        os.makedirs(os.path.join(h.mountpoint, rel), exist_ok=True)
                    except OSError as e:
                        raise System(f"cgroups: cannot create {h.mountpoint}/{rel}: {e.strerror}") from e
            self._apply(name, res, create=True)
        except BaseException:
            try:
                self.destroy(name)
            except System:
                pass
            raise

    @staticmethod
    def _mkdir_cpuset(mount: str, rel: str) -> None:
        # A new v1 cpuset cgroup starts with empty cpus/mems and refuses tasks until they are set,
        # so every level we create inherits its parent's values.
        current = mount
        for part in rel.split("/"):
            child = os.path.join(current, part)
            try:
                os.makedirs(child, exist_ok=True)
            except OSError as e:
                raise System(f"cgroups: cannot create {child}: {e.strerror}") from e
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not _read_or(os.path.join(child, f), "").strip():
                    _write(os.path.join(child, f), _read(os.path.join(current, f)).strip())
            current = child

    def update(self, name: str, res: Resources) -> None:
        self._existing(name)
        self._apply(name, res, create=False)

    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        caps = self.caps()
        mem = self._dir("memory", name)
        if mem:
            self._apply_memory(mem, res, create=create, swap_supported=caps.swap_limit)
            if res.memory_reservation:
                _write(os.path.join(mem, "memory.soft_limit_in_bytes"), str(res.memory_reservation))
            if res.memory_swappiness is not None and caps.memory_swappiness:
                _write(os.path.join(mem, "memory.swappiness"), str(res.memory_swappiness))
        cpu = self._dir("cpu", name)
        if cpu:
            if res.cpu_shares:
                shares = min(max(res.cpu_shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
                _write(os.path.join(cpu, "cpu.shares"), str(shares))
            period, quota = _cfs(res)
            # Period first: a quota is checked against the period already in place.
            if period:
                _write(os.path.join(cpu, "cpu.cfs_period_us"), str(period))
            if quota:
                _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
        cpuset = self._dir("cpuset", name)
        if cpuset:
            if res.cpuset_cpus:
                _write(os.path.join(cpuset, "cpuset.cpus"), res.cpuset_cpus)
            if res.cpuset_mems:
                _write(os.path.join(cpuset, "cpuset.mems"), res.cpuset_mems)
        pids = self._dir("pids", name)
        if pids and res.pids_limit is not None and (res.pids_limit > 0 or not create):
            _write(os.path.join(pids, "pids.max"), str(res.pids_limit) if res.pids_limit > 0 else "max")
        blkio = self._dir("blkio", name)
        if blkio and res.blkio_weight:
            for f in ("blkio.weight", "blkio.bfq.weight"):
                if os.path.exists(os.path.join(blkio, f)):
                    _write(os.path.join(blkio, f), str(res.blkio_weight))
                    break

    @staticmethod
    def _apply_memory(mem: str, res: Resources, *, create: bool, swap_supported: bool) -> None:
        limit_file = os.path.join(mem, "memory.limit_in_bytes")
        memsw_file = os.path.join(mem, "memory.memsw.limit_in_bytes")
        memory = res.memory
        # On update an unset swap means "keep it"; only create applies Docker's 2x default.
        swap = res.memsw_total() if create else res.memory_swap
        if not swap_supported:
            swap = 0
        # The kernel keeps memory.limit <= memsw.limit at every step, so the order of the two writes
        # depends on whether the limits grow or shrink (runc's rule: compare with the current limit).
        if memory and swap:
            current = _read_int(limit_file)
            if swap == -1 or current < swap:
                _write(memsw_file, str(swap))
                _write(limit_file, str(memory))
            else:
                _write(limit_file, str(memory))
                _write(memsw_file, str(swap))
        elif memory:
            if not create and swap_supported:
                current_sw = _read_int(memsw_file, -1)
                if 0 <= current_sw < memory:
                    raise InvalidParameter(
                        "Memory limit should be smaller than already set memoryswap limit, "
                        "update the memoryswap at the same time"
                    )
            _write(limit_file, str(memory))
        elif swap:
            if swap != -1 and swap < _read_int(limit_file):
                raise InvalidParameter(
                    "Minimum memoryswap limit should be larger than memory limit, see usage"
                )
            _write(memsw_file, str(swap))

    def is_frozen(self, name: str) -> bool:
        d = self._dir("freezer", name)
        if not d:
            return False
        return _read_or(os.path.join(d, "freezer.state"), "THAWED").strip() != "THAWED"

    def _freezer(self, name: str) -> str:
        d = self._dir("freezer", name)
        if not d:
            raise System("cgroups: the freezer cgroup is not mounted")
        if not os.path.isdir(d):
            raise System(f"cgroups: no cgroup for {name} ({d})")
        return os.path.join(d, "freezer.state")

    def freeze(self, name: str) -> None:
        state_file = self._freezer(name)
        deadline = time.monotonic() + WAIT_SECONDS
        delay = 0.001
        while True:
            # Re-writing FROZEN restarts the freeze of tasks that forked while FREEZING (as runc does).
            _write(state_file, "FROZEN")
            if _read(state_file).strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                _write(state_file, "THAWED")
                raise System(f"cgroups: {name} did not freeze within {WAIT_SECONDS:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def thaw(self, name: str) -> None:
        state_file = self._freezer(name)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            _write(state_file, "THAWED")
            if _read(state_file).strip() == "THAWED":
                return
            if time.monotonic() > deadline:
                raise System(f"cgroups: {name} did not thaw within {WAIT_SECONDS:g}s")
            time.sleep(0.005)

    def stats(self, name: str) -> dict[str, Any]:
        self._existing(name)
        out: dict[str, Any] = {}

        mem = self._dir("memory", name)
        if mem:
            out["memory_stats"] = {
                "usage": _read_int(os.path.join(mem, "memory.usage_in_bytes")),
                "max_usage": _read_int(os.path.join(mem, "memory.max_usage_in_bytes")),
                "failcnt": _read_int(os.path.join(mem, "memory.failcnt")),
                "limit": self._limit(_read_int(os.path.join(mem, "memory.limit_in_bytes"))),
                "stats": _flat_keyed(os.path.join(mem, "memory.stat")),
            }
        else:
            out["memory_stats"] = {}

        system_usage, online = self._system_cpu()
        cpu_usage: dict[str, Any] = {
            "total_usage": 0,
            "percpu_usage": [],
            "usage_in_kernelmode": 0,
            "usage_in_usermode": 0,
        }
        acct = self._dir("cpuacct", name)
        if acct:
            ticks = os.sysconf("SC_CLK_TCK")
            times = _flat_keyed(os.path.join(acct, "cpuacct.stat"))
            cpu_usage = {
                "total_usage": _read_int(os.path.join(acct, "cpuacct.usage")),
                "percpu_usage": [
                    int(v) for v in _read_or(os.path.join(acct, "cpuacct.usage_percpu"), "").split()
                ],
                "usage_in_kernelmode": times.get("system", 0) * 10**9 // ticks,
                "usage_in_usermode": times.get("user", 0) * 10**9 // ticks,
            }
        cpu = self._dir("cpu", name)
        throttle = _flat_keyed(os.path.join(cpu, "cpu.stat")) if cpu else {}
        out["cpu_stats"] = {
            "cpu_usage": cpu_usage,
            "system_cpu_usage": system_usage,
            "online_cpus": online,
            "throttling_data": {
                "periods": throttle.get("nr_periods", 0),
                "throttled_periods": throttle.get("nr_throttled", 0),
                "throttled_time": throttle.get("throttled_time", 0),
            },
        }

        pids = self._dir("pids", name)
        out["pids_stats"] = (
            {
                "current": _read_int(os.path.join(pids, "pids.current")),
                "limit": _read_int(os.path.join(pids, "pids.max")),
            }
            if pids
            else {}
        )

        blkio = self._dir("blkio", name)
        service_bytes: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        if blkio:
            # CFQ-era files first; modern kernels only have the throttle (and bfq) ones. Same as containerd.
            for prefix in ("blkio.", "blkio.throttle."):
                if os.path.exists(os.path.join(blkio, prefix + "io_service_bytes_recursive")):
                    service_bytes = _blkio_entries(os.path.join(blkio, prefix + "io_service_bytes_recursive"))
                    serviced = _blkio_entries(os.path.join(blkio, prefix + "io_serviced_recursive"))
                    break
        out["blkio_stats"] = _blkio_stats(service_bytes, serviced)
        return out

    def container_mounts(self, name: str, cgroupns: bool = True) -> list[CgroupMount]:
        """runc's v1 layout. `cgroupns` makes no difference: binds of host paths are right either way."""
        rel = self._rel(name)
        mounts = [CgroupMount("tmpfs", "tmpfs", CONTAINER_CGROUP_DIR, False, "mode=755,nosuid,nodev,noexec")]
        for h in sorted(self.hierarchies, key=lambda h: h.dirname):
            target = f"{CONTAINER_CGROUP_DIR}/{h.dirname}"
            mounts.append(
                CgroupMount("bind", os.path.join(h.mountpoint, rel), target, True, "nosuid,nodev,noexec")
            )
            if len(h.controllers) > 1:
                for c in h.controllers:
                    c = c.removeprefix("name=")
                    mounts.append(CgroupMount("symlink", h.dirname, f"{CONTAINER_CGROUP_DIR}/{c}", False))
        mounts.append(
            CgroupMount("remount-ro", "", CONTAINER_CGROUP_DIR, True, "mode=755,nosuid,nodev,noexec")
        )
        return mounts


# --------------------------------------------------------------------------------------------------
# cgroup v2


class CgroupsV2(Cgroups):
    version = 2

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, self._rel(name))

    def _dirs(self, name: str) -> list[str]:
        return [self._dir(name)]

    def _pids_dir(self, name: str) -> str:
        return self._dir(name)

    def _controllers(self, path: str) -> list[str]:
        return _read_or(os.path.join(path, "cgroup.controllers"), "").split()

    def _oom_kills(self, name: str) -> int:
        return _flat_keyed(os.path.join(self._dir(name), "memory.events")).get("oom_kill", 0)

    def caps(self) -> HostCaps:
        ctrls = set(self._controllers(self.root))
        ncpu = _ncpu()
        cpus = _read_or(os.path.join(self.root, "cpuset.cpus.effective"), "").strip()
        mems = _read_or(os.path.join(self.root, "cpuset.mems.effective"), "").strip()
        return HostCaps(
            ncpu=ncpu,
            cpus=cpus or f"0-{ncpu - 1}",
            mems=mems or "0",
            memory_limit="memory" in ctrls,
            swap_limit="memory" in ctrls and self._swap_supported(),
            memory_reservation="memory" in ctrls,
            memory_swappiness=False,  # no v2 equivalent; Docker warns and drops it too
            cpu_shares="cpu" in ctrls,
            cpu_cfs="cpu" in ctrls,
            cpuset="cpuset" in ctrls,
            blkio_weight="io" in ctrls,
            pids_limit="pids" in ctrls,
        )

    def _swap_supported(self) -> bool:
        # The root cgroup has no memory.* files, so look at a non-root cgroup with the memory controller
        # on: ours if it exists, else the one this process runs in. Without either, assume support.
        candidates = [os.path.join(self.root, self.parent)] if self.parent else []
        own = _read_or(os.path.join(self.proc, "self", "cgroup"), "")
        for line in own.splitlines():
            if line.startswith("0::"):
                candidates.append(os.path.join(self.root, line[3:].strip().lstrip("/")))
        for path in candidates:
            if os.path.exists(os.path.join(path, "memory.max")):
                return os.path.exists(os.path.join(path, "memory.swap.max"))
        return True

    def _enable_controllers(self, level: str) -> None:
        available = self._controllers(level)
        enabled = _read_or(os.path.join(level, "cgroup.subtree_control"), "").split()
        missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        path = os.path.join(level, "cgroup.subtree_control")
        try:
            _write(path, " ".join("+" + c for c in missing))
        except System:
            # One refusal (e.g. cpu while realtime threads run outside the root) fails the whole write;
            # take what the kernel allows, as runc does. A limit that needs the missing controller
            # then fails on its own file with a clear message.
            for c in missing:
                try:
                    _write(path, "+" + c)
                except System:
                    pass

    def create(self, name: str, res: Resources) -> None:
        rel = self._rel(name)
        try:
            level = self.root
            for part in rel.split("/"):
                self._enable_controllers(level)
                level = os.path.join(level, part)
                try:
                    os.makedirs(level, exist_ok=True)
                except OSError as e:
                    raise System(f"cgroups: cannot create {level}: {e.strerror}") from e
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

    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        d = self._dir(name)

        def w(f: str, v: str) -> None:
            _write(os.path.join(d, f), v)

        if res.memory:
            w("memory.max", str(res.memory))
        if res.memory_reservation:
            w("memory.low", str(res.memory_reservation))
        total = res.memsw_total() if create else res.memory_swap
        if total and os.path.exists(os.path.join(d, "memory.swap.max")):
            if total == -1:
                w("memory.swap.max", "max")
            else:
                # v2 limits swap alone, Docker gives memory+swap (runc ConvertMemorySwapToCgroupV2Value).
                memory = res.memory or _read_int(os.path.join(d, "memory.max"), 0)
                if not memory:
                    raise InvalidParameter("Unable to set swap limit without memory limit")
                if total < memory:
                    raise InvalidParameter(
                        "Minimum memoryswap limit should be larger than memory limit, see usage"
                    )
                w("memory.swap.max", str(total - memory))
        if res.cpu_shares:
            w("cpu.weight", str(cpu_weight(res.cpu_shares)))
        period, quota = _cfs(res)
        if period or quota:
            cur_quota, _, cur_period = (
                _read_or(os.path.join(d, "cpu.max"), "max 100000").strip().partition(" ")
            )
            new_period = str(period) if period else (cur_period or str(DEFAULT_CFS_PERIOD))
            new_quota = cur_quota or "max"
            if quota:
                new_quota = "max" if quota < 0 else str(quota)
            w("cpu.max", f"{new_quota} {new_period}")
        if res.cpuset_cpus:
            w("cpuset.cpus", res.cpuset_cpus)
        if res.cpuset_mems:
            w("cpuset.mems", res.cpuset_mems)
        if res.pids_limit is not None and (res.pids_limit > 0 or not create):
            w("pids.max", str(res.pids_limit) if res.pids_limit > 0 else "max")
        if res.blkio_weight:
            if os.path.exists(os.path.join(d, "io.bfq.weight")):
                w("io.bfq.weight", str(res.blkio_weight))  # same 1..1000 scale as blkio.weight
            else:
                w("io.weight", f"default {io_weight(res.blkio_weight)}")

    def is_frozen(self, name: str) -> bool:
        return _read_or(os.path.join(self._dir(name), "cgroup.freeze"), "0").strip() == "1"

    def _wait_frozen(self, name: str, want: str) -> bool:
        events = os.path.join(self._dir(name), "cgroup.events")
        deadline = time.monotonic() + WAIT_SECONDS
        delay = 0.001
        while True:
            for line in _read(events).splitlines():
                key, _, value = line.partition(" ")
                if key == "frozen" and value.strip() == want:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def freeze(self, name: str) -> None:
        path = os.path.join(self._existing(name), "cgroup.freeze")
        if not os.path.exists(path):
            raise System("cgroups: this kernel has no cgroup v2 freezer (cgroup.freeze, Linux 5.2+)")
        _write(path, "1")
        # The write returns before every task has stopped; pause is only done when the kernel says so.
        if not self._wait_frozen(name, "1"):
            _write(path, "0")
            raise System(f"cgroups: {name} did not freeze within {WAIT_SECONDS:g}s")

    def thaw(self, name: str) -> None:
        path = os.path.join(self._existing(name), "cgroup.freeze")
        if os.path.exists(path):
            _write(path, "0")

    def kill_all(self, name: str, sig: int) -> None:
        kill_file = os.path.join(self._dir(name), "cgroup.kill")
        if sig == signal.SIGKILL and os.path.exists(kill_file):
            # Atomic in the kernel, so no fork can escape; it also kills frozen tasks.
            _write(kill_file, "1")
            if self.is_frozen(name):
                self.thaw(name)
            return
        super().kill_all(name, sig)

    def stats(self, name: str) -> dict[str, Any]:
        d = self._existing(name)
        out: dict[str, Any] = {}
        events = _flat_keyed(os.path.join(d, "memory.events"))
        out["memory_stats"] = {
            "usage": _read_int(os.path.join(d, "memory.current")),
            "limit": self._limit(_read_int(os.path.join(d, "memory.max"), 0)),
            "failcnt": events.get("oom", 0),
            "stats": _flat_keyed(os.path.join(d, "memory.stat")),
        }
        cpu = _flat_keyed(os.path.join(d, "cpu.stat"))
        system_usage, online = self._system_cpu()
        out["cpu_stats"] = {
            "cpu_usage": {
                "total_usage": cpu.get("usage_usec", 0) * 1000,
                "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
                "usage_in_usermode": cpu.get("user_usec", 0) * 1000,
            },
            "system_cpu_usage": system_usage,
            "online_cpus": online,
            "throttling_data": {
                "periods": cpu.get("nr_periods", 0),
                "throttled_periods": cpu.get("nr_throttled", 0),
                "throttled_time": cpu.get("throttled_usec", 0) * 1000,
            },
        }
        out["pids_stats"] = {
            "current": _read_int(os.path.join(d, "pids.current")),
            "limit": _read_int(os.path.join(d, "pids.max")),
        }
        service_bytes: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        for dev, values in _io_stat(os.path.join(d, "io.stat")):
            major, _, minor = dev.partition(":")
            for op, bkey, ikey in (("read", "rbytes", "rios"), ("write", "wbytes", "wios")):
                base = {"major": int(major), "minor": int(minor), "op": op}
                service_bytes.append({**base, "value": values.get(bkey, 0)})
                serviced.append({**base, "value": values.get(ikey, 0)})
        out["blkio_stats"] = _blkio_stats(service_bytes, serviced)
        return out

    def container_mounts(self, name: str, cgroupns: bool = True) -> list[CgroupMount]:
        """A cgroup2 mount when the container has its own cgroup namespace (Docker's default on v2),
        else a read-only bind of the container's cgroup directory.

        cgroup2 inside a private cgroupns is what runc does: /proc/self/cgroup reads "0::/", the
        container cannot see or name its host path, and the mount follows the namespace root without
        the engine computing paths. The init must join its cgroup (procs_files) *before*
        unshare(CLONE_NEWCGROUP), because the namespace root is the cgroup at unshare time.
        """
        if cgroupns:
            return [CgroupMount("cgroup2", "cgroup", CONTAINER_CGROUP_DIR, True, "nosuid,nodev,noexec")]
        return [CgroupMount("bind", self._dir(name), CONTAINER_CGROUP_DIR, True, "nosuid,nodev,noexec")]


def _io_stat(path: str) -> Iterator[tuple[str, dict[str, int]]]:
    for line in _read_or(path, "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        values: dict[str, int] = {}
        for kv in parts[1:]:
            key, _, value = kv.partition("=")
            if value.isdigit():
                values[key] = int(value)
        yield parts[0], values


# --------------------------------------------------------------------------------------------------


def detect(
    root: str = "/sys/fs/cgroup",
    parent: str = "bocker",
    *,
    proc: str = "/proc",
    mountinfo: str | None = None,
) -> Cgroups:
    """v2 when `root` is a cgroup2 mount (unified), else the v1 hierarchies found in mountinfo."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupsV2(root, parent, proc=proc)
    return CgroupsV1(root, parent, proc=proc, mountinfo=mountinfo)


__all__ = [
    "CgroupMount",
    "Cgroups",
    "CgroupsV1",
    "CgroupsV2",
    "HostCaps",
    "Hierarchy",
    "Resources",
    "cpu_weight",
    "detect",
    "io_weight",
    "parse_cpuset",
    "parse_mountinfo",
]
