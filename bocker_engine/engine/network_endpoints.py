"""A container's endpoints: validation at create, the sandbox made before start (netns, veths,
addresses, published ports, embedded DNS, /etc files) and given back after exit, and network
connect/disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from bocker_engine.engine.ids import new_id
from bocker_engine.engine.network_names import NetworkNames
from bocker_engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, System
from bocker_engine.network import etcfiles, ipam, netlink
from bocker_engine.network import ports as portmod
from bocker_engine.network.firewall import Rule
from bocker_engine.network.model import Endpoint, Network, Sandbox, endpoint_config
from bocker_engine.network.proxy import Proxy

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container

log = logging.getLogger(__name__)


class NetworkEndpoints(NetworkNames):
    def on_create(self, c: Container, networking: dict[str, Any] | None) -> None:
        """Validate the container's network mode, endpoints and ports; record the endpoints."""
        hc = c.host_config
        mode = hc.get("NetworkMode") or "bridge"
        eps = dict((networking or {}).get("EndpointsConfig") or {})
        if mode.startswith("container:"):
            if self.containers is not None:
                self.containers.get(mode.split(":", 1)[1])
            if hc.get("Links"):
                raise InvalidParameter(
                    "conflicting options: container type network can't be used with links. This would result in "
                    "undefined behavior"
                )
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
            config[other.name] = endpoint_config(raw)
        config.setdefault(net.name, endpoint_config(None))
        for name, ep in config.items():
            n = self.get(name)
            self._check_endpoint(n, ep)
            if ep.get("MacAddress") and n.driver == "bridge":
                try:
                    bytes.fromhex(ep["MacAddress"].replace(":", ""))
                except ValueError:
                    raise InvalidParameter(f"invalid MAC address: {ep['MacAddress']}") from None
            ep["NetworkID"] = n.id
        self._links_on_create(c, net, config)
        # The mode's network first: it gets eth0 and the default route.
        ordered = {net.name: config.pop(net.name), **config}
        self._write(c, {"Config": ordered, "Sandbox": None})

    async def attach(self, c: Container, defer: bool = False) -> str:
        """Before the container's process starts: its network namespace, as the process spec's
        `netns` ("host", "" for loopback only, else a path to join).

        `defer`: the veth pairs are left for finish_attach, which the engine runs while the
        container's process is set up and held before exec (a gated start): everything the
        process's setup reads (the namespace, /etc files) is ready before this returns."""
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
            endpoints = [(self.get(name), ep) for name, ep in config.items()]
            if defer:
                await asyncio.to_thread(netlink.create_netns, sb.key)
                self.pending_veths[c.id] = [
                    await self._new_endpoint(c, sb, n, ep, i == 0) for i, (n, ep) in enumerate(endpoints)
                ]
            else:
                # The first endpoint's veth is made with the namespace, by the same thread.
                first_veth = await self._new_endpoint(c, sb, *endpoints[0], True) if endpoints else None
                await asyncio.to_thread(netlink.create_netns, sb.key, first_veth)
                for n, ep in endpoints[1:]:
                    await self._add_endpoint(c, sb, n, ep, False)
            # dockerd publishes nothing from an internal network (and says nothing about it).
            reqs = [] if first.internal else portmod.requests(c.host_config, c.config.get("ExposedPorts"))
            await self._allocate_ports(c, sb, reqs)
            self._link_aliases(sb, config)
            links = self._legacy_links(c, sb) if first.builtin else []
            await self._start_dns(c, sb)
            self._write_etc(c, sb, links)
            data["Sandbox"] = sb.to_json()
            self._write(c, data)
        except BaseException:
            await self.detach(c)
            raise
        self._update_parents(c, sb)
        return sb.key

    def attach_pending(self, c: Container) -> bool:
        """Whether attach(defer=True) left veth pairs for finish_attach."""
        return bool(self.pending_veths.get(c.id))

    async def finish_attach(self, c: Container) -> None:
        """The veth pairs attach(defer=True) left; an error is the start's (its release, detach,
        removes what was made)."""
        sb = self.sandboxes.get(c.id)
        for veth in self.pending_veths.pop(c.id, []):
            if sb is None:
                raise System(f"container {c.id} has no network sandbox")
            await asyncio.to_thread(netlink.add_endpoint, sb.key, veth)

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
        veth = await self._new_endpoint(c, sb, n, ep, first)
        await asyncio.to_thread(netlink.add_endpoint, sb.key, veth)

    async def _new_endpoint(
        self, c: Container, sb: Sandbox, n: Network, ep: dict[str, Any], first: bool
    ) -> netlink.Veth:
        """The endpoint's address (allocated) and record in the sandbox (so that detach gives
        it back whatever happens next), and the veth pair to make for it."""
        assert n.pool is not None
        eid = new_id()
        wanted = ((ep.get("IPAMConfig") or {}).get("IPv4Address")) or ""
        async with self._lock:
            ip = n.pool.allocate(eid, wanted)
        mac = ep.get("MacAddress") or ipam.mac_for(ip)
        names = [] if n.builtin else list(dict.fromkeys(x.lower() for x in self.dns_names(c, ep)))
        e = Endpoint(n.id, eid, "veth" + secrets.token_hex(4)[:7], f"eth{len(sb.endpoints)}", ip, mac, names)
        sb.endpoints[n.name] = e
        return netlink.Veth(n.device, e.host_if, e.ifname, ip, n.prefixlen, n.gateway, mac, first)

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

    def _write_etc(self, c: Container, sb: Sandbox, links: list[tuple[str, str]]) -> None:
        hc, cfg = c.host_config, c.config
        ips = [e.ip for e in sb.endpoints.values()]
        etcfiles.write(
            c.file("hosts"),
            etcfiles.hosts(
                cfg.get("Hostname", ""), cfg.get("Domainname", ""), ips, list(hc.get("ExtraHosts") or []), links
            ),
        )
        etcfiles.write(c.file("resolv.conf"), self._resolv_conf(c, sb))

    def _resolv_conf(self, c: Container, sb: Sandbox) -> str:
        hc = c.host_config
        dns, search, options = (list(hc.get(k) or []) for k in ("Dns", "DnsSearch", "DnsOptions"))
        return etcfiles.resolv(dns, search, options, sb.dns is not None)

    def _own_hosts_line(self, c: Container, ip: str) -> str:
        return etcfiles.self_line(ip, str(c.config.get("Hostname") or ""), str(c.config.get("Domainname") or ""))

    async def detach(self, c: Container) -> None:
        """After the container's process ended (or its start failed): give everything back."""
        self.pending_veths.pop(c.id, None)
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

    async def connect(self, ref: str, container: str, endpoint: dict[str, Any] | None) -> None:
        """dockerd's order: the endpoint settings are checked first, then the modes that cannot
        be combined; a stopped container already on the network is left as it is."""
        assert self.containers is not None
        n = self.get(ref)
        c = self.containers.get(container)
        ep = endpoint_config(endpoint)
        self._check_endpoint(n, ep)
        mode = self.mode_network(c)
        if n.driver == "host" and mode != "host":
            raise InvalidParameter("container cannot be disconnected from host network or connected to host network")
        data = self._read(c)
        config = data.get("Config") or {}
        if n.name not in config:
            if mode == "host" or mode.startswith("container:"):
                raise InvalidParameter(
                    "container sharing network namespace with another container or host cannot be connected to "
                    "any other network"
                )
            if n.driver == "null" or mode == "none":
                raise InvalidParameter(
                    "container cannot be connected to multiple networks with one of the networks in private (none) "
                    "mode"
                )
        sb = self.sandboxes.get(c.id)
        if n.name in config:
            if sb is None:
                return  # dockerd: "avoid duplicate config"
            raise Forbidden(f"endpoint with name {c.name.lstrip('/')} already exists in network {n.name}")
        ep["NetworkID"] = n.id
        if sb is not None:
            await self._add_endpoint(c, sb, n, ep, False)
            self._link_aliases(sb, {n.name: ep})
            had_dns = sb.dns is not None
            await self._start_dns(c, sb)
            data["Sandbox"] = sb.to_json()
            # As libnetwork on join: a line for the new address in /etc/hosts, and the embedded
            # DNS in /etc/resolv.conf once the container is on a user network.
            line = self._own_hosts_line(c, sb.endpoints[n.name].ip)
            self._edit_running_file(c, "hosts", lambda text: etcfiles.add_line(text, line))
            if sb.dns is not None and not had_dns:
                self._edit_running_file(c, "resolv.conf", lambda _: self._resolv_conf(c, sb))
        config[n.name] = ep
        data["Config"] = config
        self._write(c, data)

    def _check_endpoint(self, n: Network, ep: dict[str, Any]) -> None:
        """dockerd's checks of an endpoint's settings (400s), at create and connect."""
        wanted = (ep.get("IPAMConfig") or {}).get("IPv4Address")
        if wanted and n.builtin:
            raise InvalidParameter("user specified IP address is supported on user defined networks only")
        if ep.get("Aliases") and n.builtin:
            raise InvalidParameter("network-scoped alias is supported only for containers in user defined networks")
        if wanted:
            if not n.user_subnet:
                raise InvalidParameter(
                    "user specified IP address is supported only when connecting to networks with user configured "
                    "subnets"
                )
            if ipaddress.IPv4Address(wanted) not in ipaddress.IPv4Network(n.subnet):
                raise InvalidParameter(
                    f"invalid address {wanted}: It does not belong to any of this network's subnets"
                )

    async def disconnect(self, ref: str, container: str, force: bool) -> None:
        assert self.containers is not None
        n = self.get(ref)
        c = self.containers.get(container)
        data = self._read(c)
        config = data.get("Config") or {}
        if n.driver == "host" and self.mode_network(c) == "host":
            raise InvalidParameter("container cannot be disconnected from host network or connected to host network")
        sb = self.sandboxes.get(c.id)
        if n.name not in config:
            # dockerd's words (and its 500) differ between a running and a stopped container.
            if sb is not None:
                raise System(f"container {c.id} is not connected to network {n.name}")
            raise System(f"container {c.id} is not connected to the network {n.name}")
        if sb is not None and n.name in sb.endpoints:
            e = sb.endpoints.pop(n.name)
            await asyncio.to_thread(netlink.delete_link, e.host_if)
            if n.pool is not None:
                n.pool.release_owner(e.id)
            data["Sandbox"] = sb.to_json()
            # Only this network's line goes (current dockerd: by address and name).
            line = self._own_hosts_line(c, e.ip)
            self._edit_running_file(c, "hosts", lambda text: etcfiles.remove_line(text, line))
        del config[n.name]
        data["Config"] = config
        self._write(c, data)


def _port_error(c: Container, msg: str) -> EngineError:
    return System(f"driver failed programming external connectivity on endpoint {c.name.lstrip('/')} ({c.id}): {msg}")
