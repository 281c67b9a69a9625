"""Turning a create request into a container's Config and HostConfig, dockerd's way.

The CLI sends every field with zero values, docker-py only what was set; both must end up
with the same container. The image's config fills what the request leaves empty.
"""

from __future__ import annotations

import copy
from typing import Any

from bocker_engine.engine import security_opts
from bocker_engine.errors import InvalidParameter
from bocker_engine.linux import CAP_NUMBERS
from bocker_engine.runtime.devices import container_devices
from bocker_engine.runtime.spec import DEFAULT_CAPS

# The container config fields, with Docker's zero values (image configs carry the same).
CONTAINER_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}

HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "bridge",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "ConsoleSize": [0, 0],
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "host",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": None,
    "PidsLimit": None,
    "Ulimits": [],
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
    "Init": None,
    "Sysctls": None,
    "Mounts": None,
}

CONFIG_KEYS = set(CONTAINER_CONFIG_DEFAULTS) | {
    "ExposedPorts",
    "StopSignal",
    "StopTimeout",
    "Healthcheck",
    "ArgsEscaped",
    "NetworkDisabled",
    "MacAddress",
    "Shell",
}

VALID_RESTART = {"no", "always", "on-failure", "unless-stopped"}


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


def merge_image_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """moby daemon/commit.go `merge`: the image's config fills in what the user left unset."""
    c = copy.deepcopy(user)
    if not c.get("User"):
        c["User"] = image.get("User", "")
    ports = dict(image.get("ExposedPorts") or {})
    ports.update(c.get("ExposedPorts") or {})
    if ports:
        c["ExposedPorts"] = ports
    env = list(c.get("Env") or [])
    if not env:
        env = list(image.get("Env") or [])
    else:
        keys = {e.split("=", 1)[0] for e in env}
        env += [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys]
    c["Env"] = env or None
    labels = dict(image.get("Labels") or {})
    labels.update(c.get("Labels") or {})
    c["Labels"] = labels
    if not c.get("Entrypoint"):
        if not c.get("Cmd"):
            c["Cmd"] = image.get("Cmd")
        if c.get("Entrypoint") is None:
            c["Entrypoint"] = image.get("Entrypoint")
    if c.get("Healthcheck") is None and image.get("Healthcheck"):
        c["Healthcheck"] = image["Healthcheck"]
    if not c.get("WorkingDir"):
        c["WorkingDir"] = image.get("WorkingDir", "")
    vols = dict(image.get("Volumes") or {})
    vols.update(c.get("Volumes") or {})
    c["Volumes"] = vols or None
    if not c.get("StopSignal") and image.get("StopSignal"):
        c["StopSignal"] = image["StopSignal"]
    if not c.get("OnBuild"):
        c["OnBuild"] = image.get("OnBuild")
    if not c.get("Shell") and image.get("Shell"):
        c["Shell"] = image["Shell"]
    return c


def normalize_config(body: dict[str, Any], image: dict[str, Any], image_name: str, container_id: str) -> dict[str, Any]:
    user = {k: v for k, v in body.items() if k in CONFIG_KEYS}
    for key in ("Cmd", "Entrypoint"):
        if isinstance(user.get(key), str):
            user[key] = [user[key]]
    if isinstance(user.get("Env"), dict):
        user["Env"] = [f"{k}={v}" for k, v in user["Env"].items()]
    for e in user.get("Env") or []:
        if not isinstance(e, str) or e.startswith("="):
            raise InvalidParameter(f"invalid environment variable: {e}")
    cfg = {**CONTAINER_CONFIG_DEFAULTS, **merge_image_config(user, image)}
    cfg["Image"] = image_name
    if not cfg.get("Hostname"):
        cfg["Hostname"] = container_id[:12]
    if not cfg.get("Entrypoint") and not cfg.get("Cmd"):
        raise InvalidParameter("No command specified")
    wd = cfg.get("WorkingDir") or ""
    if wd and not wd.startswith("/"):
        raise InvalidParameter(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
    cfg.pop("MacAddress", None)
    return cfg


def normalize_host_config(hc: dict[str, Any] | None, cgroup_version: int = 1) -> dict[str, Any]:
    # Empty strings from the CLI mean "unset", like absent keys from docker-py.
    hc = {k: v for k, v in (hc or {}).items() if v is not None and v != "" or k in ("Init",)}
    out = {**copy.deepcopy(HOST_CONFIG_DEFAULTS), **hc}
    if "CgroupnsMode" not in hc:
        out["CgroupnsMode"] = "private" if cgroup_version == 2 else "host"
    elif out["CgroupnsMode"] not in ("host", "private"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {out['CgroupnsMode']}")
    # dockerd's fixMemorySwappiness and PidsLimit handling: -1 / <= 0 mean "unset" (null).
    if out.get("MemorySwappiness") == -1:
        out["MemorySwappiness"] = None
    if out.get("PidsLimit") is not None and out["PidsLimit"] <= 0:
        out["PidsLimit"] = None
    if out.get("OomKillDisable") is None:
        out["OomKillDisable"] = False
    log = out.get("LogConfig") or {}
    if not log.get("Type"):
        out["LogConfig"] = {"Type": "json-file", "Config": log.get("Config") or {}}
    elif log["Type"] not in ("json-file", "local", "none"):
        if log["Type"] not in DOCKER_LOG_DRIVERS:
            raise InvalidParameter(f"logger: no log driver named '{log['Type']}' is registered")
        raise InvalidParameter(f'logging driver "{log["Type"]}" is not supported (json-file, local, none)')
    if out.get("NetworkMode") in ("", "default", None):
        out["NetworkMode"] = "bridge"
    rp = out.get("RestartPolicy") or {}
    name = rp.get("Name") or "no"
    if name not in VALID_RESTART:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    if name != "on-failure" and rp.get("MaximumRetryCount"):
        raise InvalidParameter("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if name != "no" and out.get("AutoRemove"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    out["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(rp.get("MaximumRetryCount") or 0)}
    if not out.get("ShmSize"):
        out["ShmSize"] = HOST_CONFIG_DEFAULTS["ShmSize"]
    if out.get("ConsoleSize") is None:
        out["ConsoleSize"] = [0, 0]
    security_opts.parse(out.get("SecurityOpt"))
    container_devices(out)  # refuses bad --device / --device-cgroup-rule values at create, like dockerd
    return out


# Drivers a dockerd knows (and that we do not implement): they keep our "not supported" answer;
# any other name gets dockerd's "no log driver ... registered".
DOCKER_LOG_DRIVERS = frozenset(
    ("local", "syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs", "logentries")
)


def capabilities(hc: dict[str, Any]) -> list[str]:
    """Docker's default set with CapAdd/CapDrop applied ("ALL" allowed in both)."""

    def norm(names: list[str] | None) -> list[str]:
        out = []
        for n in names or []:
            n = n.upper()
            if n != "ALL" and not n.startswith("CAP_"):
                n = "CAP_" + n
            if n != "ALL" and n not in CAP_NUMBERS:
                raise InvalidParameter(f'unknown capability: "{n}"')
            out.append(n)
        return out

    add, drop = norm(hc.get("CapAdd")), norm(hc.get("CapDrop"))
    caps = list(DEFAULT_CAPS)
    if "ALL" in drop:
        caps = []
    else:
        caps = [c for c in caps if c not in drop]
    if "ALL" in add:
        caps = [c for c in CAP_NUMBERS if c not in drop or "ALL" in drop]
    else:
        caps += [c for c in add if c not in caps]
    return caps
