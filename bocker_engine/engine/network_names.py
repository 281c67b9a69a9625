"""Names between containers: the embedded DNS of user networks (what each container's resolver
answers, and starting it) and links (legacy ones on the default bridge, aliases on user
networks)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bocker_engine.engine.network_state import NetworkState
from bocker_engine.errors import EngineError, InvalidParameter, NotFound, System
from bocker_engine.network import dns, etcfiles, netlink
from bocker_engine.network.links import hosts_names, link_env, parse_link
from bocker_engine.network.model import Network, Sandbox

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container

log = logging.getLogger(__name__)


class NetworkNames(NetworkState):
    # ---- links ----------------------------------------------------------------------------

    def _links_on_create(self, c: Container, net: Network, config: dict[str, Any]) -> None:
        """Check the linked containers exist; store legacy links as dockerd shows them
        (`/db:/web/database`); on a user network they become the endpoint's links (aliases)."""
        hc = c.host_config
        links = [parse_link(x) for x in hc.get("Links") or []]
        if not links:
            return
        if net.driver == "host":
            raise InvalidParameter(
                "conflicting options: host type networking can't be used with links. This would result in "
                "undefined behavior"
            )
        targets = []
        for name, alias, _ in links:
            try:
                target = self.containers.get(name) if self.containers is not None else None
            except NotFound as e:
                raise InvalidParameter(f"could not get container for {name}: {e.message}") from None
            targets.append((target.name if target is not None else "/" + name, alias))
        if net.builtin:
            hc["Links"] = [f"{tname}:{c.name}/{alias}" for tname, alias in targets]
            return
        ep = config[net.name]
        if not ep.get("Links"):
            ep["Links"] = [x[2] for x in links]
        hc["Links"] = None

    def _link_aliases(self, sb: Sandbox, config: dict[str, Any]) -> None:
        for ep in config.values():
            n = self.networks.get(ep.get("NetworkID", ""))
            if n is None or n.builtin:
                continue
            for link in ep.get("Links") or []:
                target, alias, _ = parse_link(link)
                sb.links[alias.lower()] = target

    def _legacy_links(self, c: Container, sb: Sandbox) -> list[tuple[str, str]]:
        """The /etc/hosts lines of the default bridge's links (and their variables in sb.env);
        every linked container must be running, as with dockerd."""
        assert self.containers is not None
        lines: list[tuple[str, str]] = []
        env: list[str] = []
        for link in c.host_config.get("Links") or []:
            name, alias, _ = parse_link(link)
            link_name = f"{c.name}/{alias}"
            try:
                child = self.containers.get(name)
            except NotFound:
                raise System(f"Cannot link to /{name}, as it does not belong to the default network") from None
            if not child.state.Running:
                raise System(f"Cannot link to a non running container: {child.name} AS {link_name}")
            csb = self.sandboxes.get(child.id)
            e = csb.endpoints.get("bridge") if csb else None
            if e is None:
                raise System(f"Cannot link to {child.name}, as it does not belong to the default network")
            cname = child.name.lstrip("/")
            lines.append((e.ip, hosts_names(alias, str(child.config.get("Hostname") or ""), cname)))
            exposed = list(child.config.get("ExposedPorts") or {})
            env += link_env(link_name, alias, e.ip, exposed, list(child.config.get("Env") or []))
        sb.env = env
        return lines

    def link_env(self, c: Container) -> list[str]:
        """Variables the default bridge's links add to the process (the container's own Env wins)."""
        sb = self.sandboxes.get(c.id)
        return list(sb.env) if sb else []

    # ---- embedded DNS ---------------------------------------------------------------------

    def _user_networks(self, sb: Sandbox) -> list[str]:
        return [name for name, e in sb.endpoints.items() if not self.networks[e.network_id].builtin]

    async def _start_dns(self, c: Container, sb: Sandbox) -> None:
        if sb.dns is not None or not self._user_networks(sb):
            return
        try:
            udp, tcp = await asyncio.to_thread(netlink.run_in_netns, sb.key, dns.open_sockets)
            server = dns.Server(self, c.id)
            await server.start(udp, tcp)
        except (OSError, EngineError) as e:
            log.warning("container %s: embedded DNS not available: %s", c.id, e)
            return
        sb.dns = server

    def _ips_named(self, network: str, name: str) -> list[str]:
        return [
            e.ip for s in self.sandboxes.values() if (e := s.endpoints.get(network)) is not None and name in e.names
        ]

    def dns_lookup(self, cid: str, name: str) -> list[str] | None:
        sb = self.sandboxes.get(cid)
        if sb is None:
            return None
        for net in self._user_networks(sb):
            target = sb.links.get(name)
            if target is not None and self.containers is not None:
                try:
                    tc = self.containers.get(target)
                except NotFound:
                    tc = None
                tsb = self.sandboxes.get(tc.id) if tc is not None else None
                e = tsb.endpoints.get(net) if tsb else None
                if e is not None:
                    return [e.ip]
            ips = self._ips_named(net, name)
            suffix = "." + net.lower()
            if not ips and name.endswith(suffix):  # `db.app`: a name qualified by its network
                ips = self._ips_named(net, name[: -len(suffix)])
            if ips:
                return ips
        return None

    def dns_reverse(self, cid: str, ip: str) -> str | None:
        sb = self.sandboxes.get(cid)
        for net in self._user_networks(sb) if sb else []:
            for s in self.sandboxes.values():
                e = s.endpoints.get(net)
                if e is not None and e.ip == ip and e.names:
                    return f"{e.names[0]}.{net}"
        return None

    def dns_upstreams(self, cid: str) -> list[str]:
        c = self.containers.containers.get(cid) if self.containers is not None else None
        own = list(c.host_config.get("Dns") or []) if c is not None else []
        return own or etcfiles.host_resolv()[0] or list(etcfiles.FALLBACK_DNS)
