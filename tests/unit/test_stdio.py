"""Stream framing, RFC 3339 times and JSON progress messages."""

from __future__ import annotations

import json

from bocker_engine.api.streams import encode_message
from bocker_engine.logs import log_line
from bocker_engine.progress import Message
from bocker_engine.stdcopy import frame, parse_frames
from bocker_engine.timefmt import parse_rfc3339, rfc3339nano


def test_stdcopy_roundtrip_and_split() -> None:
    data = frame(1, b"hello") + frame(2, b"err") + frame(1, b"x" * 70000)
    frames, rest = parse_frames(data)
    assert rest == b""
    assert frames[0] == (1, b"hello") and frames[1] == (2, b"err")
    assert b"".join(p for s, p in frames[2:]) == b"x" * 70000
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x05"
    part, rest = parse_frames(data[:10])
    assert part == [] and rest == data[:10]


def test_times() -> None:
    ns = 1795934329452889897
    s = rfc3339nano(ns)
    assert s == "2026-11-29T06:38:49.452889897Z"
    assert parse_rfc3339(s) == ns
    assert parse_rfc3339("2026-11-29T07:38:49+01:00") == ns // 10**9 * 10**9
    line = json.loads(log_line("stdout", b"hi\n", ns))
    assert line == {"log": "hi\n", "stream": "stdout", "time": s}


def test_json_messages() -> None:
    assert encode_message(Message(status="Pulling fs layer", id="abc", detail=True)) == {
        "status": "Pulling fs layer", "progressDetail": {}, "id": "abc"}
    m = encode_message(Message(status="Downloading", id="abc", current=50, total=100))
    assert m["progressDetail"] == {"current": 50, "total": 100} and m["progress"].startswith("[")
    assert encode_message(Message(error="boom", error_code=7)) == {
        "errorDetail": {"message": "boom", "code": 7}, "error": "boom"}
    assert encode_message(Message(stream="Step 1/2\n")) == {"stream": "Step 1/2\n"}
