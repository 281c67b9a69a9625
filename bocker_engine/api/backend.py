"""What the API layer may call: the engine's services, typed, and nothing below them.

bocker_engine.daemon.Daemon implements it. Handlers reach storage, runtime and the network only
through these services, so every piece of domain work has one home in engine/.
"""

from __future__ import annotations

from typing import Any, Protocol

from bocker_engine.build.service import BuildService
from bocker_engine.engine.commit import CommitService
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.distribution import Distribution
from bocker_engine.engine.event_sources import EventSources
from bocker_engine.engine.events import Events
from bocker_engine.engine.images import ImageService
from bocker_engine.engine.networks import NetworkService
from bocker_engine.engine.stats import StatsCollector
from bocker_engine.engine.volumes import VolumeService


class Backend(Protocol):
    containers: ContainerService
    images: ImageService
    distribution: Distribution
    networks: NetworkService
    volumes: VolumeService
    events: Events
    sources: EventSources
    stats: StatsCollector
    commits: CommitService
    builds: BuildService

    def event(self, type_: str, action: str, actor: str, attrs: dict[str, str]) -> None: ...

    def system_info(self) -> dict[str, Any]: ...

    async def disk_usage(self, types: list[str]) -> dict[str, Any]: ...
