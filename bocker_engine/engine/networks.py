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
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bocker_engine.engine import filters as flt
from bocker_engine.engine.ids import lookup, new_id
from bocker_engine.engine.store import read_json, remove_quiet, write_json
from bocker_engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound, System
from bocker_engine.network import etcfiles, ipam, netlink
from bocker_engine.network import ports as portmod
from bocker_engine.network.firewall import Firewall, Rule
from bocker_engine.network.proxy import Proxy
from bocker_engine.runtime.stdio import rfc3339nano

if TYPE_CHECKING:
    from bocker_engine.engine.containers import Container, ContainerService

log = logging.getLogger(__name__)
# pyroute2 logs every netlink message at debug level: far too much for bockerd --log-level debug.
logging.getLogger("pyroute2").setLevel(logging.WARNING)

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

    def to_json(self) -> dict[str, str]:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "Key": self.key,
            "Endpoints": {n: e.to_json() for n, e in self.endpoints.items()},
            "Ports": [m.to_json() for m in self.mappings],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sandbox:
        return cls(
            key=d["Key"],
            endpoints={n: Endpoint(**e) for n, e in (d.get("Endpoints") or {}).items()},
            mappings=[portmod.Mapping.from_json(m) for m in d.get("Ports") or []],
        )


def _endpoint_config(raw: dict[str, Any] | None) -> dict[str, Any]:
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
    if raw.get("Links"):
        raise InvalidParameter("legacy links (--link) are not supported yet")
    if raw.get("DriverOpts"):
        raise InvalidParameter("endpoint driver options are not supported")
    return {
        "IPAMConfig": ipam_cfg or None,
        "Links": None,
        "Aliases": list(raw.get("Aliases") or []) or None,
        "MacAddress": raw.get("MacAddress") or "",
        "DriverOpts": None,
    }


