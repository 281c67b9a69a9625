"""A container's record: its config, state and files, as dockerd keeps them on disk.

containers/<id>/config.v2.json, hostconfig.json, hostname, hosts, resolv.conf, <id>-json.log.
The operations on containers are in containers.py (ContainerService).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from bocker_engine.engine import mounts as mnt
from bocker_engine.engine.state import State


@dataclass
class Waiter:
    condition: str
    future: asyncio.Future[tuple[int, str]]


@dataclass
class Container:
    id: str
    name: str
    created: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    image_id: str
    root: str
    state: State = field(default_factory=State)
    path: str = ""
    args: list[str] = field(default_factory=list)
    restart_count: int = 0
    has_been_started: bool = False
    # Stopped or killed by hand since its last start (unless-stopped does not restart it).
    manually_stopped: bool = False
    driver: str = ""
    # Destination -> mount point (volumes, binds, tmpfs from --mount); "MountPoints" on disk.
    mount_points: dict[str, mnt.MountPoint] = field(default_factory=dict)
    # Runtime only:
    waiters: list[Waiter] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    mounted: bool = False
    starting: bool = False
    # Set while an exit is being recorded, so that a late exit event and a settle of a lost
    # exit cannot both record one.
    settling: bool = False
    # An exit the supervisor reported before the start reply was processed (a fast `true`):
    # its events and replies travel on different connections.
    early_exit: dict[str, Any] | None = None
    # network.json as last written or read (engine/network_state.py): inspect and ps read it
    # on every call.
    network_file: bytes | None = None

    @property
    def log_driver(self) -> str:
        return (self.host_config.get("LogConfig") or {}).get("Type") or "json-file"

    @property
    def log_path(self) -> str:
        """inspect's LogPath: the json-file's path (empty for other drivers, as dockerd)."""
        return os.path.join(self.root, f"{self.id}-json.log") if self.log_driver == "json-file" else ""

    @property
    def log_file(self) -> str:
        """The file the supervisor writes: json-file's, or the local driver's (dockerd's names)."""
        if self.log_driver == "local":
            return os.path.join(self.root, "local-logs", "container.log")
        return self.log_path

    @property
    def logs_enabled(self) -> bool:
        return self.log_driver in ("json-file", "local")

    def file(self, name: str) -> str:
        return os.path.join(self.root, name)

    def to_disk(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Created": self.created,
            "Config": self.config,
            "Image": self.image_id,
            "State": self.state.to_json(),
            "Path": self.path,
            "Args": self.args,
            "RestartCount": self.restart_count,
            "HasBeenStartedBefore": self.has_been_started,
            "HasBeenManuallyStopped": self.manually_stopped,
            "Driver": self.driver,
            "LogPath": self.log_path,
            "MountPoints": mnt.dump(self.mount_points),
        }

    def notify(self) -> None:
        """Wake log followers and anything else watching this container's state."""
        self.changed.set()
        self.changed = asyncio.Event()
