"""Address management for one network: which addresses of its subnet are taken, and by whom.

The allocations are written atomically before an address is handed out, so a daemon restart
never gives the same address twice; dockerd's order is kept (the next free address after the
last one handed out, wrapping), so an address just released is not reused at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from bocker_engine.engine.store import read_json, remove_quiet, write_json
from bocker_engine.errors import Conflict, InvalidParameter


@dataclass
class Pool:
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    # --ip-range / --fixed-cidr: where dynamic addresses come from (the whole subnet if None).
    ip_range: ipaddress.IPv4Network | None = None
    allocated: dict[str, str] = field(default_factory=dict)  # address -> owner (endpoint id)
    last: str = ""
    path: str = ""

    @classmethod
    def load(
        cls,
        path: str,
        subnet: ipaddress.IPv4Network,
        gateway: ipaddress.IPv4Address,
        ip_range: ipaddress.IPv4Network | None = None,
    ) -> Pool:
        pool = cls(subnet, gateway, ip_range, path=path)
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return pool
        pool.allocated = {k: v for k, v in (data.get("Allocated") or {}).items() if isinstance(v, str)}
        pool.last = data.get("Last") or ""
        return pool

    def save(self) -> None:
        # Atomic (rename) but not fsynced: a daemon that dies leaves the page cache, hence this
        # very file, behind; only a machine crash could lose or tear it, and no endpoint
        # survives that: the daemon's start drops the allocations of endpoints that did not
        # survive (keep_only), and an unreadable file loads as an empty pool. An fsync per
        # start and exit of every container would buy nothing.
        if self.path:
            write_json(self.path, {"Allocated": self.allocated, "Last": self.last}, sync=False)

    def destroy(self) -> None:
        if self.path:
            remove_quiet(self.path)

    def _usable(self, ip: ipaddress.IPv4Address) -> bool:
        if ip == self.gateway or str(ip) in self.allocated:
            return False
        edges = (self.subnet.network_address, self.subnet.broadcast_address)
        return self.subnet.prefixlen >= 31 or ip not in edges

    def allocate(self, owner: str, wanted: str = "") -> str:
        if wanted:
            try:
                ip = ipaddress.IPv4Address(wanted)
            except ValueError:
                raise InvalidParameter(f"invalid IPv4 address: {wanted}") from None
            if ip not in self.subnet:
                raise InvalidParameter(f"invalid address {wanted}: It does not belong to any of this network's subnets")
            if not self._usable(ip):
                raise Conflict("Address already in use")
            return self._take(ip, owner)
        rng = self.ip_range or self.subnet
        first, last = int(rng.network_address), int(rng.broadcast_address)
        start = first
        if self.last:
            prev = int(ipaddress.IPv4Address(self.last))
            if first <= prev < last:
                start = prev + 1
        n = last - first + 1
        for i in range(n):
            ip = ipaddress.IPv4Address(first + (start - first + i) % n)
            if self._usable(ip):
                return self._take(ip, owner)
        raise Conflict(f"no available IPv4 addresses on this network's address pools: {self.subnet}")

    def _take(self, ip: ipaddress.IPv4Address, owner: str) -> str:
        self.allocated[str(ip)] = owner
        self.last = str(ip)
        self.save()
        return str(ip)

    def release(self, ip: str) -> None:
        if self.allocated.pop(ip, None) is not None:
            self.save()

    def release_owner(self, owner: str) -> None:
        gone = [ip for ip, o in self.allocated.items() if o == owner]
        for ip in gone:
            del self.allocated[ip]
        if gone:
            self.save()

    def keep_only(self, owners: set[str]) -> None:
        """After a restart: drop allocations whose endpoints did not survive."""
        before = len(self.allocated)
        self.allocated = {ip: o for ip, o in self.allocated.items() if o in owners}
        if len(self.allocated) != before:
            self.save()


def parse_pools(specs: list[object]) -> list[tuple[ipaddress.IPv4Network, int]]:
    """--default-address-pools base=10.10.0.0/16,size=24 (daemon.json: [{"base": ..., "size": ...}])."""
    out = []
    for spec in specs:
        if isinstance(spec, str):
            kv = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
        elif isinstance(spec, dict):
            kv = {str(k): str(v) for k, v in spec.items()}
        else:
            raise InvalidParameter(f"invalid default address pool: {spec!r}")
        try:
            base = ipaddress.IPv4Network(kv["base"], strict=False)
            size = int(kv["size"])
        except (KeyError, ValueError):
            raise InvalidParameter(f"invalid default address pool: {spec!r} (base=CIDR,size=N)") from None
        if size < base.prefixlen or size > 30:
            raise InvalidParameter(f"invalid default address pool: {spec!r}: size must be in /{base.prefixlen}../30")
        out.append((base, size))
    return out


DEFAULT_POOLS = [
    (ipaddress.IPv4Network("172.17.0.0/16"), 16),
    (ipaddress.IPv4Network("172.18.0.0/15"), 16),
    (ipaddress.IPv4Network("172.20.0.0/14"), 16),
    (ipaddress.IPv4Network("172.24.0.0/14"), 16),
    (ipaddress.IPv4Network("172.28.0.0/14"), 16),
    (ipaddress.IPv4Network("192.168.0.0/16"), 20),
]


def pick_subnet(
    pools: list[tuple[ipaddress.IPv4Network, int]], taken: list[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network:
    """The first subnet of the pools that overlaps nothing taken (networks and host routes)."""
    for base, size in pools:
        for sub in base.subnets(new_prefix=size):
            if not any(sub.overlaps(t) for t in taken):
                return sub
    raise InvalidParameter(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )


def mac_for(ip: str) -> str:
    """dockerd's MAC: 02:42 then the four address bytes."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)
