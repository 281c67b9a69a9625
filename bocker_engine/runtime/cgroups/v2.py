"""cgroup v2: the unified hierarchy, controllers enabled level by level through subtree_control."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from bocker_engine.errors import InvalidParameter, System
from bocker_engine.runtime.cgroups import base, devicefilter
from bocker_engine.runtime.cgroups import files as fs
from bocker_engine.runtime.cgroups.base import CONTAINER_CGROUP_DIR, CgroupMount, Cgroups, blkio_stats
from bocker_engine.runtime.cgroups.resources import DEFAULT_CFS_PERIOD, HostCaps, Resources, cfs, cpu_weight, io_weight

# Controllers a container cgroup needs on v2; enabled in every ancestor's cgroup.subtree_control.
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


class CgroupsV2(Cgroups):
    version = 2

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, self._rel(name))

    def _dirs(self, name: str) -> list[str]:
        return [self._dir(name)]

    def _pids_dir(self, name: str) -> str:
        return self._dir(name)

    def _controllers(self, path: str) -> list[str]:
        return fs.read_or(os.path.join(path, "cgroup.controllers"), "").split()

    def _oom_kills(self, name: str) -> int:
        return fs.flat_keyed(os.path.join(self._dir(name), "memory.events")).get("oom_kill", 0)

    def caps(self) -> HostCaps:
        ctrls = set(self._controllers(self.root))
        ncpu = fs.ncpu()
        cpus = fs.read_or(os.path.join(self.root, "cpuset.cpus.effective"), "").strip()
        mems = fs.read_or(os.path.join(self.root, "cpuset.mems.effective"), "").strip()
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
        own = fs.read_or(os.path.join(self.proc, "self", "cgroup"), "")
        for line in own.splitlines():
            if line.startswith("0::"):
                candidates.append(os.path.join(self.root, line[3:].strip().lstrip("/")))
        for path in candidates:
            if os.path.exists(os.path.join(path, "memory.max")):
                return os.path.exists(os.path.join(path, "memory.swap.max"))
        return True

    def _enable_controllers(self, level: str) -> None:
        available = self._controllers(level)
        enabled = fs.read_or(os.path.join(level, "cgroup.subtree_control"), "").split()
        missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        path = os.path.join(level, "cgroup.subtree_control")
        try:
            fs.write(path, " ".join("+" + c for c in missing))
        except System:
            # One refusal (e.g. cpu while realtime threads run outside the root) fails the whole write;
            # take what the kernel allows, as runc does. A limit that needs the missing controller
            # then fails on its own file with a clear message.
            for c in missing:
                try:
                    fs.write(path, "+" + c)
                except System:
                    pass

    def _make_dirs(self, rel: str) -> None:
        level = self.root
        for part in rel.split("/"):
            self._enable_controllers(level)
            level = os.path.join(level, part)
            try:
                os.makedirs(level, exist_ok=True)
            except OSError as e:
                raise System(f"cgroups: cannot create {level}: {e.strerror}") from e

    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        d = self._dir(name)

        def w(f: str, v: str) -> None:
            fs.write(os.path.join(d, f), v)

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
                memory = res.memory or fs.read_int(os.path.join(d, "memory.max"), 0)
                if not memory:
                    raise InvalidParameter("Unable to set swap limit without memory limit")
                if total < memory:
                    raise InvalidParameter(
                        "Minimum memoryswap limit should be larger than memory limit, see usage"
                    )
                w("memory.swap.max", str(total - memory))
        if res.cpu_shares:
            w("cpu.weight", str(cpu_weight(res.cpu_shares)))
        period, quota = cfs(res)
        if period or quota:
            cur_quota, _, cur_period = (
                fs.read_or(os.path.join(d, "cpu.max"), "max 100000").strip().partition(" ")
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

        if create and res.devices is not None:
            devicefilter.attach(d, res.devices)

    def is_frozen(self, name: str) -> bool:
        return fs.read_or(os.path.join(self._dir(name), "cgroup.freeze"), "0").strip() == "1"

    def _wait_frozen(self, name: str, want: str) -> bool:
        events = os.path.join(self._dir(name), "cgroup.events")
        deadline = time.monotonic() + base.WAIT_SECONDS
        delay = 0.001
        while True:
            for line in fs.read(events).splitlines():
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
        fs.write(path, "1")
        # The write returns before every task has stopped; pause is only done when the kernel says so.
        if not self._wait_frozen(name, "1"):
            fs.write(path, "0")
            raise System(f"cgroups: {name} did not freeze within {base.WAIT_SECONDS:g}s")

    def thaw(self, name: str) -> None:
        path = os.path.join(self._existing(name), "cgroup.freeze")
        if os.path.exists(path):
            fs.write(path, "0")

    def kill_all(self, name: str, sig: int) -> None:
        kill_file = os.path.join(self._dir(name), "cgroup.kill")
        if sig == signal.SIGKILL and os.path.exists(kill_file):
            # Atomic in the kernel, so no fork can escape; it also kills frozen tasks.
            fs.write(kill_file, "1")
            if self.is_frozen(name):
                self.thaw(name)
            return
        super().kill_all(name, sig)

    def stats(self, name: str) -> dict[str, Any]:
        d = self._existing(name)
        out: dict[str, Any] = {}
        events = fs.flat_keyed(os.path.join(d, "memory.events"))
        out["memory_stats"] = {
            "usage": fs.read_int(os.path.join(d, "memory.current")),
            "limit": self._limit(fs.read_int(os.path.join(d, "memory.max"), 0)),
            "failcnt": events.get("oom", 0),
            "stats": fs.flat_keyed(os.path.join(d, "memory.stat")),
        }
        cpu = fs.flat_keyed(os.path.join(d, "cpu.stat"))
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
            "current": fs.read_int(os.path.join(d, "pids.current")),
            "limit": fs.read_int(os.path.join(d, "pids.max")),
        }
        service_bytes: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        for dev, values in _io_stat(os.path.join(d, "io.stat")):
            major, _, minor = dev.partition(":")
            for op, bkey, ikey in (("read", "rbytes", "rios"), ("write", "wbytes", "wios")):
                base = {"major": int(major), "minor": int(minor), "op": op}
                service_bytes.append({**base, "value": values.get(bkey, 0)})
                serviced.append({**base, "value": values.get(ikey, 0)})
        out["blkio_stats"] = blkio_stats(service_bytes, serviced)
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
    for line in fs.read_or(path, "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        values: dict[str, int] = {}
        for kv in parts[1:]:
            key, _, value = kv.partition("=")
            if value.isdigit():
                values[key] = int(value)
        yield parts[0], values

