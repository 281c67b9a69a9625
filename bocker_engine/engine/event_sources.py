"""What the engine's objects report to the event log, with dockerd's attributes and order.

Containers: labels, then `image` and `name` (dockerd's LogContainerEventWithAttributes, where
the fixed attributes win over labels of the same name); `die` carries exitCode and
execDuration and is preceded by `oom` when the kernel killed the container. A container's
network endpoints report `network connect` just before its `start` and `network disconnect`
right after its `die`, as dockerd's sandbox setup and cleanup do.
Images: labels of the image plus `name` (dockerd's LogImageEvent); `untag` and `delete` name
the image by its ID.
Volumes: a volume service reports through `volume(...)` (create, mount, unmount, destroy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bocker_engine.engine.events import Events

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.images import ImageService
    from bocker_engine.engine.networks import NetworkService


class EventSources:
    def __init__(self, events: Events, images: ImageService, networks: NetworkService | None) -> None:
        self.events = events
        self.images = images
        self.networks = networks
        # Endpoints announced at start, announced again as disconnected after the exit (the
        # sandbox is already gone when `die` is reported).
        self._connected: dict[str, list[tuple[str, str, str]]] = {}

    # ---- containers -------------------------------------------------------------------------

    def container(self, action: str, c: Container, extra: dict[str, str]) -> None:
        if action == "start":
            self._connect(c)
        if action == "die":
            if c.state.OOMKilled:
                self._container("oom", c, {})
            extra = {**extra, "execDuration": str(_exec_seconds(c))}
        self._container(action, c, extra)
        if action == "die":
            for nid, name, kind in self._connected.pop(c.id, []):
                self.events.publish("network", "disconnect", nid, {"container": c.id, "name": name, "type": kind})

    def _container(self, action: str, c: Container, extra: dict[str, str]) -> None:
        attrs = dict(extra)
        attrs.update(c.config.get("Labels") or {})
        if c.config.get("Image"):
            attrs["image"] = c.config["Image"]
        attrs["name"] = c.name.lstrip("/")
        self.events.publish("container", action, c.id, attrs)

    def _connect(self, c: Container) -> None:
        sb = self.networks.sandboxes.get(c.id) if self.networks is not None else None
        if sb is None or self.networks is None:
            return
        done = []
        for name, ep in sb.endpoints.items():
            n = self.networks.networks.get(ep.network_id)
            kind = n.driver if n is not None else "bridge"
            self.events.publish("network", "connect", ep.network_id, {"container": c.id, "name": name, "type": kind})
            done.append((ep.network_id, name, kind))
        if done:
            self._connected[c.id] = done

    # ---- images -----------------------------------------------------------------------------

    def image(self, action: str, image_id: str, name: str) -> None:
        attrs: dict[str, str] = {}
        found = self.images.find_quiet(image_id) if image_id else None
        img = self.images.images.get(found) if found else None
        if img is not None:
            attrs.update(img.container_config.get("Labels") or {})
        if name:
            attrs["name"] = name
        self.events.publish("image", action, image_id, attrs)

    def image_records(self, records: list[dict[str, Any]] | None, known: set[str], default_id: str = "") -> None:
        """`untag` and `delete` events from an image delete or prune answer. An Untagged record
        belongs to the next image deleted after it (or to `default_id` when none is)."""
        pending = 0
        recs = records or []
        for rec in recs:
            if "Untagged" in rec:
                pending += 1
                continue
            image_id = rec.get("Deleted", "")
            if image_id not in known:
                continue  # a layer
            for _ in range(pending):
                self.image("untag", image_id, image_id)
            pending = 0
            self.image("delete", image_id, image_id)
        for _ in range(pending):
            self.image("untag", default_id, default_id)

    # ---- volumes (the hook for the volume service) -------------------------------------------

    def volume(self, action: str, name: str, driver: str = "local", extra: dict[str, str] | None = None) -> None:
        self.events.publish("volume", action, name, {"driver": driver, **(extra or {})})

    # ---- prune ------------------------------------------------------------------------------

    def pruned(self, type_: str, reclaimed: int | None = None) -> None:
        attrs = {"reclaimed": str(reclaimed)} if reclaimed is not None else {}
        self.events.publish(type_, "prune", "", attrs)


def _exec_seconds(c: Container) -> int:
    from bocker_engine.timefmt import parse_rfc3339

    try:
        return max(0, (parse_rfc3339(c.state.FinishedAt) - parse_rfc3339(c.state.StartedAt)) // 1_000_000_000)
    except ValueError:
        return 0
