"""/_ping, /version, /info."""

from __future__ import annotations

import os
import platform
from typing import Any

from aiohttp import web

from bocker_engine import API_VERSION, MIN_API_VERSION, __version__
from bocker_engine.api.app import Router, daemon_of, json_response
from bocker_engine.engine.images import host_arch

PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Pragma": "no-cache",
    "Swarm": "inactive",
}


async def ping(request: web.Request) -> web.StreamResponse:
    body = b"" if request.method == "HEAD" else b"OK"
    resp = web.Response(body=body, headers=PING_HEADERS)
    resp.content_type = "text/plain"
    return resp


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


async def version(request: web.Request) -> web.StreamResponse:
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
    return json_response(
        {
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
    )


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


async def info(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    cs = list(d.containers.containers.values())
    running = sum(1 for c in cs if c.state.Running and not c.state.Paused)
    paused = sum(1 for c in cs if c.state.Paused)
    caps = d.cgroups.caps()
    body: dict[str, Any] = {
        "ID": d.engine_id,
        "Containers": len(cs),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(cs) - running - paused,
        "Images": len(d.images.images),
        "Driver": d.driver.name,
        "DriverStatus": d.driver.status(),
        # Only what exists: no volume driver yet ("null" is none's driver).
        "Plugins": {
            "Volume": [],
            "Network": ["bridge", "host", "null"],
            "Authorization": None,
            "Log": ["json-file", "none"],
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
        "Debug": d.config.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": False,
        "NGoroutines": 0,
        "SystemTime": _now(),
        "LoggingDriver": d.config.log_driver,
        "CgroupDriver": d.cgroups.driver,
        "CgroupVersion": str(d.cgroups.version),
        "NEventsListener": 0,
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
            "Mirrors": list(d.config.registry_mirrors),
        },
        "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(),
        "GenericResources": None,
        "DockerRootDir": d.config.data_root,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": platform.node(),
        "Labels": list(d.config.labels),
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
        "LiveRestoreEnabled": d.config.live_restore,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "bocker-supervisor", "Expected": ""},
        "RuncCommit": {"ID": "bocker-init", "Expected": ""},
        "InitCommit": {"ID": "tini" if d.init_path else "", "Expected": ""},
        "SecurityOptions": security_options(d.config.no_new_privileges, d.cgroups.version),
        "CDISpecDirs": [],
        "Warnings": d.warnings or None,
    }
    return json_response(body)


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


def _now() -> str:
    from bocker_engine.runtime.stdio import rfc3339nano

    return rfc3339nano()


def setup(router: Router) -> None:
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
