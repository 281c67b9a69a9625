"""What the networking mixins share: the networks, the sandboxes of running containers, the
container service, and each container's network.json."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from bocker_engine.engine.ids import lookup
from bocker_engine.engine.store import write_atomic
from bocker_engine.errors import NotFound
from bocker_engine.network import netlink
from bocker_engine.network import ports as portmod
from bocker_engine.network.firewall import Firewall
from bocker_engine.network.model import NetConfig, Network, Sandbox

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.containers import ContainerService


class NetworkState:
    def __init__(self, data_root: str, exec_root: str, config: NetConfig) -> None:
        self.root = os.path.join(data_root, "network")
        self.ns_root = os.path.join(exec_root, "netns")
        self.config = config
        self.networks: dict[str, Network] = {}
        self.names: dict[str, str] = {}
        self.sandboxes: dict[str, Sandbox] = {}  # by container id
        # Veth pairs of a sandbox still to make (attach with defer): by container id.
        self.pending_veths: dict[str, list[netlink.Veth]] = {}
        # Legacy links: container id -> link alias -> the linked container's id (network_names).
        self.link_targets: dict[str, dict[str, str]] = {}
        self.allocator = portmod.Allocator.from_system()
        self.firewall = Firewall("BOCKER" if config.bridge == "bocker0" else "BK-" + config.bridge)
        self.containers: ContainerService | None = None
        self._lock = asyncio.Lock()

    def get(self, ref: str) -> Network:
        if ref == "default":  # the CLI's name for the default network
            ref = "bridge"
        if ref in self.names:
            return self.networks[self.names[ref]]
        try:
            return lookup(ref, self.networks, {}, f"network {ref} not found")
        except NotFound:
            raise NotFound(f"network {ref} not found") from None

    # ---- container hooks ------------------------------------------------------------------

    def _read(self, c: Container) -> dict[str, Any]:
        """A fresh copy (callers change it and _write it back)."""
        try:
            if c.network_file is None:
                with open(c.file("network.json"), "rb") as f:
                    c.network_file = f.read()
            data: dict[str, Any] = json.loads(c.network_file)
            return data
        except (OSError, ValueError):
            return {"Config": {}, "Sandbox": None}

    def _write(self, c: Container, data: dict[str, Any]) -> None:
        raw = json.dumps(data, separators=(",", ":")).encode()
        c.network_file = None  # a failed write leaves the file as it was: read it again
        write_atomic(c.file("network.json"), raw, sync=False)
        c.network_file = raw

    def mode_network(self, c: Container) -> str:
        return str(c.host_config.get("NetworkMode") or "bridge")

    def dns_names(self, c: Container, ep: dict[str, Any]) -> list[str]:
        """Names of the container on a user network: its name, aliases, short id, and hostname."""
        names = [c.name.lstrip("/"), *(ep.get("Aliases") or []), c.id[:12]]
        hostname = str(c.config.get("Hostname") or "")
        return names + [hostname] if hostname and hostname not in names else names
