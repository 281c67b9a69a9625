"""RFC 3339 times as dockerd writes and reads them (logs, inspect, events, filters)."""

from __future__ import annotations

import calendar
import re
import time

_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def rfc3339nano(ns: int | None = None) -> str:
    """UTC time with exactly 9 fractional digits, as dockerd writes it in logs and inspect."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def parse_rfc3339(s: str) -> int:
    """RFC3339 (with or without fractional seconds, Z or offset) to unix nanoseconds."""
    m = _RFC3339.match(s)
    if not m:
        raise ValueError(f"bad time {s!r}")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(sec), 0, 0, 0))
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    ns = int((frac or "0")[:9].ljust(9, "0"))
    return secs * 1_000_000_000 + ns
