"""Request bodies typed like Go decodes them; depth-limited JSON; filters JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bocker_engine import jsonload
from bocker_engine.api.validation import TYPES_PATH, parse_body
from bocker_engine.engine import filters as flt
from bocker_engine.errors import InvalidParameter
from tests.request_types import generate, render


def _error(raw: bytes | str, op: str = "ContainerCreate") -> str:
    with pytest.raises(InvalidParameter) as e:
        parse_body(raw.encode() if isinstance(raw, str) else raw, op)
    return e.value.message


def _ok(body: Any, op: str = "ContainerCreate") -> Any:
    return parse_body(json.dumps(body).encode(), op)


def test_generated_types_are_up_to_date() -> None:
    with open(TYPES_PATH) as f:
        assert f.read() == render(generate()), "run `make request-types`"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '{"Image":[null]}',
            "invalid JSON: json: cannot unmarshal array into Go struct field ContainerConfigWrapper.Image "
            "of type string",
        ),
        (
            '{"Image":"busybox","HostConfig":{"Memory":"lots"}}',
            "invalid JSON: json: cannot unmarshal string into Go struct field HostConfig.HostConfig.Memory "
            "of type int64",
        ),
        (
            '{"Image":"busybox","HostConfig":{"NetworkMode":1}}',
            "invalid JSON: json: cannot unmarshal number into Go struct field HostConfig.HostConfig.NetworkMode "
            "of type string",
        ),
        (
            '{"Image":"busybox","HostConfig":{"Memory":1.5}}',
            "invalid JSON: json: cannot unmarshal number 1.5 into Go struct field HostConfig.HostConfig.Memory "
            "of type int64",
        ),
        (
            '{"Image":"busybox","HostConfig":{"Ulimits":[{"Name":"nofile","Soft":"1"}]}}',
            "invalid JSON: json: cannot unmarshal string into Go struct field Ulimit.HostConfig.Ulimits.Soft "
            "of type int",
        ),
        (
            '{"Image":"busybox","Labels":{"a":1}}',
            "invalid JSON: json: cannot unmarshal number into Go struct field ContainerConfigWrapper.Labels "
            "of type string",
        ),
        (
            '{"Image":"busybox","Cmd":{"a":1}}',
            "invalid JSON: json: cannot unmarshal object into Go struct field ContainerConfigWrapper.Cmd "
            "of type strslice.StrSlice",
        ),
        ("[1]", "invalid JSON: json: cannot unmarshal array into Go value of type ContainerConfigWrapper"),
        ('"x"', "invalid JSON: json: cannot unmarshal string into Go value of type ContainerConfigWrapper"),
        (
            '{"Image":"busybox","HostConfig":"x"}',
            "invalid JSON: json: cannot unmarshal string into Go struct field ContainerConfigWrapper.HostConfig "
            "of type HostConfig",
        ),
    ],
)
def test_wrong_types_are_refused_in_gos_words(body: str, message: str) -> None:
    assert _error(body) == message


def test_integers_like_go() -> None:
    # Go parses integers with strconv: no fraction, no exponent, within the type's range.
    assert "number 1000000000.0" in _error('{"HostConfig":{"Memory":1e9}}')
    assert "of type int64" in _error('{"HostConfig":{"Memory":9223372036854775808}}')
    assert _ok({"HostConfig": {"Memory": 9223372036854775807}})["HostConfig"]["Memory"] == 9223372036854775807
    assert "of type bool" in _error('{"Tty":1}')
    assert "of type int64" in _error('{"HostConfig":{"Memory":true}}')
    assert "string into Go struct field TmpfsOptions.HostConfig.Mounts.TmpfsOptions.SizeBytes of type int64" in (
        _error('{"HostConfig":{"Mounts":[{"TmpfsOptions":{"SizeBytes":"1"}}]}}')
    )
    assert "number -1 into Go struct field SwarmInitRequest.DataPathPort of type uint32" in _error(
        '{"DataPathPort":-1}', "SwarmInit"
    )


def test_go_null_and_case_semantics() -> None:
    body = _ok(
        {
            "image": "busybox",  # Go matches field names case-insensitively
            "Env": None,
            "Labels": {"a": None},
            "Entrypoint": ["sh", None],
            "Cmd": "true",  # strslice.StrSlice: a string is one element
            "HostConfig": {"Memory": None, "Dns": [None], "Bogus": {"x": [1]}},
            "Unknown": [[1]],  # ignored, as by Go
        }
    )
    assert body == {
        "Image": "busybox",
        "Labels": {"a": ""},
        "Entrypoint": ["sh", ""],
        "Cmd": "true",
        "HostConfig": {"Dns": [""], "Bogus": {"x": [1]}},
        "Unknown": [[1]],
    }
    assert parse_body(b"null", "ContainerCreate", {}) == {}
    assert parse_body(b"  ", "ContainerCreate", {}) == {}
    # The last spelling of a field wins, like Go's decoder.
    assert _ok({"Image": "a", "IMAGE": "b"}) == {"Image": "b"}


def test_other_operations() -> None:
    assert _ok({"username": "u", "password": "p"}, "SystemAuth") == {"username": "u", "password": "p"}
    assert "Go struct field AuthConfig.password of type string" in _error('{"password":1}', "SystemAuth")
    assert "of type []string" in _error('{"Cmd":"sh"}', "ContainerExec")


def test_invalid_json() -> None:
    assert _error("{").startswith("invalid JSON: ")
    assert _error(b"\xff\xfe").startswith("invalid JSON: ")


@pytest.mark.parametrize("raw", ["[" * 100_000, "[" * 300 + "]" * 300, '{"a":' * 300 + "1" + "}" * 300])
def test_deep_nesting_is_refused(raw: str) -> None:
    assert _error(raw) == "invalid JSON: exceeded max depth"
    with pytest.raises(jsonload.JSONError):
        jsonload.loads(raw)
    with pytest.raises(InvalidParameter):
        flt.parse(raw)


def test_depth() -> None:
    assert jsonload.depth(1) == 0
    assert jsonload.depth([]) == 1
    assert jsonload.depth({"a": [1, {"b": []}], "c": 2}) == 4
    ok = "[" * jsonload.MAX_DEPTH + "]" * jsonload.MAX_DEPTH
    assert jsonload.depth(jsonload.loads(ok)) == jsonload.MAX_DEPTH
    # Many brackets side by side are not deep.
    assert len(jsonload.loads("[" + ",".join(["[]"] * 1000) + "]")) == 1000


def test_filters_types() -> None:
    assert flt.parse('{"label":{"a=b":true,"c":false}}') == {"label": ["a=b"]}
    assert flt.parse('{"label":["a=b",null]}') == {"label": ["a=b", ""]}
    assert flt.parse('{"label":null}') == {"label": []}
    assert flt.parse("null") == {}
    for raw in ('{"label":{"a":"yes"}}', '{"label":[1]}', '{"label":1}', "[]", '{"label":{"a":{"b":true}}}'):
        with pytest.raises(InvalidParameter):
            flt.parse(raw)
