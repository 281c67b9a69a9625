"""Names between containers: the embedded DNS of user networks (what each container's resolver
answers, and starting it) and links (legacy ones on the default bridge, aliases on user
networks)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
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
        if not net.builtin:
            # dockerd checks nothing here: on a user network a link is a name for the embedded
            # DNS, resolved while the container runs.
            ep = config[net.name]
            if not ep.get("Links"):
                ep["Links"] = [x[2] for x in links]
            hc["Links"] = None
            return
        targets = []
        for name, alias, _ in links:
            try:
                target = self.containers.get(name) if self.containers is not None else None
            except NotFound as e:
                raise InvalidParameter(f"could not get container for {name}: {e.message}") from None
            targets.append((target.name if target is not None else "/" + name, alias))
        hc["Links"] = [f"{tname}:{c.name}/{alias}" for tname, alias in targets]
        self.bind_links(c)

    def bind_links(self, c: Container) -> None:
        """Tie `c`'s legacy links to the containers their names denote now (dockerd's link
        index, by container: a linked container removed and another created under its name
        is not linked). In memory, as dockerd's: on daemon start, restore binds them again by
        name (its registerLinks). Called on create and restore."""
        if self.containers is None:
            return
        known = self.containers.containers
        for gone in [pid for pid in self.link_targets if pid not in known]:
            del self.link_targets[gone]
        bound: dict[str, str] = {}
        for link in c.host_config.get("Links") or []:
            name, alias, _ = parse_link(link)
            try:
                bound[alias] = self.containers.get(name).id
            except NotFound:
                continue  # dockerd's restore logs it; the start then refuses
        if bound:
            self.link_targets[c.id] = bound
        else:
            self.link_targets.pop(c.id, None)

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
            child_id = self.link_targets.get(c.id, {}).get(alias)
            child = self.containers.containers.get(child_id) if child_id else None
            if child is None:  # removed since: dockerd keeps the link and refuses to start
                raise System(f"Cannot link to a non running container: /{name} AS {link_name}")
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

    def _edit_running_file(self, c: Container, name: str, edit: Callable[[str], str]) -> None:
        """Edit an /etc file of a running container in place; a failure is logged, as dockerd
        logs a failed hosts update, and never fails the operation that caused it."""
        path = c.file(name)
        try:
            old = etcfiles.read(path)
            new = edit(old)
            if new != old:
                etcfiles.rewrite(path, new)
        except OSError as e:
            log.warning("container %s: cannot update %s: %s", c.id, name, e)

    def _update_parents(self, c: Container, sb: Sandbox) -> None:
        """`c` (re)started on the default bridge: the running containers linking to it get its
        new address in their /etc/hosts, on the lines of its link alias (libnetwork's
        OptionParentUpdate, for each parent in dockerd's link graph)."""
        e = sb.endpoints.get("bridge")
        if e is None or self.containers is None:
            return
        name = c.name.lstrip("/")
        for p in self.containers.containers.values():
            if p.id == c.id or p.id not in self.sandboxes:
                continue
            for link in p.host_config.get("Links") or []:
                target, alias, _ = parse_link(link)
                if target == name and self.link_targets.get(p.id, {}).get(alias) == c.id:
                    self._edit_running_file(p, "hosts", functools.partial(_relink, alias=alias, ip=e.ip))

    def on_rename(self, c: Container, old: str) -> None:
        """dockerd's links are by container, not by name: after a rename they show the new name,
        whether `c` is the linked container or the linker. Running containers keep their
        /etc/hosts lines (the old name) until they restart, as with dockerd."""
        if self.containers is None:
            return
        old = old.lstrip("/")
        for p in list(self.containers.containers.values()):
            links = p.host_config.get("Links")
            if not links:
                continue
            new_links = []
            for link in links:
                target, alias, _ = parse_link(link)
                target = c.name.lstrip("/") if target == old else target
                new_links.append(f"/{target}:{p.name}/{alias}")
            if new_links != links:
                p.host_config["Links"] = new_links
                self.containers.save_host_config(p)

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


def _relink(text: str, alias: str, ip: str) -> str:
    return etcfiles.update_link_ip(text, alias, ip)
