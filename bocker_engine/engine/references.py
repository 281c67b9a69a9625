"""Tags and digests pointing at image IDs, persisted as repositories.json like dockerd's."""

from __future__ import annotations

import os
import threading

from bocker_engine.engine.store import read_json, write_json
from bocker_engine.registry.reference import Reference


class ReferenceStore:
    def __init__(self, path: str) -> None:
        self.path = path
        # familiar reference ("busybox:latest", "me/app@sha256:...") -> image id
        self.refs: dict[str, str] = {}
        self.refs_full: dict[str, Reference] = {}
        self.lock = threading.Lock()

    def load(self) -> None:
        from bocker_engine.registry.reference import parse

        if not os.path.exists(self.path):
            return
        data = read_json(self.path).get("Repositories", {})
        for repo in data.values():
            for ref, image_id in repo.items():
                try:
                    r = parse(ref)
                except Exception:
                    continue
                self.refs[r.familiar()] = image_id
                self.refs_full[r.familiar()] = r

    def _save(self) -> None:
        repos: dict[str, dict[str, str]] = {}
        for key, image_id in sorted(self.refs.items()):
            r = self.refs_full[key]
            repos.setdefault(r.familiar_name, {})[key] = image_id
        write_json(self.path, {"Repositories": repos})

    def get(self, ref: Reference) -> str | None:
        return self.refs.get(ref.familiar())

    def add(self, ref: Reference, image_id: str) -> str | None:
        """Point `ref` at `image_id`; returns the image it pointed at before, if another."""
        key = ref.familiar()
        with self.lock:
            old = self.refs.get(key)
            self.refs[key] = image_id
            self.refs_full[key] = ref
            self._save()
        return old if old != image_id else None

    def delete(self, ref: Reference) -> bool:
        key = ref.familiar()
        with self.lock:
            if key not in self.refs:
                return False
            del self.refs[key]
            del self.refs_full[key]
            self._save()
        return True

    def for_image(self, image_id: str) -> list[Reference]:
        return [self.refs_full[k] for k, v in sorted(self.refs.items()) if v == image_id]

    def tags(self, image_id: str) -> list[str]:
        return [r.familiar() for r in self.for_image(image_id) if r.tag is not None]

    def digests(self, image_id: str) -> list[str]:
        return [r.familiar() for r in self.for_image(image_id) if r.digest is not None]
