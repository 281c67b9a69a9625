"""The views of networking: a container's NetworkSettings, ps's ports and networks, and the
network API's inspect and list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bocker_engine.engine import filters as flt
from bocker_engine.engine.network_state import NetworkState
from bocker_engine.errors import InvalidParameter
from bocker_engine.network import ports as portmod
from bocker_engine.network.model import Network

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container


class NetworkViews(NetworkState):
    def settings(self, c: Container) -> dict[str, Any]:
        """NetworkSettings of inspect, like dockerd's (the top-level address fields are the
        default bridge's, as dockerd's deprecated ones)."""
        data = self._read(c)
        sb = self.sandboxes.get(c.id)
        nets: dict[str, Any] = {}
        for name, ep in (data.get("Config") or {}).items():
            e = sb.endpoints.get(name) if sb else None
            n = self.networks.get(ep.get("NetworkID", ""))
            nets[name] = {
                "IPAMConfig": ep.get("IPAMConfig"),
                "Links": ep.get("Links"),
                "Aliases": ep.get("Aliases"),
                "MacAddress": e.mac if e else ep.get("MacAddress", ""),
                "DriverOpts": None,
                "NetworkID": ep.get("NetworkID", ""),
                "EndpointID": e.id if e else "",
                "Gateway": n.gateway if e and n else "",
                "IPAddress": e.ip if e else "",
                "IPPrefixLen": n.prefixlen if e and n else 0,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DNSNames": self.dns_names(c, ep) if e and n and not n.builtin else None,
            }
        top = nets.get("bridge") or {}
        return {
            "Bridge": "",
            "SandboxID": c.id if sb else "",
            "SandboxKey": sb.key if sb else "",
            "Ports": self.ports(c) if sb or c.state.Running else {},
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": top.get("EndpointID", ""),
            "Gateway": top.get("Gateway", ""),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": top.get("IPAddress", ""),
            "IPPrefixLen": top.get("IPPrefixLen", 0),
            "IPv6Gateway": "",
            "MacAddress": top.get("MacAddress", ""),
            "Networks": nets,
        }

    def ports(self, c: Container) -> dict[str, Any]:
        first = self.networks.get(self.names.get(self.mode_network(c), ""))
        if first is not None and first.internal:
            return {}
        out: dict[str, Any] = {k: None for k in c.config.get("ExposedPorts") or {}}
        sb = self.sandboxes.get(c.id)
        for m in sb.mappings if sb else []:
            out.setdefault(m.key(), None)
            out[m.key()] = (out[m.key()] or []) + [{"HostIp": m.host_ip, "HostPort": str(m.host_port)}]
        return out

    def summary_ports(self, c: Container) -> list[dict[str, Any]]:
        """ps's Ports: published ones with their host side, exposed ones without."""
        sb = self.sandboxes.get(c.id)
        out: list[dict[str, Any]] = []
        seen = set()
        for m in sb.mappings if sb else []:
            out.append({"IP": m.host_ip, "PrivatePort": m.port, "PublicPort": m.host_port, "Type": m.proto})
            seen.add(m.key())
        for key in c.config.get("ExposedPorts") or {}:
            if key not in seen:
                port, proto = portmod.parse_port_key(key)
                out.append({"PrivatePort": port, "Type": proto})
        return out

    def summary_networks(self, c: Container) -> dict[str, Any]:
        return {"Networks": self.settings(c)["Networks"]}

    # ---- networks API ---------------------------------------------------------------------

    def inspect(self, n: Network, verbose: bool = False) -> dict[str, Any]:
        containers: dict[str, Any] = {}
        if self.containers is not None:
            for cid, sb in self.sandboxes.items():
                c = self.containers.containers.get(cid)
                e = sb.endpoints.get(n.name)
                if c is None or e is None:
                    continue
                containers[cid] = {
                    "Name": c.name.lstrip("/"),
                    "EndpointID": e.id,
                    "MacAddress": e.mac,
                    "IPv4Address": f"{e.ip}/{n.prefixlen}",
                    "IPv6Address": "",
                }
        ipam_cfg: list[dict[str, str]] = []
        if n.subnet:
            entry = {"Subnet": n.subnet, "Gateway": n.gateway}
            if n.ip_range:
                entry["IPRange"] = n.ip_range
            ipam_cfg.append(entry)
        return {
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None if n.builtin else {}, "Config": ipam_cfg},
            "Internal": n.internal,
            "Attachable": n.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": n.options,
            "Labels": n.labels,
        }

    def list_networks(self, filters: flt.Filters) -> list[dict[str, Any]]:
        flt.check(filters, {"name", "id", "driver", "type", "label", "scope", "dangling"})
        out = []
        for n in self.networks.values():
            if filters.get("name") and not any(f in n.name for f in filters["name"]):
                continue
            if filters.get("id") and not any(n.id.startswith(f) for f in filters["id"]):
                continue
            if filters.get("driver") and n.driver not in filters["driver"]:
                continue
            if filters.get("type"):
                for t in filters["type"]:
                    if t not in ("custom", "builtin"):
                        raise InvalidParameter(f"invalid filter: 'type'='{t}'")
                if ("builtin" if n.builtin else "custom") not in filters["type"]:
                    continue
            if filters.get("scope") and "local" not in filters["scope"]:
                continue
            if not flt.match_labels(filters.get("label"), n.labels):
                continue
            dangling = flt.bool_filter(filters, "dangling")
            if dangling is not None and dangling != (not n.builtin and not self._in_use(n)):
                continue
            d = self.inspect(n)
            d["Containers"] = {}
            out.append(d)
        return out

    def _in_use(self, n: Network) -> bool:
        return any(n.name in sb.endpoints for sb in self.sandboxes.values())
