"""bockerd's configuration: dockerd's flag names and daemon.json keys."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from bocker_engine import __version__, logconfig
from bocker_engine.errors import EngineError
from bocker_engine.registry.config import RegistryConfig

DEFAULT_SOCKET = "unix:///run/bocker.sock"
VERSION_TEXT = f"bocker-engine version {__version__}"


@dataclass
class Config:
    hosts: list[str] = field(default_factory=list)
    data_root: str = "/var/lib/bocker"
    exec_root: str = "/run/bocker"
    storage_driver: str = "btrfs"
    log_level: str = "info"
    pidfile: str = ""
    registry_mirrors: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    # Never fall back from the mirrors to Docker Hub (air-gapped hosts, and our tests).
    registry_mirrors_only: bool = False
    live_restore: bool = False
    # Containers start with no_new_privs unless their --security-opt says otherwise (dockerd's option).
    no_new_privileges: bool = False
    group: str = "docker"
    # None: not given. An explicit `--tls=false` is the opt-in to plain TCP beyond loopback.
    tls: bool | None = None
    tlsverify: bool | None = None
    tlscacert: str = ""
    tlscert: str = ""
    tlskey: str = ""
    cgroup_parent: str = "bocker"
    config_file: str = "/etc/bocker/daemon.json"
    # Networking (dockerd's names): the default bridge's device, its address, the dynamic range
    # within it, and the pools user networks (and the default bridge without --bip) come from.
    bridge: str = "bocker0"
    bip: str = ""
    fixed_cidr: str = ""
    default_address_pools: list[object] = field(default_factory=list)
    # dockerd's -D: debug logging, and `Debug` in `docker info`.
    debug: bool = False
    labels: list[str] = field(default_factory=list)
    # The log driver and options of containers that do not choose their own.
    log_driver: str = logconfig.DEFAULT_DRIVER
    log_opts: dict[str, str] = field(default_factory=dict)
    # 0: the engine's default.
    max_concurrent_downloads: int = 0
    max_concurrent_uploads: int = 0
    # --validate: check the configuration, print "configuration OK" and exit.
    validate: bool = False
    # The command line, kept so that a reload (SIGHUP) merges the file with the same flags.
    argv: list[str] = field(default_factory=list)


# daemon.json key -> (Config attribute, type)
FILE_KEYS: dict[str, tuple[str, type]] = {
    "hosts": ("hosts", list),
    "data-root": ("data_root", str),
    "exec-root": ("exec_root", str),
    "storage-driver": ("storage_driver", str),
    "log-level": ("log_level", str),
    "pidfile": ("pidfile", str),
    "registry-mirrors": ("registry_mirrors", list),
    "insecure-registries": ("insecure_registries", list),
    "registry-mirrors-only": ("registry_mirrors_only", bool),
    "live-restore": ("live_restore", bool),
    "no-new-privileges": ("no_new_privileges", bool),
    "group": ("group", str),
    "tls": ("tls", bool),
    "tlsverify": ("tlsverify", bool),
    "tlscacert": ("tlscacert", str),
    "tlscert": ("tlscert", str),
    "tlskey": ("tlskey", str),
    "cgroup-parent": ("cgroup_parent", str),
    "bridge": ("bridge", str),
    "bip": ("bip", str),
    "fixed-cidr": ("fixed_cidr", str),
    "default-address-pools": ("default_address_pools", list),
    "debug": ("debug", bool),
    "labels": ("labels", list),
    "log-driver": ("log_driver", str),
    "log-opts": ("log_opts", dict),
    "max-concurrent-downloads": ("max_concurrent_downloads", int),
    "max-concurrent-uploads": ("max_concurrent_uploads", int),
}

# Keys a running daemon takes from a reloaded file (dockerd's, of those this engine has).
RELOADABLE = (
    "debug",
    "log-level",
    "labels",
    "registry-mirrors",
    "insecure-registries",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "live-restore",
)


class ConfigError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bockerd", description="A container engine that speaks the Docker Engine API")
    p.add_argument("-H", "--host", action="append", dest="hosts", help="daemon socket(s) to listen on")
    p.add_argument("--data-root", help="root of persisted state (default /var/lib/bocker)")
    p.add_argument("--exec-root", help="root of runtime state (default /run/bocker)")
    p.add_argument("-s", "--storage-driver", help="btrfs (default) or overlay2")
    p.add_argument("--config-file", help="daemon.json (default /etc/bocker/daemon.json)")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "error", "fatal"])
    p.add_argument("-p", "--pidfile", help="path of the pid file")
    p.add_argument("--registry-mirror", action="append", dest="registry_mirrors", help="mirror for docker.io")
    p.add_argument(
        "--insecure-registry",
        action="append",
        dest="insecure_registries",
        help="registry reachable over plain HTTP / unverified TLS (host:port or CIDR)",
    )
    p.add_argument(
        "--registry-mirrors-only",
        action="store_const",
        const=True,
        default=None,
        help="never contact Docker Hub itself, only the mirrors (air-gapped hosts)",
    )
    p.add_argument(
        "--live-restore",
        action="store_const",
        const=True,
        default=None,
        help="keep containers running when the daemon stops",
    )
    p.add_argument(
        "--no-new-privileges",
        action="store_const",
        const=True,
        default=None,
        help="set no-new-privileges by default for new containers",
    )
    p.add_argument("-G", "--group", help="group of the unix socket (default docker)")
    p.add_argument(
        "--tls",
        nargs="?",
        const=True,
        default=None,
        type=_flag_bool,
        metavar="BOOL",
        help="use TLS (--tls=false: plain TCP)",
    )
    p.add_argument(
        "--tlsverify",
        nargs="?",
        const=True,
        default=None,
        type=_flag_bool,
        metavar="BOOL",
        help="use TLS and require client certificates signed by --tlscacert",
    )
    p.add_argument("--tlscacert")
    p.add_argument("--tlscert")
    p.add_argument("--tlskey")
    p.add_argument("--cgroup-parent")
    p.add_argument("-b", "--bridge", help="the default bridge network's device (default bocker0)")
    p.add_argument("--bip", help="the default bridge's address and subnet (CIDR, e.g. 172.17.0.1/16)")
    p.add_argument("--fixed-cidr", help="the range of the default bridge's subnet containers get addresses from")
    p.add_argument(
        "--default-address-pools",
        action="append",
        help="pools networks get subnets from: base=10.10.0.0/16,size=24 (repeatable)",
    )
    p.add_argument("-D", "--debug", action="store_const", const=True, default=None, help="enable debug mode")
    p.add_argument("--label", action="append", dest="labels", help="key=value label of this daemon (repeatable)")
    p.add_argument("--log-driver", help="default log driver of containers (json-file, none)")
    p.add_argument("--log-opt", action="append", dest="log_opts", help="default log driver option key=value")
    p.add_argument("--max-concurrent-downloads", type=int, help="layers pulled at once per pull (default 3)")
    p.add_argument("--max-concurrent-uploads", type=int, help="layers pushed at once per push (default 3)")
    p.add_argument(
        "--validate", action="store_const", const=True, default=None, help="validate the configuration and exit"
    )
    p.add_argument("-v", "--version", action="version", version=VERSION_TEXT)
    return p


def _flag_bool(value: str) -> bool:
    """A boolean flag's value as Go's strconv.ParseBool reads it (dockerd's `--tls=false`)."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


def _is_loopback(host: str) -> bool:
    """dockerd's test: the literal "localhost", a loopback IP, or a name resolving to one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_tcp_hosts(cfg: Config) -> None:
    """Refuse TCP listeners beyond loopback without TLS, as dockerd 27+ does, unless TLS was
    explicitly turned off (`--tls=false`): whoever reaches such a socket is root on this host."""
    if cfg.tls is not None:
        return  # TLS on, or explicitly off
    for host in cfg.hosts:
        url = urlparse(host if "://" in host else "tcp://" + host)
        if url.scheme not in ("tcp", "http"):
            continue
        if not _is_loopback(url.hostname or ""):
            raise ConfigError(
                f"refusing to listen on {host} without TLS: anyone who can reach it has root access to this "
                "host. Use --tlsverify with --tlscacert, --tlscert and --tlskey, listen on a loopback address, "
                "or pass --tls=false to listen without TLS anyway"
            )


def check_values(cfg: Config) -> None:
    """What dockerd's config validation refuses among the keys that have no parser of their own."""
    for key, values in (("hosts", cfg.hosts), ("labels", cfg.labels), ("registry-mirrors", cfg.registry_mirrors),
                        ("insecure-registries", cfg.insecure_registries)):
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"invalid value for {key} in {cfg.config_file}: expected a list of strings")
    for label in cfg.labels:
        if not isinstance(label, str) or "=" not in label:
            raise ConfigError(f"bad attribute format: {label}")
    for key, n in (("downloads", cfg.max_concurrent_downloads), ("uploads", cfg.max_concurrent_uploads)):
        if n < 0:
            raise ConfigError(f"invalid max concurrent {key}: {n}")
    if cfg.log_level not in ("debug", "info", "warn", "error", "fatal"):
        raise ConfigError(f"invalid logging level: {cfg.log_level}")
    try:
        RegistryConfig(mirrors=list(cfg.registry_mirrors), insecure=list(cfg.insecure_registries))
    except EngineError as e:
        raise ConfigError(e.message) from None
    try:
        opts = logconfig.check_opts_types(cfg.log_opts)
        logconfig.validate(cfg.log_driver, opts)
    except logconfig.LogConfigError as e:
        raise ConfigError(f"failed to set log opts: {e}") from None


