"""Which registry endpoints to talk to, over which transport, trusting which certificates.

Mirrors dockerd's registry service: `--registry-mirror` applies to docker.io only, `--insecure-registry`
(host, host:port or CIDR) allows skipping TLS verification and falling back to plain HTTP, and
`/etc/docker/certs.d/<host[:port]>/` holds extra CAs (`*.crt`) and client key pairs (`*.cert` + `*.key`).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bocker_engine.errors import InvalidParameter, Unavailable
from bocker_engine.registry.reference import DEFAULT_DOMAIN

# Where docker.io's registry API really lives; `docker.io` itself only redirects web browsers.
DOCKER_HUB_URL = "https://registry-1.docker.io"
# Names that users, the CLI's credential store and X-Registry-Config use for Docker Hub.
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Endpoint:
    """One place to send registry API requests for a repository's domain."""

    url: str  # scheme://host[:port], no trailing slash; the API is under <url>/v2/
    host: str  # the registry as users know it (docker.io for Hub and its mirrors)
    mirror: bool = False
    # False for insecure registries: dockerd skips certificate verification for them.
    tls_verify: bool = True

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def is_https(self) -> bool:
        return self.url.startswith("https://")


@dataclass
class RegistryConfig:
    mirrors: list[str] = field(default_factory=list)
    insecure: list[str] = field(default_factory=list)
    certs_dir: str = "/etc/docker/certs.d"
    # False pins docker.io to its mirrors: Docker Hub is never contacted (air-gapped hosts, tests).
    mirror_fallback: bool = True
    # dockerd always treats 127.0.0.0/8 (and ::1) as insecure; turning this off lets tests exercise
    # real certificate verification against a registry on loopback.
    loopback_insecure: bool = True

    def __post_init__(self) -> None:
        self.mirrors = [normalize_mirror(m) for m in self.mirrors]
        for entry in self.insecure:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as e:
                    raise InvalidParameter(f"invalid insecure registry CIDR {entry!r}: {e}") from e

    def is_insecure(self, netloc: str) -> bool:
        """Whether `host[:port]` may be reached without TLS verification, as dockerd decides it."""
        host, _ = split_host_port(netloc)
        if host in _HUB_ALIASES:
            return False
        ip = _ip(host)
        if self.loopback_insecure and (host == "localhost" or (ip is not None and ip.is_loopback)):
            return True
        for entry in self.insecure:
            entry = entry.strip()
            if "://" in entry:
                entry = urlsplit(entry).netloc
            if entry in (netloc, host):
                return True
            if "/" in entry and ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                return True
        return False

    def pull_endpoints(self, domain: str) -> list[Endpoint]:
        """Endpoints to try in order when pulling from `domain` (mirrors first for docker.io)."""
        if domain == DEFAULT_DOMAIN:
            eps = [
                Endpoint(m, DEFAULT_DOMAIN, mirror=True, tls_verify=not self.is_insecure(urlsplit(m).netloc))
                for m in self.mirrors
            ]
            if self.mirror_fallback:
                eps.append(Endpoint(DOCKER_HUB_URL, DEFAULT_DOMAIN))
            if not eps:
                raise Unavailable(
                    "docker.io is restricted to its registry mirrors (mirror fallback is off) "
                    "and no registry mirror is configured"
                )
            return eps
        return self.push_endpoints(domain)

    def push_endpoints(self, domain: str) -> list[Endpoint]:
        """Endpoints of the registry itself: never mirrors (dockerd pushes and logs in there only)."""
        if domain == DEFAULT_DOMAIN:
            return [Endpoint(DOCKER_HUB_URL, DEFAULT_DOMAIN)]
        if self.is_insecure(domain):
            return [
                Endpoint(f"https://{domain}", domain, tls_verify=False),
                Endpoint(f"http://{domain}", domain, tls_verify=False),
            ]
        return [Endpoint(f"https://{domain}", domain)]

    def ssl_context(self, netloc: str, *, verify: bool = True) -> ssl.SSLContext:
        """The system CAs plus certs.d/<netloc>/*.crt, and a client certificate if one is there."""
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        d = os.path.join(self.certs_dir, netloc)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return ctx
        for name in names:
            path = os.path.join(d, name)
            try:
                if name.endswith(".crt") and verify:
                    ctx.load_verify_locations(cafile=path)
                elif name.endswith(".cert"):
                    key = path[: -len(".cert")] + ".key"
                    if not os.path.exists(key):
                        raise InvalidParameter(f"missing key {os.path.basename(key)} for certificate {name}")
                    ctx.load_cert_chain(path, key)
            except (ssl.SSLError, OSError) as e:
                raise InvalidParameter(f"could not load certificate {path}: {e}") from e
        return ctx


def normalize_mirror(url: str) -> str:
    u = url.strip().rstrip("/")
    if "://" not in u:
        u = "https://" + u
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameter(f"invalid mirror: {url!r} is not a valid URI")
    if parts.query or parts.fragment:
        raise InvalidParameter(f"invalid mirror: query or fragment not allowed in {url!r}")
    return u


def registry_hostname(server: str) -> str:
    """A server address as users, the CLI and credential stores write it, to a registry domain.

    `https://index.docker.io/v1/`, `index.docker.io`, `` and `docker.io` are all Docker Hub.
    """
    s = server.strip()
    if not s:
        return DEFAULT_DOMAIN
    if "://" in s:
        s = urlsplit(s).netloc
    s = s.split("/", 1)[0]
    return DEFAULT_DOMAIN if s in _HUB_ALIASES else s


def split_host_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
    else:
        host, port = netloc, ""
    return host, int(port) if port.isdigit() else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
