"""A networked container's /etc/hosts and /etc/resolv.conf, written as dockerd writes them."""

from __future__ import annotations

import ipaddress
import os
import re

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


def hosts(
    hostname: str, domainname: str, ips: list[str], extra: list[str], links: list[tuple[str, str]] | None = None
) -> str:
    """`ips`: the container's address on each of its networks, each with its own line (dockerd)."""
    lines = list(HOSTS_HEADER)
    for e in extra:
        host, _, addr = e.partition(":")
        lines.append(f"{addr}\t{host}")
    for addr, names in links or []:
        lines.append(f"{addr}\t{names}")
    lines += [self_line(ip, hostname, domainname) for ip in ips if ip]
    return "\n".join(lines) + "\n"


def self_line(ip: str, hostname: str, domainname: str) -> str:
    """The container's own line: its address, its full name and its short name."""
    full = f"{hostname}.{domainname}" if domainname else hostname
    return f"{ip}\t{full}" + (f" {hostname}" if full != hostname else "")


def update_link_ip(text: str, alias: str, ip: str) -> str:
    """A linked container's new address on the lines naming it first (its link alias), as
    libnetwork's etchosts.Update does for the parents of a restarted container."""
    pattern = re.compile(r"(\S*)(\t" + re.escape(alias) + r")(\s|\.)")
    return pattern.sub(lambda m: ip + m.group(2) + m.group(3), text)


def add_line(text: str, line: str) -> str:
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


def remove_line(text: str, line: str) -> str:
    """Without the given line (the container's own line for a network it leaves)."""
    return "".join(ln for ln in text.splitlines(keepends=True) if ln.rstrip("\n") != line)


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


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def rewrite(path: str, text: str) -> None:
    """Replace the content of a file a running container has bind-mounted: in place (a rename
    would leave the container on the old inode), the new bytes written over the old ones before
    the file is cut to length, so a reader never sees it empty. Callers run on the event loop
    with no await between read and rewrite, so rewrites of one file never interleave."""
    data = text.encode("utf-8", errors="surrogateescape")
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
