"""Networks: the predefined ones (bridge, host, none), user-defined bridges, and each running
container's sandbox (its netns file, veths, addresses, published ports).

<data-root>/network/networks/<id>.json   network definitions
<data-root>/network/ipam/<id>.json       each bridge network's allocated addresses
<container>/network.json                 the container's endpoint configs and, while it runs,
                                         its sandbox (so a restarted daemon finds and cleans it)
<exec-root>/netns/<container id>         bind mounts keeping the namespaces alive

Hooks for the container service: on_create (validate, record), attach (before start; gives
the `netns` of the process spec), detach (after exit, failed start or rm).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from typing import Any

from bocker_engine.engine import filters as flt
from bocker_engine.engine.ids import new_id
from bocker_engine.engine.network_endpoints import NetworkEndpoints
from bocker_engine.engine.network_views import NetworkViews
from bocker_engine.engine.store import read_json, remove_quiet, write_json
from bocker_engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound, System
from bocker_engine.network import ipam, netlink
from bocker_engine.network.model import PREDEFINED, NetConfig, Network, Sandbox
from bocker_engine.timefmt import rfc3339nano

__all__ = ["NetConfig", "Network", "NetworkService"]

log = logging.getLogger(__name__)
# pyroute2 logs every netlink message at debug level: far too much for bockerd --log-level debug.
logging.getLogger("pyroute2").setLevel(logging.WARNING)


class NetworkService(NetworkViews, NetworkEndpoints):
    """The networks and the sandboxes of running containers (views and endpoint handling in
    the mixins)."""

    # ---- startup and shutdown -------------------------------------------------------------

    def _net_dir(self) -> str:
        return os.path.join(self.root, "networks")

    def _ipam_path(self, nid: str) -> str:
        return os.path.join(self.root, "ipam", nid + ".json")

    def load(self) -> None:
        """Read the networks, make sure the predefined ones exist, set up bridges and rules."""
        for d in (self._net_dir(), os.path.join(self.root, "ipam")):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.makedirs(self.ns_root, mode=0o700, exist_ok=True)
        for fn in os.listdir(self._net_dir()):
            if not fn.endswith(".json"):
                continue
            try:
                n = Network.from_disk(read_json(os.path.join(self._net_dir(), fn)))
            except (OSError, ValueError, KeyError):
                log.warning("skipping unreadable network %s", fn)
                continue
            self.networks[n.id] = n
            self.names[n.name] = n.id
        for name, driver in PREDEFINED.items():
            if name not in self.names:
                n = Network(new_id(), name, driver, rfc3339nano())
                self.networks[n.id] = n
                self.names[name] = n.id
        self._configure_default_bridge()
        for n in self.networks.values():
            if n.driver == "bridge":
                n.pool = ipam.Pool.load(
                    self._ipam_path(n.id),
                    ipaddress.IPv4Network(n.subnet),
                    ipaddress.IPv4Address(n.gateway),
                    ipaddress.IPv4Network(n.ip_range) if n.ip_range else None,
                )
            self._save(n)
        _enable_forwarding()
        self.firewall.setup()
        for n in self.networks.values():
            if n.driver == "bridge":
                self._bridge_up(n)

    def _configure_default_bridge(self) -> None:
        n = self.networks[self.names["bridge"]]
        cfg = self.config
        n.driver = "bridge"
        n.device = cfg.bridge
        if cfg.bip:
            try:
                iface = ipaddress.IPv4Interface(cfg.bip)
            except ValueError:
                raise System(f"invalid --bip {cfg.bip!r}") from None
            n.subnet, n.gateway = str(iface.network), str(iface.ip)
        elif not n.subnet:
            pools = ipam.parse_pools(cfg.pools) or ipam.DEFAULT_POOLS
            taken = [r for r in netlink.host_routes() if not self._own_route(r)]
            sub = ipam.pick_subnet(pools, taken)
            n.subnet, n.gateway = str(sub), str(next(sub.hosts()))
        n.ip_range = ""
        if cfg.fixed_cidr:
            try:
                fixed = ipaddress.IPv4Network(cfg.fixed_cidr, strict=False)
            except ValueError:
                raise System(f"invalid --fixed-cidr {cfg.fixed_cidr!r}") from None
            if not fixed.subnet_of(ipaddress.IPv4Network(n.subnet)):
                raise System(f"--fixed-cidr {cfg.fixed_cidr} is not within the bridge subnet {n.subnet}")
            n.ip_range = str(fixed)
        n.options = {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": cfg.bridge,
            "com.docker.network.driver.mtu": "1500",
        }

    def _own_route(self, route: ipaddress.IPv4Network) -> bool:
        return any(n.subnet and ipaddress.IPv4Network(n.subnet) == route for n in self.networks.values())

    def _bridge_up(self, n: Network) -> None:
        netlink.ensure_bridge(n.device, n.gateway, n.prefixlen)
        self.firewall.add(self.firewall.network_rules(n.device, n.subnet, n.internal))

    def _save(self, n: Network) -> None:
        write_json(os.path.join(self._net_dir(), n.id + ".json"), n.to_disk())

    async def restore(self) -> None:
        """After load(): adopt the sandboxes of containers recorded as running (their ports and
        names come back); clean every other leftover (netns mounts, veths, addresses)."""
        assert self.containers is not None
        keep: set[str] = set()
        for c in self.containers.containers.values():
            self.bind_links(c)
            data = self._read(c)
            raw = data.get("Sandbox")
            if not raw:
                continue
            sb = Sandbox.from_json(raw)
            if c.state.Running:
                self.sandboxes[c.id] = sb
                keep.update(e.id for e in sb.endpoints.values())
                try:
                    await self._publish(c, sb, sb.mappings)
                except EngineError as e:
                    log.warning("container %s: cannot restore published ports: %s", c.id, e)
                await self._start_dns(c, sb)
            else:
                await asyncio.to_thread(self._teardown_links, sb)
                data["Sandbox"] = None
                self._write(c, data)
        for n in self.networks.values():
            if n.pool is not None:
                n.pool.keep_only(keep)
        known_ns = {sb.key for sb in self.sandboxes.values()}
        for fn in os.listdir(self.ns_root):
            path = os.path.join(self.ns_root, fn)
            if path not in known_ns:
                await asyncio.to_thread(netlink.delete_netns, path)
        known_if = {e.host_if for sb in self.sandboxes.values() for e in sb.endpoints.values()}
        for n in self.networks.values():
            if n.driver == "bridge":
                for link in await asyncio.to_thread(netlink.links_with_master, n.device):
                    if link not in known_if:
                        await asyncio.to_thread(netlink.delete_link, link)

    async def shutdown(self, live: bool) -> None:
        """Proxies and DNS live in the daemon: close them. Without live restore the containers
        have been stopped (and detached): remove the bridges and our chains too."""
        for sb in self.sandboxes.values():
            for p in sb.proxies:
                p.close()
            sb.proxies = []
            if sb.dns is not None:
                sb.dns.close()
                sb.dns = None
        if live:
            return
        if self.containers is not None:
            for cid in list(self.sandboxes):
                c = self.containers.containers.get(cid)
                if c is not None:
                    await self.detach(c)
        for n in self.networks.values():
            if n.driver == "bridge":
                await asyncio.to_thread(netlink.delete_link, n.device)
        await asyncio.to_thread(self.firewall.teardown)
        with contextlib.suppress(OSError):
            os.rmdir(self.ns_root)

    async def create(self, body: dict[str, Any]) -> tuple[Network, str]:
        name = body.get("Name") or ""
        if not name:
            raise InvalidParameter("network name must not be empty")
        driver = body.get("Driver") or "bridge"
        if name in self.names:
            raise Conflict(f"network with name {name} already exists")
        if driver in ("host", "null"):
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f"could not find plugin {driver} in v1 plugin registry: plugin not found")
        for key in ("EnableIPv6", "Ingress", "ConfigOnly"):
            if body.get(key):
                raise InvalidParameter(f"{key} networks are not supported yet")
        if (body.get("ConfigFrom") or {}).get("Network"):
            raise InvalidParameter("config-from networks are not supported yet")
        ipam_body = body.get("IPAM") or {}
        if (ipam_body.get("Driver") or "default") != "default":
            raise NotFound(f"could not find plugin {ipam_body['Driver']} in v1 plugin registry: plugin not found")
        configs = ipam_body.get("Config") or []
        if len(configs) > 1:
            raise InvalidParameter("only one IPv4 subnet per network is supported")
        options = dict(body.get("Options") or {})
        unknown = [k for k in options if k not in ("com.docker.network.bridge.name",)]
        if unknown:
            raise InvalidParameter(f"unsupported network options: {', '.join(unknown)}")
        async with self._lock:
            taken = [ipaddress.IPv4Network(x.subnet) for x in self.networks.values() if x.subnet]
            taken += [r for r in await asyncio.to_thread(netlink.host_routes) if not self._own_route(r)]
            cfg = configs[0] if configs else {}
            if cfg.get("AuxiliaryAddresses"):
                raise InvalidParameter("auxiliary addresses are not supported yet")
            if cfg.get("Subnet"):
                try:
                    subnet = ipaddress.IPv4Network(cfg["Subnet"], strict=False)
                except ValueError:
                    raise InvalidParameter(f"invalid subnet {cfg['Subnet']}: IPv4 CIDR expected") from None
                clash = next((t for t in taken if t.overlaps(subnet)), None)
                if clash is not None:
                    raise Forbidden("Pool overlaps with other one on this address space")
            elif cfg.get("Gateway") or cfg.get("IPRange"):
                raise InvalidParameter("gateway and ip-range need a subnet")
            else:
                subnet = ipam.pick_subnet(ipam.parse_pools(self.config.pools) or ipam.DEFAULT_POOLS, taken)
            gateway = cfg.get("Gateway") or str(next(subnet.hosts()))
            try:
                if ipaddress.IPv4Address(gateway) not in subnet:
                    raise InvalidParameter(f"gateway {gateway} is not in subnet {subnet}")
            except ValueError:
                raise InvalidParameter(f"invalid gateway address {gateway}") from None
            ip_range = ""
            if cfg.get("IPRange"):
                rng = ipaddress.IPv4Network(cfg["IPRange"], strict=False)
                if not rng.subnet_of(subnet):
                    raise InvalidParameter(f"ip-range {rng} is not in subnet {subnet}")
                ip_range = str(rng)
            nid = new_id()
            device = options.get("com.docker.network.bridge.name") or "br-" + nid[:12]
            if len(device) > 15:
                raise InvalidParameter(f"bridge name {device} is too long (15 characters at most)")
            n = Network(
                nid,
                name,
                "bridge",
                rfc3339nano(),
                subnet=str(subnet),
                gateway=gateway,
                ip_range=ip_range,
                device=device,
                labels=dict(body.get("Labels") or {}),
                options=options,
                attachable=bool(body.get("Attachable")),
                user_subnet=bool(cfg.get("Subnet")),
                internal=bool(body.get("Internal")),
            )
            n.pool = ipam.Pool.load(
                self._ipam_path(nid),
                subnet,
                ipaddress.IPv4Address(gateway),
                ipaddress.IPv4Network(ip_range) if ip_range else None,
            )
            try:
                await asyncio.to_thread(self._bridge_up, n)
                self._save(n)
            except BaseException:
                await asyncio.to_thread(self._bridge_down, n)
                raise
            self.networks[n.id] = n
            self.names[n.name] = n.id
        return n, ""

    def _bridge_down(self, n: Network) -> None:
        with contextlib.suppress(Exception):
            self.firewall.delete(self.firewall.network_rules(n.device, n.subnet, n.internal))
        netlink.delete_link(n.device)
        remove_quiet(os.path.join(self._net_dir(), n.id + ".json"))
        if n.pool is not None:
            n.pool.destroy()

    async def remove(self, ref: str) -> Network:
        n = self.get(ref)
        if n.builtin:
            raise Forbidden(f"{n.name} is a pre-defined network and cannot be removed")
        if self._in_use(n):
            raise Forbidden(f"error while removing network: network {n.name} id {n.id} has active endpoints")
        await asyncio.to_thread(self._bridge_down, n)
        self.networks.pop(n.id, None)
        self.names.pop(n.name, None)
        return n

    async def prune(self, filters: flt.Filters) -> list[str]:
        flt.check(filters, {"until", "label", "label!"})
        until = flt.until_filter(filters)
        gone = []
        for n in list(self.networks.values()):
            if n.builtin or self._in_use(n):
                continue
            if not flt.match_labels(filters.get("label"), n.labels):
                continue
            if until is not None:
                from bocker_engine.timefmt import parse_rfc3339

                if parse_rfc3339(n.created) / 1e9 >= until:
                    continue
            await self.remove(n.id)
            gone.append(n.name)
        return gone


def _enable_forwarding() -> None:
    """dockerd turns IPv4 forwarding on: without it nothing leaves a bridge."""
    with contextlib.suppress(OSError), open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")
