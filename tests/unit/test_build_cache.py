"""The --cache-from image cache (build/cache.py): dockerd's history and layer matching."""

from __future__ import annotations

import json
from typing import Any

from bocker_engine.build.cache import SourceCache, is_valid_parent, layer_for_history_index
from bocker_engine.engine.images import Image, image_id_of


def _img(history: list[dict[str, Any]], diff_ids: list[str], parent: str = "") -> Image:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    raw = json.dumps(config).encode()
    return Image(image_id_of(raw), raw, config, parent)


BASE_H: list[dict[str, Any]] = [{"created": "t0", "created_by": "ADD rootfs"}]
STEPS: list[dict[str, Any]] = [
    {"created": "t1", "created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True},
    {"created": "t2", "created_by": "/bin/sh -c echo hi > /x"},
    {"created": "t3", "created_by": '/bin/sh -c #(nop)  CMD ["sh"]', "empty_layer": True},
]


def _cache(sources: list[Image], images: dict[str, Image]) -> SourceCache:
    def store(raw: bytes, parent: str) -> Image:
        img = Image(image_id_of(raw), raw, json.loads(raw), parent)
        images.setdefault(img.id, img)
        return images[img.id]

    def set_parent(img: Image, parent: str) -> None:
        img.parent = parent

    return SourceCache(sources, lambda i: images[i].parent if i in images else "", store, set_parent)


def test_valid_parent_is_a_prefix_of_history_and_layers() -> None:
    base = _img(BASE_H, ["sha256:a"])
    target = _img(BASE_H + STEPS, ["sha256:a", "sha256:b"])
    assert is_valid_parent(target, base)
    assert is_valid_parent(target, None)
    assert not is_valid_parent(target, _img([{"created": "other", "created_by": "ADD rootfs"}], ["sha256:a"]))
    assert not is_valid_parent(target, _img(BASE_H, ["sha256:z"]))
    assert not is_valid_parent(base, target)
    assert not is_valid_parent(_img([], []), None)


def test_layer_for_history_index_skips_empty_layers() -> None:
    target = _img(BASE_H + STEPS, ["sha256:a", "sha256:b"])
    assert layer_for_history_index(target, 0) == "sha256:a"
    assert layer_for_history_index(target, 1) == ""
    assert layer_for_history_index(target, 2) == "sha256:b"
    assert layer_for_history_index(_img(BASE_H + STEPS, ["sha256:a"]), 2) is None


def test_steps_restored_from_a_source_then_the_source_itself() -> None:
    base = _img(BASE_H, ["sha256:a"])
    target = _img(BASE_H + STEPS, ["sha256:a", "sha256:b"])
    images = {base.id: base, target.id: target}
    cache = _cache([target], images)
    assert cache.probe(base, "/bin/sh -c echo other", {}, None) is None
    step1 = cache.probe(base, STEPS[0]["created_by"], {"Env": ["A=1"]}, None)
    assert step1 is not None and step1.parent == base.id
    assert step1.config["history"] == BASE_H + STEPS[:1] and step1.diff_ids == ["sha256:a"]
    assert step1.config["created"] == "t1" and step1.config["config"] == {"Env": ["A=1"]}
    step2 = cache.probe(step1, STEPS[1]["created_by"], {}, None)
    assert step2 is not None and step2.diff_ids == ["sha256:a", "sha256:b"]
    last = cache.probe(step2, STEPS[2]["created_by"], {}, None)
    assert last is target and target.parent == step2.id


def test_local_hits_only_when_an_ancestor_of_a_source() -> None:
    base = _img(BASE_H, ["sha256:a"])
    local = _img(BASE_H + STEPS[:1], ["sha256:a"], parent=base.id)
    child = _img(BASE_H + STEPS[:2], ["sha256:a", "sha256:b"], parent=local.id)
    images = {i.id: i for i in (base, local, child)}
    assert _cache([child], images).probe(base, STEPS[0]["created_by"], {}, local) is local
    assert _cache([], images).probe(base, STEPS[0]["created_by"], {}, local) is None
