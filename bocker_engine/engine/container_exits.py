"""Exits and what follows them, mixed into ContainerService: recording an exit (also one the
supervisor never reported: a lost exit is settled once the process is gone), waiters, and the
restart policies' hooks (the decisions are engine/restart.py's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from bocker_engine.engine.container import Container, Waiter
from bocker_engine.engine.execs import ExecService
from bocker_engine.engine.restart import Policy, Restarts, wants_restart
from bocker_engine.errors import EngineError, InvalidParameter
from bocker_engine.runtime.cgroups import Cgroups
from bocker_engine.runtime.client import SupervisorClient
from bocker_engine.timefmt import parse_rfc3339

log = logging.getLogger(__name__)


class ContainerExits:
    """The exit half of the state machine; ContainerService provides the rest."""

    containers: dict[str, Container]
    cgroups: Cgroups
    supervisor: SupervisorClient
    execs: ExecService
    restarts: Restarts
    on_event: Callable[[str, Container, dict[str, str]], None]
    lost_exit_poll: float
    lost_exit_grace: float

    def get(self, ref: str) -> Container:
        raise NotImplementedError

    def save(self, c: Container, sync: bool = True, durable: bool = True) -> None:
        raise NotImplementedError

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        raise NotImplementedError

    async def _release(self, c: Container, drop_rootfs: bool = False) -> None:
        raise NotImplementedError

    async def _start_locked(self, c: Container) -> None:
        raise NotImplementedError

    # ---- exit -----------------------------------------------------------------------------

    async def on_supervisor_lost(self) -> None:
        """The supervisor died: nobody holds these containers' stdio or will report their exit.
        Stop what is left of them (their cgroup is killed on release) and record it."""
        for c in list(self.containers.values()):
            if c.state.Running:
                await self._stopped(c, 255, None, error="container supervisor exited unexpectedly")

    async def on_exit(self, event: dict[str, Any]) -> None:
        c = self.containers.get(event["id"])
        if c is None:
            if self.execs.owns(event["id"]):
                await self.execs.on_exit(event)
            return
        if c.starting and (not c.state.Running or c.state.Restarting):  # a restart policy's start too
            c.early_exit = event
            return
        await self._stopped(c, int(event.get("exit_code") or 0), event.get("finished_at"))

    async def _stopped(self, c: Container, code: int, finished_ns: int | None, error: str = "") -> None:
        if not c.state.Running or c.settling or c.state.Restarting:
            return
        c.settling = True
        try:
            oom = self._oom_killed(c)
            # AutoRemove excludes restart policies (create and update refuse both): the removal
            # follows for certain.
            policy = (c.host_config.get("RestartPolicy") or {}).get("Name") or "no"
            await self._release(c, drop_rootfs=bool(c.host_config.get("AutoRemove")) and policy == "no")
            c.state.set_stopped(code, finished_ns, error)
            c.state.OOMKilled = oom
        finally:
            c.settling = False
        delay = self._restart_delay(c)
        # A restart or an auto-removal follows at once and rewrites (or removes) this state;
        # after a machine crash the state before it serves as well (restore settles a
        # "running" container that is gone), so only a torn file must be ruled out then.
        self.save(c, durable=delay is None and not c.host_config.get("AutoRemove"))
        self.on_event("die", c, {"exitCode": str(code)})
        self._resolve_waiters(c, ("next-exit", "not-running"), code, "")
        c.notify()
        if delay is not None:
            self.restarts.schedule(c.id, delay, c.lock, lambda: self._restart_by_policy(c))
            return
        if c.host_config.get("AutoRemove"):
            with contextlib.suppress(EngineError):
                await self.remove(c.id, force=True)

    def _oom_killed(self, c: Container) -> bool:
        try:
            return self.cgroups.oom_killed(c.id)
        except Exception:
            return False

    async def settle_lost(self, c: Container, killed: bool = False) -> bool:
        """A container still "running" whose exit never arrived: if its process is gone, record
        the exit now. The code is the supervisor's when it knows it, else 137 after a SIGKILL
        (255, unknown, otherwise). Returns whether the container is no longer running."""
        if not c.state.Running:
            return True
        if c.starting or c.settling or c.state.Restarting:
            return False
        pid = c.state.Pid
        info = await self._recorded_exit(c.id, pid)
        if c.state.Running and c.state.Pid == pid and info is not None:
            await self._stopped(c, int(info["exit_code"]), info.get("finished_at"))
        if not c.state.Running or c.state.Pid != pid:
            return not c.state.Running
        if await asyncio.to_thread(self._process_alive, c.id, pid):
            return False
        # Gone, and no exit known yet: the supervisor may still be reading the last output
        # (it waits up to 2 s for that). Give the real exit a chance before settling blind.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.wait_future(c.id, "not-running")), self.lost_exit_grace)
        if not c.state.Running or c.state.Pid != pid:
            return not c.state.Running
        info = await self._recorded_exit(c.id, pid)
        if info is not None:
            await self._stopped(c, int(info["exit_code"]), info.get("finished_at"))
        else:
            log.warning("container %s: its process is gone but no exit was reported; settling it", c.id)
            await self._stopped(c, 137 if killed else 255, None)
        return not c.state.Running

    async def _recorded_exit(self, cid: str, pid: int) -> dict[str, Any] | None:
        """The supervisor's record of this run's exit, if it has one."""
        try:
            procs = await self.supervisor.list_procs()
        except Exception:
            return None
        info = next((p for p in procs if p.get("id") == cid), None)
        if info is None or info.get("running") or info.get("exit_code") is None:
            return None
        return info if info.get("pid") in (None, 0, pid) else None

    def _process_alive(self, cid: str, pid: int) -> bool:
        try:
            if self.cgroups.pids(cid):
                return True
        except Exception:
            pass  # no cgroup to ask: the pid alone decides
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie is gone too (its reaper is the one that lost track of it).
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    async def wait_exit(self, ref: str, fut: asyncio.Future[tuple[int, str]]) -> tuple[int, str]:
        """Await a waiter, looking now and then for an exit that was lost (the API's wait)."""
        cid = ""
        with contextlib.suppress(EngineError):
            cid = self.get(ref).id
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.lost_exit_poll * 4)
            except TimeoutError:
                c = self.containers.get(cid)
                if c is not None and c.state.Running:
                    await self.settle_lost(c)

    # ---- wait -----------------------------------------------------------------------------

    def _resolve_waiters(self, c: Container, conditions: tuple[str, ...], code: int, error: str) -> None:
        keep = []
        for w in c.waiters:
            if w.condition in conditions:
                if not w.future.done():
                    w.future.set_result((code, error))
            else:
                keep.append(w)
        c.waiters = keep

    def wait_future(self, ref: str, condition: str) -> asyncio.Future[tuple[int, str]]:
        """Register a waiter now (so `docker run` can send start after the headers)."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: {condition!r}")
        c = self.get(ref)
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not c.state.Running:
            fut.set_result((c.state.ExitCode, c.state.Error))
            return fut
        c.waiters.append(Waiter(condition, fut))
        return fut

    # ---- restart policies (the decisions are engine/restart.py's) ---------------------------

    def _restart_delay(self, c: Container) -> float | None:
        """After an exit was recorded: whether (and when) the policy restarts the container.
        If it does, the container is "restarting" from now on."""
        ran_for = _seconds_between(c.state.StartedAt, c.state.FinishedAt)
        delay = self.restarts.on_exit(
            c.id, c.host_config, c.state.ExitCode, c.manually_stopped, ran_for, c.restart_count
        )
        if delay is not None:
            c.restart_count += 1
            c.state.set_restarting()
        return delay

    async def _restart_by_policy(self, c: Container) -> None:
        if c.id not in self.containers or not c.state.Restarting or c.state.removing:
            return
        try:
            await self._start_locked(c)
        except Exception as e:  # recorded by _start_failed; like dockerd, no further attempt
            log.warning("restarting container %s: %s", c.id, e)
            self._resolve_waiters(c, ("next-exit", "not-running"), c.state.ExitCode, "")

    async def _halt_restart(self, c: Container, cancels: bool) -> bool:
        """A stop or kill by hand: no restart after it (dockerd's ExitOnNext when `cancels`, and
        HasBeenManuallyStopped unless the daemon is shutting down). True if a pending restart was
        cancelled (the container is now exited); a restart already starting is waited for."""
        if cancels:
            self.restarts.exit_on_next(c.id)
        if not self.restarts.shutting_down and not c.manually_stopped:
            c.manually_stopped = True
            self.save(c)
        if not cancels or not await self.restarts.cancel(c.id) or not c.state.Restarting:
            return False
        self._restart_cancelled(c)
        return True

    def _restart_cancelled(self, c: Container) -> None:
        if not c.state.Restarting:
            return
        c.state.set_stopped(c.state.ExitCode)
        self.save(c)
        self._resolve_waiters(c, ("next-exit", "not-running"), c.state.ExitCode, "")
        c.notify()

    def _reset_restarts(self, c: Container) -> None:
        """A start by hand: a fresh restart manager, RestartCount 0 (dockerd's containerStart
        with resetRestartManager)."""
        self.restarts.reset(c.id)
        c.restart_count = 0
        c.manually_stopped = False

    def _restart_at_boot(self, c: Container) -> bool:
        """dockerd's restore: a stopped container whose policy would restart it (a fresh manager,
        so a stop by hand only counts for unless-stopped) is started with the daemon."""
        policy = Policy.of(c.host_config)
        return not policy.none and wants_restart(policy, c.state.ExitCode, c.manually_stopped, c.restart_count)

    async def _start_at_boot(self, c: Container) -> None:
        async with c.lock:
            if c.state.Running or c.state.removing or c.id not in self.containers:
                return
            self._reset_restarts(c)
            await self._start_locked(c)


def _seconds_between(start: str, end: str) -> float:
    try:
        return max(0.0, (parse_rfc3339(end) - parse_rfc3339(start)) / 1e9)
    except ValueError:
        return 0.0

