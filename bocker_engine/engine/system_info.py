"""What `docker version` and `docker info` report about the engine and the host."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import TYPE_CHECKING, Any

from bocker_engine import API_VERSION, MIN_API_VERSION, __version__
from bocker_engine.engine.images import host_arch
from bocker_engine.timefmt import rfc3339nano

if TYPE_CHECKING:
    from bocker_engine.config import Config
    from bocker_engine.engine.containers import ContainerService
    from bocker_engine.engine.images import ImageService
    from bocker_engine.runtime.cgroups import Cgroups
    from bocker_engine.storage.driver import Driver


def _kernel() -> str:
    return platform.release()


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


@cache
def version() -> dict[str, Any]:
    """`docker version`'s figures; they do not change while the daemon runs."""
    details = {
        "ApiVersion": API_VERSION,
        "Arch": host_arch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": _kernel(),
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    }
    return {
        "Platform": {"Name": "bocker-engine"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": details["GoVersion"],
        "Os": "linux",
        "Arch": host_arch(),
        "KernelVersion": _kernel(),
        "Experimental": False,
        "BuildTime": "",
    }


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def info(
    *,
    engine_id: str,
    containers: ContainerService,
    images: ImageService,
    driver: Driver,
    cgroups: Cgroups,
    config: Config,
    init_path: str,
    warnings: list[str],
    events_listeners: int,
) -> dict[str, Any]:
    """`docker info`'s figures, from the engine's parts in one call."""
    cs = list(containers.containers.values())
    running = sum(1 for c in cs if c.state.Running and not c.state.Paused and not c.state.Restarting)
    paused = sum(1 for c in cs if c.state.Paused)
    caps = cgroups.caps()
    body: dict[str, Any] = {
        "ID": engine_id,
        "Containers": len(cs),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(cs) - running - paused,
        "Images": len(images.images),
        "Driver": driver.name,
        "DriverStatus": driver.status(),
        # Only what exists: no volume driver yet ("null" is none's driver).
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": None,
            "Log": ["json-file", "local"],  # dockerd lists the drivers but "none"
        },
        "MemoryLimit": caps.memory_limit,
        "SwapLimit": caps.swap_limit,
        "CpuCfsPeriod": caps.cpu_cfs,
        "CpuCfsQuota": caps.cpu_cfs,
        "CPUShares": caps.cpu_shares,
        "CPUSet": caps.cpuset,
        "PidsLimit": caps.pids_limit,
        "IPv4Forwarding": _ip_forward(),
        "BridgeNfIptables": False,
        "BridgeNfIp6tables": False,
        "Debug": config.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": False,
        "NGoroutines": 0,
        "SystemTime": rfc3339nano(),
        "LoggingDriver": config.log_driver,
        "CgroupDriver": cgroups.driver,
        "CgroupVersion": str(cgroups.version),
        "NEventsListener": events_listeners,
        "KernelVersion": _kernel(),
        "OperatingSystem": _os_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {},
            "Mirrors": list(config.registry_mirrors),
        },
        "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(),
        "GenericResources": None,
        "DockerRootDir": config.data_root,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": platform.node(),
        "Labels": list(config.labels),
        "ExperimentalBuild": False,
        "ServerVersion": __version__,
        # Named runc because clients key on it (the CLI prints it; docker-py and compose pass
        # `runtime` only when asked, and some CI checks expect the default runtime to be runc).
        "Runtimes": {"runc": {"path": "bocker-supervisor"}},
        "DefaultRuntime": "runc",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": config.live_restore,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "bocker-supervisor", "Expected": ""},
        "RuncCommit": {"ID": "bocker-init", "Expected": ""},
        "InitCommit": {"ID": "tini" if init_path else "", "Expected": ""},
        "SecurityOptions": security_options(config.no_new_privileges, cgroups.version),
        "CDISpecDirs": [],
        "Warnings": warnings or None,
    }
    return body


def _ip_forward() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def security_options(no_new_privileges: bool, cgroup_version: int) -> list[str]:
    """dockerd's list: the seccomp profile in force by default, then the daemon-wide options."""
    out = ["name=seccomp,profile=builtin"]
    if no_new_privileges:
        out.append("name=no-new-privileges")
    if cgroup_version == 2:
        out.append("name=cgroupns")
    return out
