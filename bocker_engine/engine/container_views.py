"""What `docker ps` and `docker inspect` show of containers: summaries, inspect documents, sizes."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from bocker_engine.engine import filters as flt
from bocker_engine.engine import health
from bocker_engine.errors import InvalidParameter
from bocker_engine.timefmt import parse_rfc3339

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.execs import ExecService
    from bocker_engine.engine.images import ImageService
    from bocker_engine.engine.layers import LayerStore
    from bocker_engine.engine.networks import NetworkService
    from bocker_engine.storage.driver import Driver


class ContainerViews:
    """Read-only views, mixed into ContainerService (they read its stores, change nothing)."""

    containers: dict[str, Container]
    images: ImageService
    layers: LayerStore
    driver: Driver
    networks: NetworkService | None
    execs: ExecService

    def get(self, ref: str) -> Container:
        raise NotImplementedError

    async def sizes(self, c: Container) -> tuple[int, int]:
        rw = self.layers.mounts.get(c.id)
        if rw is None:
            return 0, 0
        size_rw = await asyncio.to_thread(self.driver.diff_size, rw.mount_id, rw.init_id)
        img = self.images.images.get(c.image_id)
        return size_rw, size_rw + (self.images.size(img) if img else 0)

    async def list_containers(self, all: bool, limit: int, size: bool, filters: flt.Filters) -> list[dict[str, Any]]:
        flt.check(
            filters,
            {
                "id",
                "name",
                "label",
                "status",
                "ancestor",
                "exited",
                "before",
                "since",
                "health",
                "network",
                "volume",
                "publish",
                "expose",
                "isolation",
                "is-task",
            },
        )
        for s in filters.get("status", []):
            if s not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
                raise InvalidParameter(f"invalid filter 'status={s}'")
        for h in filters.get("health", []):
            if h not in health.FILTER_VALUES:
                raise InvalidParameter(f"Unrecognised filter value for health: {h}")
        exited = []
        for e in filters.get("exited", []):
            try:
                exited.append(int(e))
            except ValueError:
                raise InvalidParameter(f"invalid filter 'exited={e}'") from None
        ancestors = self._ancestor_ids(filters.get("ancestor", []))
        before = self.get(filters["before"][0]).created if filters.get("before") else None
        since = self.get(filters["since"][0]).created if filters.get("since") else None
        if limit > 0 or before or since or filters.get("status") or exited:
            all = True
        out = []
        for c in sorted(self.containers.values(), key=lambda c: c.created, reverse=True):
            status = c.state.status_word()
            if not all and not c.state.Running:
                continue
            if filters.get("id") and not any(c.id.startswith(i) for i in filters["id"]):
                continue
            if filters.get("name") and not any(
                re.search(n.lstrip("/"), c.name.lstrip("/")) or re.search(n, c.name) for n in filters["name"]
            ):
                continue
            if filters.get("status") and status not in filters["status"]:
                continue
            if exited and (status != "exited" or c.state.ExitCode not in exited):
                continue
            if not flt.match_labels(filters.get("label"), c.config.get("Labels") or {}):
                continue
            if ancestors is not None and c.image_id not in ancestors:
                continue
            if before is not None and c.created >= before:
                continue
            if since is not None and c.created <= since:
                continue
            if filters.get("health") and health.status_of(c.state.Health) not in filters["health"]:
                continue
            if filters.get("network") and c.host_config.get("NetworkMode") not in filters["network"]:
                continue
            if filters.get("volume") and not any(
                v in (mp.name, mp.destination, mp.source) for mp in c.mount_points.values() for v in filters["volume"]
            ):
                continue
            if filters.get("publish") or filters.get("expose"):
                continue
            out.append(await self.summary(c, size))
            if limit > 0 and len(out) >= limit:
                break
        return out

    def _ancestor_ids(self, wanted: list[str]) -> set[str] | None:
        if not wanted:
            return None
        ids: set[str] = set()
        for w in wanted:
            img = self.images.find(w)
            if img is None:
                continue
            ids.add(img.id)
            # Descendants of the image count too (dockerd walks children).
            changed = True
            while changed:
                changed = False
                for other in self.images.images.values():
                    if other.parent in ids and other.id not in ids:
                        ids.add(other.id)
                        changed = True
        return ids

    async def summary(self, c: Container, size: bool) -> dict[str, Any]:
        img_name = c.config.get("Image", "")
        if img_name and self.images.find_quiet(img_name) != c.image_id:
            img_name = c.image_id
        s: dict[str, Any] = {
            "Id": c.id,
            "Names": [c.name],
            "Image": img_name,
            "ImageID": c.image_id,
            "Command": " ".join([c.path, *c.args]) if c.path else "",
            "Created": int(created_unix(c)),
            "Ports": self.networks.summary_ports(c) if self.networks else [],
            "Labels": c.config.get("Labels") or {},
            "State": c.state.status_word(),
            "Status": c.state.text(),
            "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode", "bridge")},
            "NetworkSettings": self.networks.summary_networks(c) if self.networks else {"Networks": {}},
            "Mounts": self._mounts(c),
        }
        if size:
            s["SizeRw"], s["SizeRootFs"] = await self.sizes(c)
        return s

    def _mounts(self, c: Container) -> list[dict[str, Any]]:
        return [mp.to_api() for _, mp in sorted(c.mount_points.items())]

    async def changes(self, ref: str) -> list[dict[str, Any]] | None:
        """`docker diff`: null when nothing changed, as dockerd answers (a Go nil slice)."""
        c = self.get(ref)
        rw = self.layers.mounts.get(c.id)
        if rw is None:
            return None
        result = await asyncio.to_thread(self.driver.changes, rw.mount_id, rw.init_id)
        return [{"Path": p, "Kind": k} for p, k in result] or None

    async def inspect(self, ref: str, size: bool) -> dict[str, Any]:
        c = self.get(ref)
        rw = self.layers.mounts.get(c.id)
        graph = self.driver.metadata(rw.mount_id) if rw is not None else {}
        d: dict[str, Any] = {
            "Id": c.id,
            "Created": c.created,
            "Path": c.path,
            "Args": c.args,
            "State": c.state.to_json(),
            "Image": c.image_id,
            # Made at the first start, as dockerd's: empty before.
            "ResolvConfPath": c.file("resolv.conf") if c.has_been_started else "",
            "HostnamePath": c.file("hostname") if c.has_been_started else "",
            "HostsPath": c.file("hosts") if c.has_been_started else "",
            "LogPath": c.log_path,
            "Name": c.name,
            "RestartCount": c.restart_count,
            "Driver": c.driver,
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": self.execs.running_ids(c.id) or None,
            "HostConfig": c.host_config,
            "GraphDriver": {"Name": self.driver.name, "Data": graph},
            "Mounts": self._mounts(c),
            "Config": c.config,
            "NetworkSettings": self.networks.settings(c) if self.networks else _network_settings(c),
        }
        if size:
            d["SizeRw"], d["SizeRootFs"] = await self.sizes(c)
        return d



def created_unix(c: Container) -> float:
    try:
        return parse_rfc3339(c.created) / 1e9
    except ValueError:
        return 0.0


def _network_settings(c: Container) -> dict[str, Any]:
    return {
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": {},
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }
