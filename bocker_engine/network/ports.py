"""Published ports: what a container asks for (PortBindings, -P with ExposedPorts) and which
host ports this daemon has handed out."""

from __future__ import annotations

import random
from dataclasses import dataclass

from bocker_engine.errors import InvalidParameter

PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Mapping:
    proto: str
    host_ip: str
    host_port: int
    port: int

    def key(self) -> str:
        return f"{self.port}/{self.proto}"

    def to_json(self) -> dict[str, object]:
        return {"proto": self.proto, "host_ip": self.host_ip, "host_port": self.host_port, "port": self.port}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Mapping:
        return cls(str(d["proto"]), str(d["host_ip"]), int(str(d["host_port"])), int(str(d["port"])))


@dataclass(frozen=True)
class Request:
    """One binding asked for: host port 0 means any; (lo, hi) a range to pick from."""

    proto: str
    host_ip: str
    lo: int
    hi: int
    port: int


def parse_port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOS:
        raise InvalidParameter(f"invalid proto: {proto}")
    try:
        n = int(port)
    except ValueError:
        raise InvalidParameter(f"invalid containerPort: {port}") from None
    if not 0 < n < 65536:
        raise InvalidParameter(f"invalid containerPort: {port}")
    return n, proto


def _host_port(raw: str, key: str) -> tuple[int, int]:
    raw = (raw or "").strip()
    if not raw:
        return 0, 0
    lo_s, _, hi_s = raw.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        raise InvalidParameter(f"invalid hostPort: {raw}") from None
    if not (0 <= lo <= hi < 65536):
        raise InvalidParameter(f"invalid hostPort: {raw}")
    return lo, hi


def requests(host_config: dict[str, object], exposed: dict[str, object] | None) -> list[Request]:
    """The bindings of PortBindings, plus every exposed port on a random host port with -P."""
    out: list[Request] = []
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise InvalidParameter("invalid PortBindings")
    for key, binds in bindings.items():
        port, proto = parse_port_key(key)
        for b in binds or [{}]:
            b = b or {}
            host_ip = b.get("HostIp") or ""
            if ":" in host_ip:
                raise InvalidParameter(f"IPv6 host addresses are not supported yet: {host_ip}")
            lo, hi = _host_port(str(b.get("HostPort") or ""), key)
            out.append(Request(proto, host_ip or "0.0.0.0", lo, hi, port))
    if host_config.get("PublishAllPorts"):
        for key in exposed or {}:
            port, proto = parse_port_key(key)
            if not any(r.port == port and r.proto == proto for r in out):
                out.append(Request(proto, "0.0.0.0", 0, 0, port))
    return out


def validate(host_config: dict[str, object], exposed: dict[str, object] | None) -> None:
    requests(host_config, exposed)


class Allocator:
    """The host ports this daemon holds. 0.0.0.0 conflicts with every address of the same port."""

    def __init__(self, lo: int = 32768, hi: int = 60999) -> None:
        self.lo, self.hi = lo, hi
        self.held: dict[tuple[str, int], set[str]] = {}

    @classmethod
    def from_system(cls) -> Allocator:
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                lo, hi = (int(x) for x in f.read().split())
            return cls(lo, hi)
        except (OSError, ValueError):
            return cls()

    def free(self, proto: str, host_ip: str, port: int) -> bool:
        ips = self.held.get((proto, port))
        if not ips:
            return True
        return host_ip != "0.0.0.0" and "0.0.0.0" not in ips and host_ip not in ips

    def take(self, proto: str, host_ip: str, port: int) -> None:
        self.held.setdefault((proto, port), set()).add(host_ip)

    def give_back(self, proto: str, host_ip: str, port: int) -> None:
        ips = self.held.get((proto, port))
        if ips is not None:
            ips.discard(host_ip)
            if not ips:
                del self.held[(proto, port)]

    def candidates(self, r: Request) -> list[int]:
        """Ports to try for a request, in order (random start in the ephemeral range for 0)."""
        if r.lo:
            return [p for p in range(r.lo, r.hi + 1) if self.free(r.proto, r.host_ip, p)]
        span = self.hi - self.lo + 1
        start = random.randrange(span)
        out = []
        for i in range(span):
            p = self.lo + (start + i) % span
            if self.free(r.proto, r.host_ip, p):
                out.append(p)
                if len(out) >= 64:
                    break
        return out
