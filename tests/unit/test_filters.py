"""Filter parsing in both of the shapes clients send."""

from __future__ import annotations

import pytest

from bocker_engine.engine import filters as flt
from bocker_engine.errors import InvalidParameter
from bocker_engine.registry import reference as refs


def test_filters_both_shapes() -> None:
    assert flt.parse('{"label":{"a=b":true},"status":{"running":true}}') == {"label": ["a=b"], "status": ["running"]}
    assert flt.parse('{"label": ["a=b"]}') == {"label": ["a=b"]}
    with pytest.raises(InvalidParameter):
        flt.parse("not json")
    with pytest.raises(InvalidParameter, match="invalid filter 'x'"):
        flt.check({"x": []}, {"label"})
    assert flt.match_labels(["a", "b=2"], {"a": "1", "b": "2"})
    assert not flt.match_labels(["b=3"], {"b": "2"})
    assert not flt.match_labels(["b!=2"], {"b": "2"})
    assert flt.bool_filter({"dangling": ["true"]}, "dangling") is True
    with pytest.raises(InvalidParameter):
        flt.bool_filter({"dangling": ["maybe"]}, "dangling")
    assert flt.match_reference("me/*", refs.parse("me/box:1"))
    assert flt.match_reference("busybox", refs.parse("busybox:latest"))
    assert flt.match_reference("busybox:l*", refs.parse("busybox:latest"))
    assert not flt.match_reference("busybox:1", refs.parse("busybox:latest"))
    assert flt.parse_timestamp("10m", now=1000.0) == 400.0
    assert flt.parse_timestamp("1700000000.5") == 1700000000.5
