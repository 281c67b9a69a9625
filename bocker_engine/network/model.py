"""The records of networking: the daemon's options, a network, a container's endpoint on it
and its sandbox (what a running container holds), and the endpoint config a client sends."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from bocker_engine.errors import InvalidParameter
from bocker_engine.network import ipam
from bocker_engine.network import ports as portmod
from bocker_engine.network.firewall import Rule
from bocker_engine.network.links import parse_link
from bocker_engine.network.proxy import Proxy

PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}


@dataclass
class NetConfig:
    """The daemon's networking options (--bridge, --bip, --fixed-cidr, --default-address-pools)."""

    bridge: str = "bocker0"
    bip: str = ""
    fixed_cidr: str = ""
    pools: list[Any] = field(default_factory=list)


@dataclass
class Network:
    id: str
    name: str
    driver: str
    created: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    device: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    attachable: bool = False
    pool: ipam.Pool | None = None

    @property
    def builtin(self) -> bool:
        return self.name in PREDEFINED

    def to_disk(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "Driver": self.driver,
            "Created": self.created,
            "Subnet": self.subnet,
            "Gateway": self.gateway,
            "IPRange": self.ip_range,
            "Device": self.device,
            "Labels": self.labels,
            "Options": self.options,
            "Attachable": self.attachable,
        }

    @classmethod
    def from_disk(cls, d: dict[str, Any]) -> Network:
        return cls(
            id=d["Id"],
            name=d["Name"],
            driver=d["Driver"],
            created=d["Created"],
            subnet=d.get("Subnet", ""),
            gateway=d.get("Gateway", ""),
            ip_range=d.get("IPRange", ""),
            device=d.get("Device", ""),
            labels=d.get("Labels") or {},
            options=d.get("Options") or {},
            attachable=bool(d.get("Attachable")),
        )

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


@dataclass
class Endpoint:
    network_id: str
    id: str
    host_if: str
    ifname: str
    ip: str
    mac: str
    # What the embedded DNS answers with this address on a user network (name, aliases, ids).
    names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Sandbox:
    """What a running container holds: its namespace, endpoints, published ports."""

    key: str
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by network name
    mappings: list[portmod.Mapping] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    dns: Any = None
    # Link aliases on user networks: alias (lower case) -> linked container's name, seen by the
    # embedded DNS of this container only (dockerd).
    links: dict[str, str] = field(default_factory=dict)
    # Legacy links on the default bridge: the variables they add to the process environment.
    env: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "Key": self.key,
            "Endpoints": {n: e.to_json() for n, e in self.endpoints.items()},
            "Ports": [m.to_json() for m in self.mappings],
            "Links": self.links,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sandbox:
        return cls(
            key=d["Key"],
            endpoints={n: Endpoint(**e) for n, e in (d.get("Endpoints") or {}).items()},
            mappings=[portmod.Mapping.from_json(m) for m in d.get("Ports") or []],
            links=dict(d.get("Links") or {}),
        )


def endpoint_config(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = dict(raw or {})
    ipam_cfg = raw.get("IPAMConfig") or None
    if ipam_cfg:
        if ipam_cfg.get("IPv6Address"):
            raise InvalidParameter("IPv6 is not supported yet")
        ipam_cfg = {k: v for k, v in ipam_cfg.items() if v}
        if ipam_cfg.get("IPv4Address"):
            try:
                ipaddress.IPv4Address(ipam_cfg["IPv4Address"])
            except ValueError:
                raise InvalidParameter(f"invalid IPv4 address: {ipam_cfg['IPv4Address']}") from None
    if raw.get("DriverOpts"):
        raise InvalidParameter("endpoint driver options are not supported")
    return {
        "IPAMConfig": ipam_cfg or None,
        "Links": [parse_link(x)[2] for x in raw.get("Links") or []] or None,
        "Aliases": list(raw.get("Aliases") or []) or None,
        "MacAddress": raw.get("MacAddress") or "",
        "DriverOpts": None,
    }

