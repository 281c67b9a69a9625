"""Detach keys: Docker's syntax and the scanner over stdin chunks."""

from __future__ import annotations

import pytest

from bocker_engine.engine.detach_keys import DEFAULT, EscapeScanner, parse, to_bytes
from bocker_engine.errors import InvalidParameter


def test_syntax() -> None:
    assert to_bytes("ctrl-p,ctrl-q") == b"\x10\x11"
    assert to_bytes("ctrl-@,ctrl-a,ctrl-z,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes([0, 1, 26, 27, 28, 29, 30, 31])
    assert to_bytes("a,DEL,X") == b"a\x7fX"
    assert parse("") == parse(None) == DEFAULT
    with pytest.raises(InvalidParameter, match=r"Invalid detach keys \(ctrl-foo\) provided"):
        parse("ctrl-foo")
    with pytest.raises(InvalidParameter, match=r"Invalid escape keys \(ctrl-P\) provided"):
        parse("ctrl-P", "escape")  # case matters, as in moby/term


def test_scanner_across_chunks() -> None:
    s = EscapeScanner(b"\x10\x11")
    assert s.feed(b"ab\x10") == (b"ab", False)  # a partial match is held back
    assert s.feed(b"\x11rest") == (b"", True)
    s = EscapeScanner(b"\x10\x11")
    assert s.feed(b"\x10") == (b"", False)
    assert s.feed(b"x") == (b"\x10x", False)  # broken: passed on as typed
    assert s.feed(b"\x10\x10\x11") == (b"\x10", True)
    s = EscapeScanner(b"")
    assert s.feed(b"\x10\x11") == (b"\x10\x11", False)


def test_scanner_single_key() -> None:
    s = EscapeScanner(b"\x01")
    assert s.feed(b"xy\x01z") == (b"xy", True)
