"""From a container's Config and HostConfig to what the runtime needs: the process spec and
the /etc files (hostname, hosts, resolv.conf) bound into it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bocker_engine import linux, logconfig
from bocker_engine.engine import container_config as cc
from bocker_engine.engine import security_opts
from bocker_engine.engine.mounts import runtime_mounts
from bocker_engine.network import etcfiles
from bocker_engine.runtime.cgroups import Cgroups
from bocker_engine.runtime.devices import container_devices
from bocker_engine.runtime.spec import Mount, ProcessSpec

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container


def process_spec(
    c: Container,
    rootfs: str,
    cgroups: Cgroups,
    init_path: str,
    volume_sources: dict[str, str] | None = None,
    *,
    no_new_privileges: bool = False,
) -> ProcessSpec:
    """`no_new_privileges`: the daemon's default (--no-new-privileges), which the container's
    `--security-opt no-new-privileges=...` overrides either way."""
    cfg, hc = c.config, c.host_config
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"HOSTNAME={cfg['Hostname']}"]
    if cfg.get("Tty"):
        env.append("TERM=xterm")
    for e in cfg.get("Env") or []:
        key = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != key] + [e]
    mounts = [
        Mount("bind", "/etc/resolv.conf", c.file("resolv.conf")),
        Mount("bind", "/etc/hostname", c.file("hostname")),
        Mount("bind", "/etc/hosts", c.file("hosts")),
    ]
    # Volumes, binds and tmpfs mounts (engine/mounts.py). As with dockerd, a user mount on one of
    # the /etc files replaces it, and everything goes parents first (a volume on /etc still
    # gets the container's hosts file).
    user = runtime_mounts(c.mount_points, hc.get("Tmpfs") or {}, volume_sources or {})
    taken = {m.target for m in user}
    mounts = sorted(
        [m for m in mounts if m.target not in taken] + user, key=lambda m: m.target.rstrip("/").count("/")
    )
    cg_mounts = [Mount(m.kind, m.target, m.source, m.readonly, m.options) for m in cgroups.container_mounts(c.id)]
    privileged = bool(hc.get("Privileged"))
    opts = security_opts.parse(hc.get("SecurityOpt"))
    caps = cc.capabilities(hc)
    _rules, nodes = container_devices(hc)
    spec = ProcessSpec(
        id=c.id,
        args=[c.path, *c.args],
        env=env,
        cwd=cfg.get("WorkingDir") or "/",
        user=cfg.get("User") or "",
        group_add=[str(g) for g in hc.get("GroupAdd") or []],
        tty=bool(cfg.get("Tty")),
        open_stdin=bool(cfg.get("OpenStdin")),
        stdin_once=bool(cfg.get("StdinOnce")),
        console_size=tuple(hc.get("ConsoleSize") or (0, 0)),
        log_path=c.log_file,
        log_driver=c.log_driver,
        log_opts=dict((hc.get("LogConfig") or {}).get("Config") or {}),
        log_attrs=log_attrs(c, env),
        rootfs=rootfs,
        hostname=cfg["Hostname"],
        mounts=mounts,
        cgroup_procs=cgroups.procs_files(c.id),
        cgroup_mounts=cg_mounts,
        cgroupns=cgroups.version == 2,
        netns="host" if hc.get("NetworkMode") == "host" else "",
        caps=caps,
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        privileged=privileged,
        no_new_privileges=no_new_privileges if opts.no_new_privileges is None else opts.no_new_privileges,
        devices=[dataclasses.asdict(n) for n in nodes],
        # dockerd filters on the container's final capability set; privileged runs unconfined.
        seccomp=security_opts.seccomp_filter(hc, list(linux.CAP_NUMBERS) if privileged else caps),
        shm_size=int(hc.get("ShmSize") or 67108864),
        sysctls=dict(hc.get("Sysctls") or {}),
        init_path=init_path if hc.get("Init") else "",
    )
    if spec.init_path:
        spec.mounts.append(Mount("bind", "/sbin/docker-init", spec.init_path, True))
    if hc.get("MaskedPaths") is not None:
        spec.masked_paths = list(hc["MaskedPaths"])
    if hc.get("ReadonlyPaths") is not None:
        spec.readonly_paths = list(hc["ReadonlyPaths"])
    return spec


def write_etc_files(c: Container) -> None:
    hostname = c.config["Hostname"]
    if c.config.get("Domainname"):
        hostname_full = f"{hostname}.{c.config['Domainname']}"
    else:
        hostname_full = hostname
    with open(c.file("hostname"), "w") as f:
        f.write(hostname + "\n")
    hosts = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    for extra in c.host_config.get("ExtraHosts") or []:
        host, _, ip = extra.partition(":")
        hosts.append(f"{ip}\t{host}")
    if c.host_config.get("NetworkMode") != "host":
        hosts.append(f"127.0.1.1\t{hostname_full}" + (f" {hostname}" if hostname_full != hostname else ""))
    with open(c.file("hosts"), "w") as f:
        f.write("\n".join(hosts) + "\n")
    with open(c.file("resolv.conf"), "w") as f:
        f.write(resolv_conf(c.host_config))


def resolv_conf(hc: dict[str, Any]) -> str:
    """The host's resolv.conf without loopback resolvers (unreachable from the container),
    with --dns/--dns-search/--dns-option applied, as dockerd writes it."""
    ns, search, options = etcfiles.host_resolv()
    if hc.get("NetworkMode") != "host":
        ns = [n for n in ns if not etcfiles.is_loopback(n)]
    return etcfiles.render(
        list(hc.get("Dns") or []) or ns,
        list(hc.get("DnsSearch") or []) or search,
        list(hc.get("DnsOptions") or []) or options,
    )


def log_attrs(c: Container, env: list[str]) -> dict[str, str]:
    """The attrs of each json-file record: labels, env and tag, as dockerd's json-file adds them."""
    if c.log_driver != "json-file":
        return {}
    opts = (c.host_config.get("LogConfig") or {}).get("Config") or {}
    attrs = logconfig.extra_attrs(opts, c.config.get("Labels") or {}, env)
    if opts.get("tag"):
        fields = logconfig.tag_fields(
            c.id, c.name, c.image_id, c.config.get("Image") or "", c.config.get("Hostname") or "",
            " ".join([c.path, *c.args]),
        )
        attrs["tag"] = logconfig.log_tag(opts["tag"], fields)
    return attrs
