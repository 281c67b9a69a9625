"""Restart policies: dockerd's restart manager (moby restartmanager/ and the monitor's use of it).

The decision is pure (`wants_restart`, `next_delay`, `Manager`); `Restarts` holds one manager and
at most one pending restart per container, and runs the pending restart as a task that can be
cancelled while it waits (stop, kill, rm -f, daemon shutdown) but never in the middle of a start.

dockerd's rules, kept here:
- no: never. always: after every exit. unless-stopped: unless the container was stopped or
  killed by hand (HasBeenManuallyStopped, persisted, cleared by the next `docker start`).
  on-failure[:N]: after a non-zero exit while fewer than N restarts were made (0: no limit).
- A stop, or a kill with SIGKILL, the container's StopSignal, or any signal when it has none,
  cancels the manager (ExitOnNext): the next exit is not restarted whatever the policy, until a
  `docker start`/`docker restart` makes a new manager (and resets RestartCount).
- Back-off: 100 ms before the first restart, doubled before each next one, at most 1 minute;
  back to 100 ms when the container had run for at least 10 s.
- Nothing is restarted while the daemon shuts down; at daemon start the policy is asked again
  (fresh manager) for every stopped container.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as sig
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bocker_engine.engine import signals

BACKOFF_START = 0.1
BACKOFF_MULTIPLIER = 2
BACKOFF_MAX = 60.0
# A run at least this long resets the back-off.
RESET_AFTER = 10.0


@dataclass(frozen=True)
class Policy:
    name: str = "no"
    max_retries: int = 0

    @classmethod
    def of(cls, host_config: dict[str, Any]) -> Policy:
        rp = host_config.get("RestartPolicy") or {}
        return cls(rp.get("Name") or "no", int(rp.get("MaximumRetryCount") or 0))

    @property
    def none(self) -> bool:
        return self.name in ("", "no")


def wants_restart(policy: Policy, exit_code: int, manually_stopped: bool, restart_count: int) -> bool:
    if policy.name == "always":
        return True
    if policy.name == "unless-stopped":
        return not manually_stopped
    if policy.name == "on-failure":
        return exit_code != 0 and (policy.max_retries == 0 or restart_count < policy.max_retries)
    return False


def next_delay(previous: float, ran_for: float) -> float:
    """The wait before the next restart, given the previous one (0: none yet)."""
    if ran_for >= RESET_AFTER:
        previous = 0.0
    if previous == 0:
        return BACKOFF_START
    return min(previous * BACKOFF_MULTIPLIER, BACKOFF_MAX) if previous < BACKOFF_MAX else BACKOFF_MAX


def kill_cancels(signum: int, stop_signal: str | None) -> bool:
    """Whether a kill with this signal means "do not restart" (dockerd's ExitOnNext)."""
    if stop_signal and signum != sig.SIGKILL:
        try:
            return signals.parse(stop_signal) == signum
        except Exception:
            return False
    return True


@dataclass
class Manager:
    """One container's restart manager (runtime only, like dockerd's)."""

    delay: float = 0.0
    cancelled: bool = False

    def on_exit(
        self, policy: Policy, exit_code: int, manually_stopped: bool, ran_for: float, restart_count: int
    ) -> float | None:
        """The delay before restarting after this exit, or None for no restart."""
        if policy.none or self.cancelled:
            return None
        # The back-off moves on every exit the policy looks at, restarted or not (dockerd).
        self.delay = next_delay(self.delay, ran_for)
        if not wants_restart(policy, exit_code, manually_stopped, restart_count):
            return None
        return self.delay


@dataclass
class _Pending:
    task: asyncio.Task[None]
    starting: bool = False


@dataclass
class Restarts:
    managers: dict[str, Manager] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    shutting_down: bool = False

    def manager(self, cid: str) -> Manager:
        return self.managers.setdefault(cid, Manager())

    def on_exit(
        self,
        cid: str,
        host_config: dict[str, Any],
        exit_code: int,
        manually_stopped: bool,
        ran_for: float,
        restart_count: int,
    ) -> float | None:
        if self.shutting_down:
            return None
        return self.manager(cid).on_exit(Policy.of(host_config), exit_code, manually_stopped, ran_for, restart_count)

    def exit_on_next(self, cid: str) -> None:
        self.manager(cid).cancelled = True

    def reset(self, cid: str) -> None:
        """A start by hand: a new manager (dockerd's ResetRestartManager)."""
        self.managers.pop(cid, None)

    def schedule(self, cid: str, delay: float, lock: asyncio.Lock, start: Callable[[], Awaitable[None]]) -> None:
        """Run `start` after `delay`, holding `lock`. Until the lock is held the restart can be
        cancelled; from then on it runs to its end (a start is never cut in half)."""

        async def run() -> None:
            try:
                await asyncio.sleep(delay)
                async with lock:
                    entry.starting = True
                    await start()
            finally:
                if self.pending.get(cid) is entry:
                    del self.pending[cid]

        entry = _Pending(asyncio.get_running_loop().create_task(run()))
        self.pending[cid] = entry

    async def cancel(self, cid: str) -> bool:
        """Cancel a pending restart. True if one was waiting and will not happen; False if there
        was none, or it had begun (then this returns once that start has ended)."""
        entry = self.pending.get(cid)
        if entry is None:
            return False
        if entry.starting:
            with contextlib.suppress(BaseException):
                await asyncio.shield(entry.task)
            return False
        # A task cancelled before it ever ran never reaches its `finally`.
        del self.pending[cid]
        entry.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await entry.task
        return True

    async def shutdown(self) -> list[str]:
        """No more restarts; cancel those waiting. Returns the containers whose restart was
        cancelled."""
        self.shutting_down = True
        cancelled = []
        for cid in list(self.pending):
            if await self.cancel(cid):
                cancelled.append(cid)
        return cancelled

    def forget(self, cid: str) -> None:
        self.managers.pop(cid, None)
