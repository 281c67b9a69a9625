"""Healthchecks: one monitor task per running container that has one (moby daemon/health.go).

The probe (`CMD` exec form, `CMD-SHELL` through the container's shell) runs as an exec inside
the container, with its confinement, but is not listed among the container's execs. Its result
goes into State.Health: Status starting|healthy|unhealthy, FailingStreak and the last 5 results.
The transitions (`record`) are pure; `HealthMonitors` owns the tasks and follows the containers'
start/die/destroy events (wired by the daemon), so the state machine needs no hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as sig
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bocker_engine.errors import EngineError
from bocker_engine.stdcopy import parse_frames
from bocker_engine.timefmt import parse_rfc3339, rfc3339nano

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.containers import ContainerService

log = logging.getLogger(__name__)

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
# Starting the exec does not count toward the probe's timeout, but a wedged start is bounded.
START_WAIT = 30.0
# After a probe is killed (timeout) or has exited: how long to wait for its exit / last output.
SETTLE_WAIT = 10.0
OUTPUT_WAIT = 2.0

STARTING, HEALTHY, UNHEALTHY, NONE = "starting", "healthy", "unhealthy", "none"
FILTER_VALUES = (STARTING, HEALTHY, UNHEALTHY, NONE)


@dataclass(frozen=True)
class Probe:
    cmd: list[str]
    interval: int  # ns
    timeout: int
    retries: int
    start_period: int

    @classmethod
    def of(cls, config: dict[str, Any]) -> Probe | None:
        """The probe of a container config, None when it has none (no Test, NONE, unknown)."""
        hc = config.get("Healthcheck") or {}
        test = hc.get("Test") or []
        if not test or test[0] not in ("CMD", "CMD-SHELL"):
            return None
        cmd = list(test[1:])
        if test[0] == "CMD-SHELL":
            cmd = list(config.get("Shell") or ["/bin/sh", "-c"]) + cmd
        if not cmd:
            return None

        def ns(key: str, default: int) -> int:
            return int(hc.get(key) or 0) or default

        retries = int(hc.get("Retries") or 0)
        return cls(
            cmd=cmd,
            interval=ns("Interval", DEFAULT_INTERVAL),
            timeout=ns("Timeout", DEFAULT_TIMEOUT),
            retries=retries if retries > 0 else DEFAULT_RETRIES,
            start_period=ns("StartPeriod", DEFAULT_START_PERIOD),
        )


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() for non-negative durations (1s, 500ms, 1m30s, 1.5s)."""
    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{ns}ns"

    def frac(value: int, unit: int, digits: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        return f"{whole}.{rest:0{digits}d}".rstrip("0")

    if ns < 1_000_000:
        return frac(ns, 1000, 3) + "µs"
    if ns < SECOND:
        return frac(ns, 1_000_000, 6) + "ms"
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + frac(rest, SECOND, 9) + "s"


def new_health() -> dict[str, Any]:
    return {"Status": STARTING, "FailingStreak": 0, "Log": []}


def record(health: dict[str, Any], result: dict[str, Any], probe: Probe, started_ns: int, probe_start_ns: int) -> bool:
    """Apply one probe result (dockerd's handleProbeResult). Returns whether Status changed.

    A failure while still starting and within the start period does not count; a success
    always makes the container healthy."""
    old = health.get("Status", STARTING)
    log_ = list(health.get("Log") or [])
    health["Log"] = (log_ + [result])[-MAX_LOG_ENTRIES:]
    if result["ExitCode"] == 0:
        health["FailingStreak"] = 0
        health["Status"] = HEALTHY
    elif not (old == STARTING and probe_start_ns - started_ns < probe.start_period):
        health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
        if health["FailingStreak"] >= probe.retries:
            health["Status"] = UNHEALTHY
    return bool(health["Status"] != old)


def status_of(health: dict[str, Any] | None) -> str:
    """What the `health` filter compares: none without a healthcheck."""
    return str(health.get("Status") or STARTING) if health else NONE


def suffix(health: dict[str, Any] | None) -> str:
    """The `docker ps` status suffix (moby Health.String)."""
    if not health:
        return ""
    status = status_of(health)
    return " (health: starting)" if status == STARTING else f" ({status})"


class _LimitedBuffer:
    """Keeps the first MAX_OUTPUT bytes; "..." marks that more was dropped."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def write(self, chunk: bytes) -> None:
        keep = max(0, MAX_OUTPUT - len(self.data))
        self.data += chunk[:keep]
        self.truncated = self.truncated or len(chunk) > keep

    def text(self) -> str:
        return self.data.decode("utf-8", "replace") + ("..." if self.truncated else "")


def _result(start_ns: int, code: int, output: str) -> dict[str, Any]:
    return {"Start": rfc3339nano(start_ns), "End": rfc3339nano(time.time_ns()), "ExitCode": code, "Output": output}


class HealthMonitors:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def on_event(self, action: str, c: Container) -> None:
        """Follows the containers' lifecycle through their events (the daemon wires it): a
        start (by hand, by a restart policy) begins monitoring, an exit or removal ends it."""
        if action == "start":
            self.start(c)
        elif action in ("die", "destroy"):
            self.stop(c.id)

    def resume(self, containers: Iterable[Container]) -> None:
        """After a live restore: the running containers are monitored again (from starting)."""
        for c in containers:
            if c.state.Running and not c.state.Restarting:
                self.start(c)

    def start(self, c: Container) -> None:
        """Reset the container's health to starting (persisted) and monitor it."""
        self.stop(c.id)
        probe = Probe.of(c.config)
        if probe is None:
            return
        health = c.state.Health or new_health()
        health["Status"], health["FailingStreak"] = STARTING, 0
        c.state.Health = health
        with contextlib.suppress(OSError):
            self.containers.save(c, sync=False)
        self.tasks[c.id] = asyncio.get_running_loop().create_task(self._monitor(c, probe))

    def stop(self, cid: str) -> None:
        task = self.tasks.pop(cid, None)
        if task is not None:
            task.cancel()

    async def shutdown(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _monitor(self, c: Container, probe: Probe) -> None:
        try:
            started_ns = parse_rfc3339(c.state.StartedAt)
        except ValueError:
            started_ns = time.time_ns()
        while True:
            await asyncio.sleep(probe.interval / SECOND)
            if not c.state.Running or c.state.Restarting:
                return
            if c.state.Paused:  # dockerd stops probing while paused, resumes on unpause
                continue
            probe_start = time.time_ns()
            try:
                result = await self.run_probe(c, probe, probe_start)
            except EngineError as e:
                result = _result(probe_start, -1, e.message)
            except Exception as e:  # a probe's failure is the probe's, never the monitor's end
                log.warning("health check for container %s: %s", c.id, e)
                result = _result(probe_start, -1, str(e))
            # Stopped meanwhile (the die event, which ends this task, comes after the exit is
            # saved): the result would be lost from disk, and is meaningless anyway.
            stale = not c.state.Running or c.state.Restarting or self.tasks.get(c.id) is not asyncio.current_task()
            if stale or c.state.Health is None:
                return
            if record(c.state.Health, result, probe, started_ns, probe_start):
                # Persisted on each change of status (the rest is saved with the next change of state).
                with contextlib.suppress(OSError):
                    self.containers.save(c, sync=False)
                self.containers.on_event("health_status: " + c.state.Health["Status"], c, {})

    async def run_probe(self, c: Container, probe: Probe, start_ns: int) -> dict[str, Any]:
        execs = self.containers.execs
        ex = execs.create_probe(c, probe.cmd)
        reader, writer = await execs.attach(ex)
        output = _LimitedBuffer()

        async def collect() -> None:
            pending = b""
            while chunk := await reader.read(65536):
                frames, pending = parse_frames(pending + chunk)
                for _, data in frames:
                    output.write(data)

        collector = asyncio.get_running_loop().create_task(collect())
        try:
            await asyncio.wait_for(execs.start(ex, c), START_WAIT)
            try:
                await asyncio.wait_for(ex.done.wait(), probe.timeout / SECOND)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await self.containers.supervisor.kill(ex.id, sig.SIGKILL)
                # Dying probes must not pile up: wait (bounded) for this one to go.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ex.done.wait(), SETTLE_WAIT)
                return _result(start_ns, -1, f"Health check exceeded timeout ({go_duration(probe.timeout)})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(collector), OUTPUT_WAIT)
            return _result(start_ns, ex.exit_code if ex.exit_code is not None else -1, output.text())
        finally:
            collector.cancel()
            with contextlib.suppress(BaseException):
                await collector
            writer.close()
            if ex.done.is_set():
                execs.probes.pop(ex.id, None)
