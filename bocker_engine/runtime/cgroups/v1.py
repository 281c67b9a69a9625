"""cgroup v1: one hierarchy per controller (or group of controllers), found in mountinfo."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter, System
from bocker_engine.runtime.cgroups import base
from bocker_engine.runtime.cgroups import files as fs
from bocker_engine.runtime.cgroups.base import CONTAINER_CGROUP_DIR, CgroupMount, Cgroups, blkio_stats
from bocker_engine.runtime.cgroups.resources import MAX_CPU_SHARES, MIN_CPU_SHARES, HostCaps, Resources, cfs


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    """v1 blkio "MAJ:MIN Op value" lines; the per-cgroup "Total N" line is not a device entry."""
    out: list[dict[str, Any]] = []
    for line in fs.read_or(path, "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return out


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
        found.setdefault(key, Hierarchy(fs.unescape_mountinfo(lfields[4]), key))
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
        text = fs.read(mountinfo or os.path.join(proc, "self", "mountinfo"))
        known: set[str] | None = None
        table = fs.read_or(os.path.join(proc, "cgroups"), "")
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
        return fs.flat_keyed(os.path.join(memory, "memory.oom_control")).get("oom_kill", 0) if memory else 0

    def caps(self) -> HostCaps:
        def has(controller: str, *files: str) -> bool:
            mount = self._mount(controller)
            return mount is not None and all(os.path.exists(os.path.join(mount, f)) for f in files)

        ncpu = fs.ncpu()
        cpuset = self._mount("cpuset")
        cpus = fs.read_or(os.path.join(cpuset, "cpuset.cpus"), "").strip() if cpuset else ""
        mems = fs.read_or(os.path.join(cpuset, "cpuset.mems"), "").strip() if cpuset else ""
        blkio = self._mount("blkio")
        blkio_weight = blkio is not None and (
            os.path.exists(os.path.join(blkio, "blkio.weight"))
            # With BFQ the root has no weight file but every child gets blkio.bfq.weight.
            or any(f.startswith("blkio.bfq.") for f in fs.listdir(blkio))
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

    def _make_dirs(self, rel: str) -> None:
        for h in self.hierarchies:
            if "cpuset" in h.controllers:
                self._mkdir_cpuset(h.mountpoint, rel)
            else:
                try:
                    os.makedirs(os.path.join(h.mountpoint, rel), exist_ok=True)
                except OSError as e:
                    raise System(f"cgroups: cannot create {h.mountpoint}/{rel}: {e.strerror}") from e

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
                if not fs.read_or(os.path.join(child, f), "").strip():
                    fs.write(os.path.join(child, f), fs.read(os.path.join(current, f)).strip())
            current = child

    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        caps = self.caps()
        mem = self._dir("memory", name)
        if mem:
            self._apply_memory(mem, res, create=create, swap_supported=caps.swap_limit)
            if res.memory_reservation:
                fs.write(os.path.join(mem, "memory.soft_limit_in_bytes"), str(res.memory_reservation))
            if res.memory_swappiness is not None and caps.memory_swappiness:
                fs.write(os.path.join(mem, "memory.swappiness"), str(res.memory_swappiness))
        cpu = self._dir("cpu", name)
        if cpu:
            if res.cpu_shares:
                shares = min(max(res.cpu_shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
                fs.write(os.path.join(cpu, "cpu.shares"), str(shares))
            period, quota = cfs(res)
            # Period first: a quota is checked against the period already in place.
            if period:
                fs.write(os.path.join(cpu, "cpu.cfs_period_us"), str(period))
            if quota:
                fs.write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
        cpuset = self._dir("cpuset", name)
        if cpuset:
            if res.cpuset_cpus:
                fs.write(os.path.join(cpuset, "cpuset.cpus"), res.cpuset_cpus)
            if res.cpuset_mems:
                fs.write(os.path.join(cpuset, "cpuset.mems"), res.cpuset_mems)
        pids = self._dir("pids", name)
        if pids and res.pids_limit is not None and (res.pids_limit > 0 or not create):
            fs.write(os.path.join(pids, "pids.max"), str(res.pids_limit) if res.pids_limit > 0 else "max")
        devices = self._dir("devices", name)
        if devices and create and res.devices is not None:
            # One rule per write, in order: the kernel applies each to the list as it stands.
            for rule in res.devices:
                fs.write(os.path.join(devices, "devices.allow" if rule.allow else "devices.deny"), rule.v1())
        blkio = self._dir("blkio", name)
        if blkio and res.blkio_weight:
            for f in ("blkio.weight", "blkio.bfq.weight"):
                if os.path.exists(os.path.join(blkio, f)):
                    fs.write(os.path.join(blkio, f), str(res.blkio_weight))
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
            current = fs.read_int(limit_file)
            if swap == -1 or current < swap:
                fs.write(memsw_file, str(swap))
                fs.write(limit_file, str(memory))
            else:
                fs.write(limit_file, str(memory))
                fs.write(memsw_file, str(swap))
        elif memory:
            if not create and swap_supported:
                current_sw = fs.read_int(memsw_file, -1)
                if 0 <= current_sw < memory:
                    raise InvalidParameter(
                        "Memory limit should be smaller than already set memoryswap limit, "
                        "update the memoryswap at the same time"
                    )
            fs.write(limit_file, str(memory))
        elif swap:
            if swap != -1 and swap < fs.read_int(limit_file):
                raise InvalidParameter(
                    "Minimum memoryswap limit should be larger than memory limit, see usage"
                )
            fs.write(memsw_file, str(swap))

    def is_frozen(self, name: str) -> bool:
        d = self._dir("freezer", name)
        if not d:
            return False
        return fs.read_or(os.path.join(d, "freezer.state"), "THAWED").strip() != "THAWED"

    def _freezer(self, name: str) -> str:
        d = self._dir("freezer", name)
        if not d:
            raise System("cgroups: the freezer cgroup is not mounted")
        if not os.path.isdir(d):
            raise System(f"cgroups: no cgroup for {name} ({d})")
        return os.path.join(d, "freezer.state")

    def freeze(self, name: str) -> None:
        state_file = self._freezer(name)
        deadline = time.monotonic() + base.WAIT_SECONDS
        delay = 0.001
        while True:
            # Re-writing FROZEN restarts the freeze of tasks that forked while FREEZING (as runc does).
            fs.write(state_file, "FROZEN")
            if fs.read(state_file).strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                fs.write(state_file, "THAWED")
                raise System(f"cgroups: {name} did not freeze within {base.WAIT_SECONDS:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def thaw(self, name: str) -> None:
        state_file = self._freezer(name)
        deadline = time.monotonic() + base.WAIT_SECONDS
        while True:
            fs.write(state_file, "THAWED")
            if fs.read(state_file).strip() == "THAWED":
                return
            if time.monotonic() > deadline:
                raise System(f"cgroups: {name} did not thaw within {base.WAIT_SECONDS:g}s")
            time.sleep(0.005)

    def stats(self, name: str) -> dict[str, Any]:
        self._existing(name)
        out: dict[str, Any] = {}

        mem = self._dir("memory", name)
        if mem:
            out["memory_stats"] = {
                "usage": fs.read_int(os.path.join(mem, "memory.usage_in_bytes")),
                "max_usage": fs.read_int(os.path.join(mem, "memory.max_usage_in_bytes")),
                "failcnt": fs.read_int(os.path.join(mem, "memory.failcnt")),
                "limit": self._limit(fs.read_int(os.path.join(mem, "memory.limit_in_bytes"))),
                "stats": fs.flat_keyed(os.path.join(mem, "memory.stat")),
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
            times = fs.flat_keyed(os.path.join(acct, "cpuacct.stat"))
            cpu_usage = {
                "total_usage": fs.read_int(os.path.join(acct, "cpuacct.usage")),
                "percpu_usage": [
                    int(v) for v in fs.read_or(os.path.join(acct, "cpuacct.usage_percpu"), "").split()
                ],
                "usage_in_kernelmode": times.get("system", 0) * 10**9 // ticks,
                "usage_in_usermode": times.get("user", 0) * 10**9 // ticks,
            }
        cpu = self._dir("cpu", name)
        throttle = fs.flat_keyed(os.path.join(cpu, "cpu.stat")) if cpu else {}
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
                "current": fs.read_int(os.path.join(pids, "pids.current")),
                "limit": fs.read_int(os.path.join(pids, "pids.max")),
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
        out["blkio_stats"] = blkio_stats(service_bytes, serviced)
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

