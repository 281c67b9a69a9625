"""Container stats: one collector for every stats stream, frames in dockerd's JSON.

Like dockerd's stats collector, one loop samples every container somebody is watching once a
second, in one trip to a thread for all of them (plain reads of cgroupfs files and of
/proc/<pid>/net/dev; no process is spawned), and hands each sample to that container's
subscribers. Each stream keeps the previous sample as `precpu_stats`/`preread`, so that the CLI
computes CPU% from a single frame. A subscriber that does not keep up only ever has the latest
sample waiting (older ones are dropped), so a stalled client costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bocker_engine.runtime.cgroups import Cgroups
from bocker_engine.runtime.cgroups.base import blkio_stats
from bocker_engine.timefmt import rfc3339nano

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container

log = logging.getLogger(__name__)

INTERVAL = 1.0
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class Sample:
    """One reading of a container (None stats: it was not running)."""

    read: str
    stats: dict[str, Any] | None
    at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class StatsSubscriber:
    container_id: str
    queue: asyncio.Queue[Sample] = field(default_factory=lambda: asyncio.Queue(maxsize=1))

    def put(self, sample: Sample) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(sample)


class StatsCollector:
    def __init__(
        self,
        cgroups: Cgroups,
        lookup: Callable[[str], Container | None],
        has_netns: Callable[[Container], bool],
    ) -> None:
        self.cgroups = cgroups
        self.lookup = lookup
        self.has_netns = has_netns
        self.subscribers: dict[str, set[StatsSubscriber]] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- reading ----------------------------------------------------------------------------

    def sample(self, c: Container) -> Sample:
        """Read one container now (cgroup files and its namespace's interfaces)."""
        if not c.state.Running:
            return Sample(ZERO_TIME, None)
        try:
            raw = self.cgroups.stats(c.id)
        except Exception as e:  # gone between the check and the read: an exit racing us
            log.debug("stats of %s: %s", c.id, e)
            return Sample(ZERO_TIME, None)
        read = rfc3339nano()
        stats = format_stats(raw)
        if self.has_netns(c) and c.state.Pid:
            nets = read_net_dev(f"/proc/{c.state.Pid}/net/dev")
            if nets:
                stats["networks"] = nets
        return Sample(read, stats)

    def _sample_many(self, cids: list[str]) -> dict[str, Sample]:
        out = {}
        for cid in cids:
            c = self.lookup(cid)
            if c is not None:
                out[cid] = self.sample(c)
        return out

    # ---- subscriptions ----------------------------------------------------------------------

    def subscribe(self, cid: str) -> StatsSubscriber:
        sub = StatsSubscriber(cid)
        self.subscribers.setdefault(cid, set()).add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return sub

    def unsubscribe(self, sub: StatsSubscriber) -> None:
        subs = self.subscribers.get(sub.container_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.container_id]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + INTERVAL
        while self.subscribers:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += INTERVAL
            if next_tick < loop.time():  # fell behind (a busy loop): skip, never burst
                next_tick = loop.time() + INTERVAL
            cids = list(self.subscribers)
            try:
                samples = await asyncio.to_thread(self._sample_many, cids)
            except Exception:
                log.exception("stats collection")
                continue
            for cid, sample in samples.items():
                for sub in list(self.subscribers.get(cid, ())):
                    sub.put(sample)
            # A removed container's streams hear an empty sample; they end on it.
            for cid in cids:
                if cid not in samples:
                    for sub in list(self.subscribers.get(cid, ())):
                        sub.put(Sample(ZERO_TIME, None))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


# ---- dockerd's JSON -------------------------------------------------------------------------


def _nonzero(d: dict[str, Any]) -> dict[str, Any]:
    """Go's omitempty on numbers."""
    return {k: v for k, v in d.items() if v}


def format_stats(raw: dict[str, Any]) -> dict[str, Any]:
    """The cgroups reading (runtime/cgroups stats) as dockerd's StatsJSON fields."""
    mem = raw.get("memory_stats") or {}
    memory: dict[str, Any] = _nonzero({k: mem.get(k, 0) for k in ("usage", "max_usage", "failcnt", "limit")})
    if mem.get("stats"):
        memory["stats"] = dict(mem["stats"])
    cpu = raw.get("cpu_stats") or {}
    return {
        "pids_stats": _nonzero(raw.get("pids_stats") or {}),
        "blkio_stats": raw.get("blkio_stats") or blkio_stats([], []),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu(cpu),
        "memory_stats": memory,
    }


def _cpu(cpu: dict[str, Any]) -> dict[str, Any]:
    usage = cpu.get("cpu_usage") or {}
    out_usage: dict[str, Any] = {"total_usage": usage.get("total_usage", 0)}
    if usage.get("percpu_usage"):
        out_usage["percpu_usage"] = usage["percpu_usage"]
    out_usage["usage_in_kernelmode"] = usage.get("usage_in_kernelmode", 0)
    out_usage["usage_in_usermode"] = usage.get("usage_in_usermode", 0)
    out: dict[str, Any] = {"cpu_usage": out_usage}
    if cpu.get("system_cpu_usage"):
        out["system_cpu_usage"] = cpu["system_cpu_usage"]
    if cpu.get("online_cpus"):
        out["online_cpus"] = cpu["online_cpus"]
    throttling = cpu.get("throttling_data") or {}
    out["throttling_data"] = {k: throttling.get(k, 0) for k in ("periods", "throttled_periods", "throttled_time")}
    return out


def _zero_cpu() -> dict[str, Any]:
    return _cpu({})


def _zero_blkio() -> dict[str, Any]:
    return {k: None for k in blkio_stats([], [])}


def frame(c: Container, sample: Sample | None, pre: Sample | None) -> dict[str, Any]:
    """A StatsJSON document: this sample, the previous one as precpu/preread, name and id.
    No sample (a stopped container): dockerd's zero value with only name and id set."""
    stats = sample.stats if sample is not None and sample.stats is not None else None
    pre_stats = pre.stats if pre is not None and pre.stats is not None else None
    out: dict[str, Any] = {
        "read": sample.read if stats is not None and sample is not None else ZERO_TIME,
        "preread": pre.read if pre_stats is not None and pre is not None else ZERO_TIME,
        "pids_stats": stats["pids_stats"] if stats else {},
        "blkio_stats": stats["blkio_stats"] if stats else _zero_blkio(),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": stats["cpu_stats"] if stats else _zero_cpu(),
        "precpu_stats": pre_stats["cpu_stats"] if pre_stats else _zero_cpu(),
        "memory_stats": stats["memory_stats"] if stats else {},
        "name": c.name,
        "id": c.id,
    }
    if stats and stats.get("networks"):
        out["networks"] = stats["networks"]
    return out


_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
_NET_TX = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev of the container's namespace, per interface (loopback left out, as dockerd
    reports only the endpoints' interfaces)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or name == "lo":
            continue
        v = rest.split()
        if len(v) < 16:
            continue
        rx = [int(v[0]), int(v[1]), int(v[2]), int(v[3])]
        tx = [int(v[8]), int(v[9]), int(v[10]), int(v[11])]
        out[name] = dict(zip(_NET_FIELDS + _NET_TX, rx + tx, strict=True))
    return out


def read_net_dev(path: str) -> dict[str, dict[str, int]]:
    try:
        with open(path) as f:
            return parse_net_dev(f.read())
    except OSError:
        return {}
