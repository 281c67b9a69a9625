"""Signal names and numbers as the CLI and docker-py send them (TERM, SIGTERM, 15)."""

from __future__ import annotations

import signal

from bocker_engine.errors import InvalidParameter


def parse(value: str | int | None, default: int = signal.SIGKILL) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, int) or str(value).isdigit():
        num = int(value)
        if num <= 0 or num >= signal.NSIG:
            raise InvalidParameter(f"Invalid signal: {value}")
        return num
    name = str(value).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    # SIGRTMIN+3 style names.
    if name.startswith("SIGRTMIN+") and name[9:].isdigit():
        return int(signal.SIGRTMIN) + int(name[9:])
    if name.startswith("SIGRTMAX-") and name[9:].isdigit():
        return int(signal.SIGRTMAX) - int(name[9:])
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidParameter(f"Invalid signal: {value}") from None
