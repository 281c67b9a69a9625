"""Signal names and numbers."""

from __future__ import annotations

import pytest

from bocker_engine.engine import signals
from bocker_engine.errors import InvalidParameter


def test_signals() -> None:
    assert signals.parse("TERM") == 15 == signals.parse("SIGTERM") == signals.parse("15")
    assert signals.parse(None) == 9
    assert signals.parse("usr1") == 10
    assert signals.parse("SIGRTMIN+1") > 32
    for bad in ("NOPE", "0", "999"):
        with pytest.raises(InvalidParameter):
            signals.parse(bad)
