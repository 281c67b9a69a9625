"""`--cache-from`: dockerd's history-based image cache (moby daemon/images/cache.go, ImageCache).

A pulled image has no parent links, so the local cache (children of the step's parent) never
finds its steps. With cache sources, a step matches a source image when the parent's history and
layers are a prefix of the source's and the source's next history entry was made by the same
instruction (`created_by`). The step's image is then the source itself (its last step, which
gets the parent link dockerd sets) or an image restored from the source's history and layers up
to that step. A local hit is only taken when it is an ancestor of a source: with `--cache-from`
dockerd does not use unrelated local images as cache either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bocker_engine.engine.images import Image


def history_of(img: Image) -> list[dict[str, Any]]:
    hist = img.config.get("history")
    return [h for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []


def is_valid_parent(img: Image, parent: Image | None) -> bool:
    """dockerd's isValidParent: `parent`'s history and layers start `img`'s."""
    hist = history_of(img)
    if not hist:
        return False
    if parent is None:
        return True
    phist = history_of(parent)
    if not phist and not parent.diff_ids:
        return True
    if len(phist) >= len(hist) or len(parent.diff_ids) > len(img.diff_ids):
        return False
    return hist[: len(phist)] == phist and img.diff_ids[: len(parent.diff_ids)] == parent.diff_ids


def layer_for_history_index(img: Image, index: int) -> str | None:
    """The diff ID the history entry `index` added; "" for an empty layer, None when the
    image's history and layers disagree (dockerd would index out of range)."""
    hist = history_of(img)
    if hist[index].get("empty_layer"):
        return ""
    layer_index = sum(1 for h in hist[:index] if not h.get("empty_layer"))
    ids = img.diff_ids
    return ids[layer_index] if layer_index < len(ids) else None


def restored_config(parent: Image | None, target: Image, index: int, diff_id: str, config: dict[str, Any]) -> bytes:
    """The image of step `index` of `target`, on `parent` (dockerd's restoreCachedImage)."""
    history = [*(history_of(parent) if parent is not None else []), history_of(target)[index]]
    diff_ids = [*(parent.diff_ids if parent is not None else []), *([diff_id] if diff_id else [])]
    out: dict[str, Any] = {}
    if target.config.get("author"):
        out["author"] = target.config["author"]
    out.update(
        {
            "architecture": target.config.get("architecture", ""),
            "config": config,
            "created": history[-1].get("created", ""),
            "history": history,
            "os": target.config.get("os", ""),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    return json.dumps(out, separators=(",", ":")).encode()


class SourceCache:
    """The cache of one build stage over its `--cache-from` images (dockerd resets it per stage)."""

    def __init__(
        self,
        sources: list[Image],
        parent_of: Callable[[str], str],
        store: Callable[[bytes, str], Image],
        set_parent: Callable[[Image, str], None],
    ) -> None:
        self.sources = list(sources)
        self.parent_of = parent_of
        self.store = store
        self.set_parent = set_parent

    def _is_ancestor(self, img_id: str, ancestor: str) -> bool:
        seen: set[str] = set()
        cur = self.parent_of(img_id)
        while cur and cur not in seen:
            if cur == ancestor:
                return True
            seen.add(cur)
            cur = self.parent_of(cur)
        return False

    def probe(self, parent: Image | None, created_by: str, config: dict[str, Any], local: Image | None) -> Image | None:
        """Blocking (it may write an image): the cached image of this step, or None."""
        if local is not None and any(self._is_ancestor(s.id, local.id) for s in self.sources):
            return local
        n = len(history_of(parent)) if parent is not None else 0
        for target in self.sources:
            if not is_valid_parent(target, parent):
                continue
            hist = history_of(target)
            if hist[n].get("created_by", "") != created_by:
                continue
            if len(hist) - 1 == n:
                if parent is not None and target.parent != parent.id:
                    self.set_parent(target, parent.id)
                return target
            diff_id = layer_for_history_index(target, n)
            if diff_id is None:
                continue
            img = self.store(restored_config(parent, target, n, diff_id, config), parent.id if parent else "")
            self.sources = [target]  # like dockerd: no jumping to another source from here on
            return img
        return None
