"""Legacy links (`--link name:alias`) on the default bridge: what dockerd gives the linking
container, an /etc/hosts line and environment variables describing the linked one."""

from __future__ import annotations

from bocker_engine.errors import InvalidParameter


def parse_link(link: str) -> tuple[str, str, str]:
    """`name:alias`, `name` or dockerd's stored `/name:/parent/alias` -> (name, alias, `name:alias`)."""
    name, _, alias = link.partition(":")
    name = name.lstrip("/")
    alias = alias.rsplit("/", 1)[-1] or name
    if not name:
        raise InvalidParameter(f"invalid link: {link!r}")
    return name, alias, f"{name}:{alias}"


def _port_order(key: str) -> tuple[int, int]:
    port, _, proto = key.partition("/")
    return int(port), 0 if proto in ("", "tcp") else 1


def link_env(link_name: str, alias: str, ip: str, exposed: list[str], child_env: list[str]) -> list[str]:
    """dockerd's variables for a link: `link_name` is `/parent/alias`, `exposed` the linked
    container's `port/proto` keys, `child_env` its Config.Env (HOME and PATH left out, as dockerd)."""
    prefix = alias.upper().replace("-", "_")
    ports = sorted(exposed, key=_port_order)
    env = []
    if ports:
        port, _, proto = ports[0].partition("/")
        env.append(f"{prefix}_PORT={proto or 'tcp'}://{ip}:{port}")
    for key in ports:
        port, _, proto = key.partition("/")
        proto = proto or "tcp"
        p = f"{prefix}_PORT_{port}_{proto.upper()}"
        env += [f"{p}={proto}://{ip}:{port}", f"{p}_ADDR={ip}", f"{p}_PORT={port}", f"{p}_PROTO={proto}"]
    env.append(f"{prefix}_NAME={link_name}")
    for var in child_env:
        key, sep, value = var.partition("=")
        if sep and key not in ("HOME", "PATH"):
            env.append(f"{prefix}_ENV_{key}={value}")
    return env


def hosts_names(alias: str, hostname: str, name: str) -> str:
    """The names of a linked container's /etc/hosts line: alias, its hostname, its name (if not the alias)."""
    names = [alias]
    if hostname:
        names.append(hostname)
    if alias != name:
        names.append(name)
    return " ".join(names)
