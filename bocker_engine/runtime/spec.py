"""What to run: the description of a container (or exec) process handed to the supervisor.

The engine builds it from a container's Config/HostConfig; the supervisor and the container
init only read it. It crosses a process boundary as JSON, so it holds plain data only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Docker's default capability set (moby: oci/caps/defaults.go).
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# moby: oci/defaults.go DefaultLinuxSpec
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Mount:
    """A mount inside the container. kind: bind | tmpfs | symlink | remount-ro | cgroup2."""

    kind: str
    target: str
    source: str = ""
    readonly: bool = False
    options: str = ""


@dataclass
class ProcessSpec:
    id: str
    args: list[str]
    env: list[str]
    cwd: str = "/"
    user: str = ""
    # HostConfig.GroupAdd: more supplementary groups, names (the container's /etc/group) or gids.
    group_add: list[str] = field(default_factory=list)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    console_size: tuple[int, int] = (0, 0)
    log_path: str = ""
    # The log driver ("json-file", "local", "none"), its options and the attrs each json-file
    # record carries (labels, env, tag: computed by the engine, runtime/logwriter.py writes them).
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    log_attrs: dict[str, str] = field(default_factory=dict)
    # Set for a container's first process; an exec joins `container_pid`'s namespaces instead.
    rootfs: str = ""
    hostname: str = ""
    mounts: list[Mount] = field(default_factory=list)
    cgroup_procs: list[str] = field(default_factory=list)
    cgroup_mounts: list[Mount] = field(default_factory=list)
    # "" = a new network namespace with loopback only, "host" = the host's, else a path to join.
    netns: str = ""
    # A private cgroup namespace (cgroup v2, as Docker's default there): set after joining the
    # cgroup, so that the container's / is its own cgroup.
    cgroupns: bool = False
    caps: list[str] = field(default_factory=lambda: list(DEFAULT_CAPS))
    masked_paths: list[str] = field(default_factory=lambda: list(MASKED_PATHS))
    readonly_paths: list[str] = field(default_factory=lambda: list(READONLY_PATHS))
    readonly_rootfs: bool = False
    privileged: bool = False
    no_new_privileges: bool = False
    # Extra device nodes (`--device`, the host's under --privileged): runtime.devices.DeviceNode fields.
    devices: list[dict[str, Any]] = field(default_factory=list)
    # The seccomp filter as resolved by the engine (runtime.seccomp.resolve); None = unconfined.
    seccomp: dict[str, Any] | None = None
    # Filled in by the supervisor from the host before the container's root is entered, so that
    # nothing in the image can influence them: the highest capability number and its permitted set.
    host_last_cap: int = -1
    host_permitted_caps: int = -1
    shm_size: int = 64 * 1024 * 1024
    sysctls: dict[str, str] = field(default_factory=dict)
    # Host path of an init (tini) to run as PID 1 in front of args (`docker run --init`).
    init_path: str = ""
    container_pid: int = 0
    # Set (a token): the process waits, set up but before exec, until the engine opens this gate
    # (op "open"); the engine finishes the network (veths) meanwhile, like dockerd's prestart hook.
    gate: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view, sharing this spec's lists and dicts (serialise it, do not keep it):
        dataclasses.asdict deep-copies the whole resolved seccomp profile, ~0.5 ms a start."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("mounts", "cgroup_mounts"):
            d[key] = [dataclasses.asdict(m) for m in d[key]]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProcessSpec:
        d = dict(d)
        for key in ("mounts", "cgroup_mounts"):
            d[key] = [Mount(**m) for m in d.get(key, [])]
        d["console_size"] = tuple(d.get("console_size") or (0, 0))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
