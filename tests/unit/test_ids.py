"""ID-prefix lookup, generated names and layer chain IDs."""

from __future__ import annotations

import pytest

from bocker_engine.engine.ids import by_prefix, lookup, random_name
from bocker_engine.engine.layers import chain_ids
from bocker_engine.errors import InvalidParameter, NotFound


def test_lookup_and_names() -> None:
    ids = {"abc1" + "0" * 60: 1, "abc2" + "0" * 60: 2, "def" + "0" * 61: 3}
    names = {"web": "def" + "0" * 61}
    assert lookup("web", ids, names, "x") == 3
    assert lookup("/web", ids, names, "x") == 3
    assert lookup("abc1", ids, names, "x") == 1
    with pytest.raises(InvalidParameter, match="multiple IDs found with provided prefix: abc"):
        lookup("abc", ids, names, "x")
    with pytest.raises(NotFound, match="No such container: zz"):
        lookup("zz", ids, names, "No such container: zz")
    assert by_prefix("not-hex", ids) is None
    taken = {"a"}
    name = random_name(lambda n: n in taken)
    assert "_" in name and name != "boring_wozniak"


def test_chain_ids() -> None:
    import hashlib

    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    c = chain_ids([a, b])
    assert c[0] == a
    assert c[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
