"""Docker's HostConfig resources: parsing, validation against what the host enforces, unit conversions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter
from bocker_engine.runtime.cgroups import files as fs
from bocker_engine.runtime.devices import DeviceRule, container_devices

MIN_MEMORY = 6 * 1024 * 1024  # Docker's linuxMinMemory
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262144
DEFAULT_CFS_PERIOD = 100000

SWAP_UNSUPPORTED_WARNING = (
    "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
    "Memory limited without swap."
)

# Names of cgroups and of cgroup parents' components.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
        ncpu = fs.ncpu()
        return cls(
            ncpu=ncpu,
            cpus=fs.read_or("/sys/devices/system/cpu/online", f"0-{ncpu - 1}").strip(),
            mems=fs.read_or("/sys/devices/system/node/online", "0").strip(),
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
    # Device rules in order (last match wins); None leaves the cgroup's devices alone (update).
    devices: list[DeviceRule] | None = None

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
            devices=container_devices(hc)[0],
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


def cfs(res: Resources) -> tuple[int, int]:
    """(period, quota) to apply; 0 means leave that one alone."""
    if res.nano_cpus > 0:
        return DEFAULT_CFS_PERIOD, res.nano_cpus * DEFAULT_CFS_PERIOD // 10**9
    return res.cpu_period, res.cpu_quota

