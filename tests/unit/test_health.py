"""engine/health.py: the probe of a config, dockerd's transitions (handleProbeResult), the ps
suffix and the filter's status, Go durations in the timeout message."""

from __future__ import annotations

from typing import Any

from bocker_engine.engine.health import (
    DEFAULT_INTERVAL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_OUTPUT,
    SECOND,
    Probe,
    _LimitedBuffer,
    go_duration,
    new_health,
    record,
    status_of,
    suffix,
)
from bocker_engine.engine.state import State


def result(code: int) -> dict[str, Any]:
    return {"Start": "s", "End": "e", "ExitCode": code, "Output": ""}


def probe(retries: int = 3, start_period: int = 0) -> Probe:
    return Probe(["true"], SECOND, SECOND, retries, start_period)


def test_probe_of_config() -> None:
    assert Probe.of({}) is None
    assert Probe.of({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert Probe.of({"Healthcheck": {"Test": []}}) is None
    assert Probe.of({"Healthcheck": {"Test": ["BOGUS", "x"]}}) is None
    p = Probe.of({"Healthcheck": {"Test": ["CMD", "cat", "/x"]}})
    assert p == Probe(["cat", "/x"], DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_RETRIES, 0)
    p = Probe.of({"Healthcheck": {"Test": ["CMD-SHELL", "a && b"], "Interval": 2, "Timeout": 3, "Retries": 4,
                                  "StartPeriod": 5}})
    assert p == Probe(["/bin/sh", "-c", "a && b"], 2, 3, 4, 5)
    p = Probe.of({"Shell": ["/bin/bash", "-xc"], "Healthcheck": {"Test": ["CMD-SHELL", "x"]}})
    assert p is not None and p.cmd == ["/bin/bash", "-xc", "x"]


def test_success_makes_healthy_failures_count_to_retries() -> None:
    h = new_health()
    assert record(h, result(0), probe(2), 0, 10) is True
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 0)
    assert record(h, result(1), probe(2), 0, 10) is False
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 1)
    assert record(h, result(-1), probe(2), 0, 10) is True
    assert (h["Status"], h["FailingStreak"]) == ("unhealthy", 2)
    assert record(h, result(1), probe(2), 0, 10) is False
    assert h["FailingStreak"] == 3
    assert record(h, result(0), probe(2), 0, 10) is True
    assert (h["Status"], h["FailingStreak"]) == ("healthy", 0)


def test_start_period() -> None:
    h = new_health()
    # Within the start period while starting: failures do not count.
    for _ in range(5):
        assert record(h, result(1), probe(1, start_period=100), 0, 50) is False
    assert (h["Status"], h["FailingStreak"]) == ("starting", 0)
    # After it, they do.
    assert record(h, result(1), probe(1, start_period=100), 0, 100) is True
    assert (h["Status"], h["FailingStreak"]) == ("unhealthy", 1)
    # Once healthy, the start period no longer protects.
    h = new_health()
    record(h, result(0), probe(1, start_period=100), 0, 10)
    assert record(h, result(1), probe(1, start_period=100), 0, 20) is True
    assert h["Status"] == "unhealthy"


def test_log_keeps_last_five() -> None:
    h = new_health()
    for code in range(8):
        record(h, result(code), probe(100), 0, 1)
    assert [r["ExitCode"] for r in h["Log"]] == [3, 4, 5, 6, 7]


def test_suffix_status_and_state_text() -> None:
    assert suffix(None) == "" and status_of(None) == "none"
    assert suffix(new_health()) == " (health: starting)"
    assert suffix({"Status": "healthy"}) == " (healthy)"
    assert suffix({"Status": "unhealthy"}) == " (unhealthy)"
    s = State()
    s.set_running(1, 0)
    assert not s.text().endswith(")")
    s.Health = {"Status": "unhealthy", "FailingStreak": 3, "Log": []}
    assert s.text().endswith(" (unhealthy)")
    s.Paused = True
    assert s.text().endswith("(Paused)")
    assert "Health" not in State().to_json()
    assert State.from_json(s.to_json()).Health == s.Health


def test_go_duration_and_output_limit() -> None:
    assert go_duration(SECOND) == "1s"
    assert go_duration(30 * SECOND) == "30s"
    assert go_duration(1_500_000_000) == "1.5s"
    assert go_duration(90 * SECOND) == "1m30s"
    assert go_duration(3600 * SECOND) == "1h0m0s"
    assert go_duration(500_000_000) == "500ms"
    assert go_duration(1500) == "1.5µs"
    b = _LimitedBuffer()
    b.write(b"a" * (MAX_OUTPUT - 1))
    assert b.text() == "a" * (MAX_OUTPUT - 1)
    b.write(b"bc")
    assert b.text() == "a" * (MAX_OUTPUT - 1) + "b..."
