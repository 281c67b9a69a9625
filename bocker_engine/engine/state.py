"""A container's State, and the human text `docker ps` shows for it (moby container/state.go)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, fields
from typing import Any

from bocker_engine.engine.health import suffix as health_suffix
from bocker_engine.timefmt import parse_rfc3339, rfc3339nano

ZERO_TIME = "0001-01-01T00:00:00Z"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(round(seconds / 3600))
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def _since(ts: str) -> float:
    try:
        return time.time() - parse_rfc3339(ts) / 1e9
    except ValueError:
        return 0.0


@dataclass
class State:
    Status: str = "created"
    Running: bool = False
    Paused: bool = False
    Restarting: bool = False
    OOMKilled: bool = False
    Dead: bool = False
    Pid: int = 0
    ExitCode: int = 0
    Error: str = ""
    StartedAt: str = ZERO_TIME
    FinishedAt: str = ZERO_TIME
    removing: bool = False
    # {Status, FailingStreak, Log} once a healthcheck ran (engine/health.py); omitted otherwise.
    Health: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # Not asdict(): it deep-copies, and inspect and ps call this for every container.
        d = {name: getattr(self, name) for name in _JSON_FIELDS}
        if self.Health is None:
            del d["Health"]
        else:
            d["Health"] = copy.deepcopy(self.Health)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def set_running(self, pid: int, started_ns: int) -> None:
        self.Status, self.Running, self.Paused, self.Restarting = "running", True, False, False
        self.Pid, self.ExitCode, self.Error, self.OOMKilled = pid, 0, "", False
        self.StartedAt = rfc3339nano(started_ns)

    def set_stopped(self, code: int, finished_ns: int | None = None, error: str = "") -> None:
        self.Status, self.Running, self.Paused, self.Restarting = "exited", False, False, False
        self.Pid, self.ExitCode, self.Error = 0, code, error
        self.FinishedAt = rfc3339nano(finished_ns)

    def set_restarting(self) -> None:
        """After set_stopped, when the restart policy will start it again: dockerd counts a
        restarting container as running (stop, rm and wait treat it so), with no process."""
        self.Status, self.Running, self.Restarting = "restarting", True, True

    def text(self) -> str:
        if self.Running:
            if self.Paused:
                return f"Up {human_duration(_since(self.StartedAt))} (Paused)"
            if self.Restarting:
                return f"Restarting ({self.ExitCode}) {human_duration(_since(self.FinishedAt))} ago"
            return f"Up {human_duration(_since(self.StartedAt))}{health_suffix(self.Health)}"
        if self.removing:
            return "Removal In Progress"
        if self.Dead:
            return "Dead"
        if self.StartedAt == ZERO_TIME:
            return "Created"
        if self.FinishedAt == ZERO_TIME:
            return ""
        return f"Exited ({self.ExitCode}) {human_duration(_since(self.FinishedAt))} ago"

    def status_word(self) -> str:
        """created|running|paused|restarting|removing|exited|dead, as lists and filters use."""
        if self.Running:
            if self.Paused:
                return "paused"
            if self.Restarting:
                return "restarting"
            return "running"
        if self.removing:
            return "removing"
        if self.Dead:
            return "dead"
        if self.StartedAt == ZERO_TIME:
            return "created"
        return "exited"


_JSON_FIELDS = tuple(f.name for f in fields(State) if f.name != "removing")
