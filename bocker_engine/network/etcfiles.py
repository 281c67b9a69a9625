"""A networked container's /etc/hosts and /etc/resolv.conf, written as dockerd writes them."""

from __future__ import annotations

import ipaddress
import os

from bocker_engine.engine.store import write_atomic

HOSTS_HEADER = [
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
]
EMBEDDED_DNS = "127.0.0.11"
FALLBACK_DNS = ["8.8.8.8", "8.8.4.4"]


def hosts(hostname: str, domainname: str, ip: str, extra: list[str], links: list[tuple[str, str]] | None = None) -> str:
    lines = list(HOSTS_HEADER)
    for e in extra:
        host, _, addr = e.partition(":")
        lines.append(f"{addr}\t{host}")
    for addr, names in links or []:
        lines.append(f"{addr}\t{names}")
    if ip:
        full = f"{hostname}.{domainname}" if domainname else hostname
        lines.append(f"{ip}\t{full}" + (f" {hostname}" if full != hostname else ""))
    return "\n".join(lines) + "\n"


def is_loopback(ns: str) -> bool:
    try:
        return ipaddress.ip_address(ns).is_loopback
    except ValueError:
        return False


def host_resolv_path() -> str:
    """The host's resolv.conf; tests point the daemon at one naming their own resolver."""
    return os.environ.get("BOCKER_RESOLV_CONF") or "/etc/resolv.conf"


def host_resolv(path: str = "") -> tuple[list[str], list[str], list[str]]:
    """nameservers, search domains, options of the host."""
    try:
        with open(path or host_resolv_path()) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    ns = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    search = next((ln.split()[1:] for ln in lines if ln.startswith("search")), [])
    options = next((ln.split()[1:] for ln in lines if ln.startswith("options")), [])
    return ns, search, options


def resolv(dns: list[str], dns_search: list[str], dns_options: list[str], embedded: bool) -> str:
    """The default bridge: the host's resolvers without loopback ones (unreachable from the
    container), Google's if none is left; a user network: the embedded DNS, which forwards."""
    ns, search, options = host_resolv()
    search = list(dns_search) or search
    options = list(dns_options) or options
    if embedded:
        servers = [EMBEDDED_DNS]
        options = [*options, "ndots:0"] if not any(o.startswith("ndots:") for o in options) else options
    else:
        servers = list(dns) or [n for n in ns if not is_loopback(n)] or list(FALLBACK_DNS)
    return render(servers, search, options)


def render(servers: list[str], search: list[str], options: list[str]) -> str:
    """A resolv.conf as dockerd writes it: search, nameservers, options."""
    out = ""
    if search:
        out += "search " + " ".join(search) + "\n"
    for n in servers:
        out += f"nameserver {n}\n"
    if options:
        out += "options " + " ".join(options) + "\n"
    return out


def write(path: str, text: str) -> None:
    write_atomic(path, text.encode(), mode=0o644, sync=False)
