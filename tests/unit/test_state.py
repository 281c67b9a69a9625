"""Container state text and durations, as docker ps shows them."""

from __future__ import annotations

from bocker_engine.engine.state import State, human_duration


def test_human_duration() -> None:
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(61) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"


def test_state_text() -> None:
    st = State()
    assert st.text() == "Created" and st.status_word() == "created"
    st.set_running(42, 10**18)
    assert st.text().startswith("Up ") and st.status_word() == "running"
    st.Paused = True
    assert st.text().endswith("(Paused)") and st.status_word() == "paused"
    st.set_stopped(3)
    assert st.text().startswith("Exited (3) ") and st.text().endswith(" ago")
