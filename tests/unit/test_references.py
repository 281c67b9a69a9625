"""Image reference parsing and normalisation."""

from __future__ import annotations

import pytest

from bocker_engine.errors import InvalidParameter
from bocker_engine.registry import reference as refs


def test_references() -> None:
    r = refs.parse("busybox")
    assert (r.domain, r.path, r.tag) == ("docker.io", "library/busybox", None)
    assert r.tagged_or_latest().familiar() == "busybox:latest"
    assert str(r.tagged_or_latest()) == "docker.io/library/busybox:latest"
    assert refs.parse("docker.io/library/busybox:1").familiar() == "busybox:1"
    assert refs.parse("index.docker.io/me/app").familiar() == "me/app"
    r = refs.parse("127.0.0.1:5000/me/box:1")
    assert (r.domain, r.path, r.tag) == ("127.0.0.1:5000", "me/box", "1")
    assert refs.parse("localhost/x").domain == "localhost"
    assert refs.parse("host:5000").tag == "5000"
    d = "sha256:" + "a" * 64
    assert refs.parse(f"me/app@{d}").digest == d
    assert refs.parse_repo_tag("x:v1", None).familiar() == "x:v1"
    assert refs.parse_repo_tag("docker.io/library/x", "v2").familiar() == "x:v2"
    assert refs.parse_repo_tag("x", d).digest == d
    with pytest.raises(InvalidParameter, match="must be lowercase"):
        refs.parse("Busybox")
    with pytest.raises(InvalidParameter, match="64-byte hexadecimal"):
        refs.parse("a" * 64)
    for bad in ("", "a b", "x:", "-x", "x@sha256:zz"):
        with pytest.raises(InvalidParameter):
            refs.parse(bad)
