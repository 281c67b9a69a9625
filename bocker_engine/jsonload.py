"""JSON from clients, parsed without letting its shape hurt the daemon.

Python's decoder recurses once per nesting level: 100 000 `[` raise RecursionError, and a
document just under the interpreter's limit parses but breaks whatever recurses over it later
(copy.deepcopy, json.dumps when the state is saved). So client JSON is limited to MAX_DEPTH
levels. Go's decoder allows 10 000; no Docker API payload nests beyond a dozen.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 256


class JSONError(ValueError):
    """The text is not JSON we accept; str() is the reason, in Go's wording where it has one."""


def loads(raw: str | bytes) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JSONError("exceeded max depth") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise JSONError(str(e)) from None
    # Counting brackets is done in C and bounds the depth; only a document with many of them
    # needs the exact (Python-speed) walk.
    opening = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    if opening > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise JSONError("exceeded max depth")
    return value


def depth(value: Any) -> int:
    """Nesting depth of arrays and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        d += 1
        deepest = max(deepest, d)
        stack.extend((c, d) for c in children if isinstance(c, (dict, list)))
    return deepest
