"""`filters` query parameters, parsed and matched like moby's api/types/filters."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from bocker_engine import jsonload
from bocker_engine.errors import InvalidParameter
from bocker_engine.registry.reference import Reference

Filters = dict[str, list[str]]


def parse(raw: str | None) -> Filters:
    """Both shapes: {"k":{"v":true}} (CLI) and {"k":["v"]} (docker-py); a bare string is also
    taken as one value. Other types are refused, like moby's FromJSON (Go's null: zero value)."""
    if not raw:
        return {}
    try:
        data: Any = jsonload.loads(raw)
    except ValueError:
        raise InvalidParameter(f"invalid filter: {raw if len(raw) <= 200 else raw[:200] + '...'}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filter: expected a JSON object")
    out: Filters = {}
    for key, value in data.items():
        if value is None:
            out[key] = []
        elif isinstance(value, dict):
            if not all(v is None or isinstance(v, bool) for v in value.values()):
                raise InvalidParameter(f"invalid filter value for {key}")
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list):
            if not all(v is None or isinstance(v, str) for v in value):
                raise InvalidParameter(f"invalid filter value for {key}")
            out[key] = [v or "" for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise InvalidParameter(f"invalid filter value for {key}")
    return out


def check(filters: Filters, allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


def bool_filter(filters: Filters, key: str) -> bool | None:
    values = filters.get(key)
    if not values:
        return None
    v = values[0].lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise InvalidParameter(f"invalid filter '{key}={values[0]}'")


def match_labels(wanted: list[str] | None, labels: dict[str, str]) -> bool:
    """label=key, label=key=value, and label!=... negations are all ANDed."""
    for w in wanted or []:
        if "!=" in w:
            k, v = w.split("!=", 1)
            if labels.get(k) == v:
                return False
            continue
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _match_kv_list(wanted: list[str], labels: dict[str, str]) -> bool:
    """moby's Args.MatchKVList: every `key` or `key=value` holds (and some labels exist)."""
    if not labels:
        return False
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def match_prune_labels(filters: Filters, labels: dict[str, str]) -> bool:
    """Prune's `label` and `label!` (moby's daemon matchLabels): every `label` holds, and not
    every `label!` does."""
    if filters.get("label") and not _match_kv_list(filters["label"], labels):
        return False
    return not (filters.get("label!") and _match_kv_list(filters["label!"], labels))


def match_reference(pattern: str, ref: Reference) -> bool:
    """`reference=busybox`, `busybox:1*`, `me/*`: glob against the familiar name (and tag)."""
    name = ref.familiar_name
    if ":" in pattern.rsplit("/", 1)[-1] or "@" in pattern:
        return fnmatch.fnmatchcase(ref.familiar(), pattern)
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(ref.name, pattern)


def parse_timestamp(value: str, now: float | None = None) -> float:
    """`until`/`since`: unix seconds (with fraction), RFC3339, or a Go duration like 10m."""
    import re

    from bocker_engine.timefmt import parse_rfc3339

    if now is None:
        now = time.time()
    if re.match(r"^\d+(\.\d+)?$", value):
        return float(value)
    m = re.match(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$", value)
    if m:
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return now - float(m.group(1)) * unit
    try:
        return parse_rfc3339(value) / 1e9
    except ValueError:
        pass
    try:
        return parse_rfc3339(value + "Z") / 1e9
    except ValueError:
        raise InvalidParameter(f"invalid timestamp or duration: {value!r}") from None


def until_filter(filters: Filters) -> float | None:
    values = filters.get("until")
    return parse_timestamp(values[0]) if values else None