def python_log_level(cfg: Config) -> str:
    """The logging module's level for the daemon's configuration: debug mode wins over log-level."""
    if cfg.debug:
        return "DEBUG"
    return {"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg.log_level, cfg.log_level.upper())


def load(argv: list[str] | None = None) -> Config:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    cfg = Config(argv=argv)
    flags: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    if "log_opts" in flags:
        try:
            flags["log_opts"] = logconfig.parse_opt_flags(flags["log_opts"])
        except logconfig.LogConfigError as e:
            raise ConfigError(str(e)) from None
    path = flags.pop("config_file", None)
    explicit = path is not None
    path = path or cfg.config_file
    cfg.config_file = path
    file_values: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                raw = json.load(f)
        except ValueError as e:
            raise ConfigError(f"unable to configure the daemon with file {path}: {e}") from None
        unknown = [k for k in raw if k not in FILE_KEYS]
        if unknown:
            raise ConfigError(f"the following directives don't match any configuration option: {', '.join(unknown)}")
        for key, value in raw.items():
            attr, typ = FILE_KEYS[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise ConfigError(f"invalid value for {key} in {path}: expected {typ.__name__}")
            file_values[attr] = value
    elif explicit:
        raise ConfigError(f"open {path}: no such file or directory")
    both = [k for k in file_values if k in flags]
    if both:
        names = ", ".join(f"{next(n for n, (a, _) in FILE_KEYS.items() if a == k)}" for k in both)
        raise ConfigError(
            f"the following directives are specified both as a flag and in the configuration file: {names}"
        )
    for attr, value in {**file_values, **flags}.items():
        setattr(cfg, attr, value)
    if not cfg.hosts:
        cfg.hosts = [DEFAULT_SOCKET]
    if cfg.bridge == "none":
        raise ConfigError("--bridge none is not supported: containers on the default network need a bridge")
    if not 0 < len(cfg.bridge) <= 15:
        raise ConfigError(f"invalid --bridge {cfg.bridge!r}: an interface name has 1 to 15 characters")
    if cfg.tlsverify is not None:
        # dockerd: --tlsverify given at all, true or false, turns TLS on.
        cfg.tls = True
    check_tcp_hosts(cfg)
    check_values(cfg)
    if cfg.storage_driver == "overlay":
        cfg.storage_driver = "overlay2"
    cfg.data_root = os.path.abspath(cfg.data_root)
    cfg.exec_root = os.path.abspath(cfg.exec_root)
    return cfg