class NetworkService:
    def __init__(self, data_root: str, exec_root: str, config: NetConfig) -> None:
        self.root = os.path.join(data_root, "network")
        self.ns_root = os.path.join(exec_root, "netns")
        self.config = config
        self.networks: dict[str, Network] = {}
        self.names: dict[str, str] = {}
        self.sandboxes: dict[str, Sandbox] = {}  # by container id
        self.allocator = portmod.Allocator.from_system()
        self.firewall = Firewall("BOCKER" if config.bridge == "bocker0" else "BK-" + config.bridge)
        self.containers: ContainerService | None = None
        # The embedded DNS of user networks (not yet): an object whose serve(c, netns) -> closable.
        self.resolver: Any = None
        self._lock = asyncio.Lock()

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
        self.firewall.add(self.firewall.network_rules(n.device, n.subnet))

    def _save(self, n: Network) -> None:
        write_json(os.path.join(self._net_dir(), n.id + ".json"), n.to_disk())

    async def restore(self) -> None:
        """After load(): adopt the sandboxes of containers recorded as running (their ports and
        names come back); clean every other leftover (netns mounts, veths, addresses)."""
        assert self.containers is not None
        keep: set[str] = set()
        for c in self.containers.containers.values():
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

    # ---- lookup ---------------------------------------------------------------------------

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
        try:
            data: dict[str, Any] = read_json(c.file("network.json"))
            return data
        except (OSError, ValueError):
            return {"Config": {}, "Sandbox": None}

    def _write(self, c: Container, data: dict[str, Any]) -> None:
        write_json(c.file("network.json"), data, sync=False)

    def on_create(self, c: Container, networking: dict[str, Any] | None) -> None:
        """Validate the container's network mode, endpoints and ports; record the endpoints."""
        hc = c.host_config
        mode = hc.get("NetworkMode") or "bridge"
        eps = dict((networking or {}).get("EndpointsConfig") or {})
        if hc.get("Links"):
            raise InvalidParameter("legacy links (--link) are not supported yet")
        if mode.startswith("container:"):
            if self.containers is not None:
                self.containers.get(mode.split(":", 1)[1])
            if hc.get("PortBindings") or hc.get("PublishAllPorts"):
                raise Conflict("conflicting options: port publishing and the container type network mode")
            if hc.get("ExtraHosts") or hc.get("Dns"):
                raise Conflict("conflicting options: custom DNS or host entries and the network mode")
            self._write(c, {"Config": {}, "Sandbox": None})
            return
        net = self.get(mode)
        if net.driver != "bridge" and (hc.get("PortBindings") or hc.get("PublishAllPorts")):
            if net.driver == "host":
                hc["PortBindings"] = {}  # dockerd: published ports are discarded with host networking
            else:
                raise Conflict("conflicting options: port publishing and the container type network mode")
        for r in portmod.requests(hc, c.config.get("ExposedPorts")):
            if r.proto == "sctp":
                raise InvalidParameter("publishing sctp ports is not supported")
        config: dict[str, Any] = {}
        for ref, raw in eps.items():
            other = self.get(ref)
            if other.driver != "bridge" and other.id != net.id:
                raise InvalidParameter(f"container cannot be connected to network {other.name} and {net.name}")
            config[other.name] = _endpoint_config(raw)
        config.setdefault(net.name, _endpoint_config(None))
        for name, ep in config.items():
            n = self.get(name)
            if ep.get("IPAMConfig") and ep["IPAMConfig"].get("IPv4Address"):
                if n.builtin:
                    raise InvalidParameter("user specified IP address is supported on user defined networks only")
                if ipaddress.IPv4Address(ep["IPAMConfig"]["IPv4Address"]) not in ipaddress.IPv4Network(n.subnet):
                    raise InvalidParameter(
                        f"invalid address {ep['IPAMConfig']['IPv4Address']}: It does not belong to any of this "
                        "network's subnets"
                    )
            if ep.get("Aliases") and n.builtin:
                raise InvalidParameter("network-scoped alias is supported only for containers in user defined networks")
            if ep.get("MacAddress") and n.driver == "bridge":
                try:
                    bytes.fromhex(ep["MacAddress"].replace(":", ""))
                except ValueError:
                    raise InvalidParameter(f"invalid MAC address: {ep['MacAddress']}") from None
            ep["NetworkID"] = n.id
        # The mode's network first: it gets eth0 and the default route.
        ordered = {net.name: config.pop(net.name), **config}
        self._write(c, {"Config": ordered, "Sandbox": None})

    def mode_network(self, c: Container) -> str:
        return str(c.host_config.get("NetworkMode") or "bridge")

    async def attach(self, c: Container) -> str:
        """Before the container's process starts: its network namespace, as the process spec's
        `netns` ("host", "" for loopback only, else a path to join)."""
        mode = self.mode_network(c)
        if mode.startswith("container:"):
            return self._join_container(c, mode.split(":", 1)[1])
        data = self._read(c)
        config: dict[str, Any] = data.get("Config") or {}
        first = self.networks.get(self.names.get(mode, ""), None) or self.get(mode)
        if first.driver == "host":
            return "host"
        if first.driver == "null":
            return ""
        sb = Sandbox(key=os.path.join(self.ns_root, c.id))
        self.sandboxes[c.id] = sb
        try:
            await asyncio.to_thread(netlink.create_netns, sb.key)
            for i, (name, ep) in enumerate(config.items()):
                await self._add_endpoint(c, sb, self.get(name), ep, i == 0)
            reqs = portmod.requests(c.host_config, c.config.get("ExposedPorts"))
            await self._allocate_ports(c, sb, reqs)
            await self._start_dns(c, sb)
            self._write_etc(c, sb, config)
            data["Sandbox"] = sb.to_json()
            self._write(c, data)
        except BaseException:
            await self.detach(c)
            raise
        return sb.key

    def _join_container(self, c: Container, ref: str) -> str:
        assert self.containers is not None
        other = self.containers.get(ref)
        if not other.state.Running:
            raise Conflict(f"cannot join network of a non running container: {other.id}")
        if other.id == c.id:
            raise InvalidParameter("cannot join own network")
        # Same names and resolvers as the container whose namespace it shares.
        for name in ("hosts", "resolv.conf"):
            with contextlib.suppress(OSError), open(other.file(name)) as f:
                etcfiles.write(c.file(name), f.read())
        omode = str(other.host_config.get("NetworkMode") or "bridge")
        if omode == "host":
            return "host"
        return f"/proc/{other.state.Pid}/ns/net"

    async def _add_endpoint(self, c: Container, sb: Sandbox, n: Network, ep: dict[str, Any], first: bool) -> None:
        assert n.pool is not None
        eid = new_id()
        wanted = ((ep.get("IPAMConfig") or {}).get("IPv4Address")) or ""
        async with self._lock:
            ip = n.pool.allocate(eid, wanted)
        mac = ep.get("MacAddress") or ipam.mac_for(ip)
        e = Endpoint(n.id, eid, "veth" + secrets.token_hex(4)[:7], f"eth{len(sb.endpoints)}", ip, mac)
        sb.endpoints[n.name] = e
        await asyncio.to_thread(
            netlink.add_endpoint, sb.key, n.device, e.host_if, e.ifname, ip, n.prefixlen, n.gateway, mac, first
        )

    async def _allocate_ports(self, c: Container, sb: Sandbox, reqs: list[portmod.Request]) -> None:
        chosen: list[portmod.Mapping] = []
        for r in reqs:
            candidates = self.allocator.candidates(r)
            if not candidates:
                raise _port_error(c, f"Bind for {r.host_ip}:{r.lo} failed: port is already allocated")
            err: EngineError | None = None
            for port in candidates:
                m = portmod.Mapping(r.proto, r.host_ip, port, r.port)
                p = Proxy(m.proto, m.host_ip, m.host_port, ("0.0.0.0", 0))
                try:
                    p.bind()
                except EngineError as e:
                    err = e
                    continue
                p.close()
                self.allocator.take(m.proto, m.host_ip, m.host_port)
                sb.mappings.append(m)
                chosen.append(m)
                err = None
                break
            if err is not None:
                raise _port_error(c, err.message)
        await self._publish(c, sb, chosen)

    async def _publish(self, c: Container, sb: Sandbox, mappings: list[portmod.Mapping]) -> None:
        """NAT rules and proxies for mappings already held by the allocator (or to re-take)."""
        if not mappings or not sb.endpoints:
            return
        name, ep = next(iter(sb.endpoints.items()))
        n = self.networks[ep.network_id]
        rules: list[Rule] = []
        for m in mappings:
            self.allocator.take(m.proto, m.host_ip, m.host_port)
            rules += self.firewall.port_rules(n.device, m.proto, m.host_ip, m.host_port, ep.ip, m.port)
        await asyncio.to_thread(self.firewall.add, rules)
        sb.rules += rules
        for m in mappings:
            p = Proxy(m.proto, m.host_ip, m.host_port, (ep.ip, m.port))
            try:
                await p.start()
            except EngineError as e:
                raise _port_error(c, e.message) from None
            sb.proxies.append(p)

    async def _start_dns(self, c: Container, sb: Sandbox) -> None:
        if self.resolver is None or not any(not self.networks[e.network_id].builtin for e in sb.endpoints.values()):
            return
        try:
            sb.dns = await self.resolver.serve(c, sb.key)
        except OSError as e:
            log.warning("container %s: embedded DNS not available: %s", c.id, e)

    def _write_etc(self, c: Container, sb: Sandbox, config: dict[str, Any]) -> None:
        hc, cfg = c.host_config, c.config
        ip = next(iter(sb.endpoints.values())).ip if sb.endpoints else ""
        etcfiles.write(
            c.file("hosts"),
            etcfiles.hosts(cfg.get("Hostname", ""), cfg.get("Domainname", ""), ip, list(hc.get("ExtraHosts") or [])),
        )
        embedded = sb.dns is not None
        etcfiles.write(
            c.file("resolv.conf"),
            etcfiles.resolv(
                list(hc.get("Dns") or []), list(hc.get("DnsSearch") or []), list(hc.get("DnsOptions") or []), embedded
            ),
        )

    async def detach(self, c: Container) -> None:
        """After the container's process ended (or its start failed): give everything back."""
        sb = self.sandboxes.pop(c.id, None)
        if sb is None:
            return
        for p in sb.proxies:
            p.close()
        if sb.dns is not None:
            sb.dns.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.firewall.delete, sb.rules)
        for m in sb.mappings:
            self.allocator.give_back(m.proto, m.host_ip, m.host_port)
        await asyncio.to_thread(self._teardown_links, sb)
        for e in sb.endpoints.values():
            n = self.networks.get(e.network_id)
            if n is not None and n.pool is not None:
                n.pool.release_owner(e.id)
        if os.path.isdir(c.root):
            data = self._read(c)
            data["Sandbox"] = None
            with contextlib.suppress(OSError):
                self._write(c, data)

    def _teardown_links(self, sb: Sandbox) -> None:
        for e in sb.endpoints.values():
            with contextlib.suppress(Exception):
                netlink.delete_link(e.host_if)
        netlink.delete_netns(sb.key)
        for e in sb.endpoints.values():
            n = self.networks.get(e.network_id)
            if n is not None and n.pool is not None:
                n.pool.release_owner(e.id)

    # ---- views ----------------------------------------------------------------------------

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
                "Links": None,
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

    def dns_names(self, c: Container, ep: dict[str, Any]) -> list[str]:
        return [c.name.lstrip("/"), *(ep.get("Aliases") or []), c.id[:12]]

    def ports(self, c: Container) -> dict[str, Any]:
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
            "Internal": False,
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
        for key in ("Internal", "EnableIPv6", "Ingress", "ConfigOnly"):
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
            self.firewall.delete(self.firewall.network_rules(n.device, n.subnet))
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
                from bocker_engine.runtime.stdio import parse_rfc3339

                if parse_rfc3339(n.created) / 1e9 >= until:
                    continue
            await self.remove(n.id)
            gone.append(n.name)
        return gone

    async def connect(self, ref: str, container: str, endpoint: dict[str, Any] | None) -> None:
        assert self.containers is not None
        n = self.get(ref)
        c = self.containers.get(container)
        mode = self.mode_network(c)
        if n.driver != "bridge" or mode in ("host", "none") or mode.startswith("container:"):
            if n.driver == "host" or mode == "host":
                raise Forbidden("container cannot be disconnected from host network or connected to host network")
            raise Forbidden(
                "container sharing network namespace with another container or host cannot be connected to any "
                "other network"
            )
        data = self._read(c)
        config = data.get("Config") or {}
        if n.name in config:
            raise Forbidden(f"endpoint with name {c.name.lstrip('/')} already exists in network {n.name}")
        ep = _endpoint_config(endpoint)
        wanted = (ep.get("IPAMConfig") or {}).get("IPv4Address")
        if wanted and n.builtin:
            raise InvalidParameter("user specified IP address is supported on user defined networks only")
        if ep.get("Aliases") and n.builtin:
            raise InvalidParameter("network-scoped alias is supported only for containers in user defined networks")
        ep["NetworkID"] = n.id
        sb = self.sandboxes.get(c.id)
        if sb is not None:
            await self._add_endpoint(c, sb, n, ep, False)
            if sb.dns is None:
                await self._start_dns(c, sb)
            data["Sandbox"] = sb.to_json()
        config[n.name] = ep
        data["Config"] = config
        self._write(c, data)

    async def disconnect(self, ref: str, container: str, force: bool) -> None:
        assert self.containers is not None
        n = self.get(ref)
        c = self.containers.get(container)
        data = self._read(c)
        config = data.get("Config") or {}
        if n.name not in config:
            raise Forbidden(f"container {c.id} is not connected to network {n.name}")
        if n.driver == "host":
            raise Forbidden("container cannot be disconnected from host network or connected to host network")
        sb = self.sandboxes.get(c.id)
        if sb is not None and n.name in sb.endpoints:
            e = sb.endpoints.pop(n.name)
            await asyncio.to_thread(netlink.delete_link, e.host_if)
            if n.pool is not None:
                n.pool.release_owner(e.id)
            data["Sandbox"] = sb.to_json()
        del config[n.name]
        data["Config"] = config
        self._write(c, data)

    def names_on(self, n: Network) -> dict[str, list[str]]:
        """DNS view of a user network: name (lower case) -> addresses of running containers."""
        out: dict[str, list[str]] = {}
        if self.containers is None:
            return out
        for cid, sb in self.sandboxes.items():
            e = sb.endpoints.get(n.name)
            c = self.containers.containers.get(cid)
            if e is None or c is None:
                continue
            ep = (self._read(c).get("Config") or {}).get(n.name) or {}
            for name in self.dns_names(c, ep):
                out.setdefault(name.lower(), []).append(e.ip)
        return out


def _port_error(c: Container, msg: str) -> EngineError:
    return System(f"driver failed programming external connectivity on endpoint {c.name.lstrip('/')} ({c.id}): {msg}")


def _enable_forwarding() -> None:
    """dockerd turns IPv4 forwarding on: without it nothing leaves a bridge."""
    with contextlib.suppress(OSError), open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")
