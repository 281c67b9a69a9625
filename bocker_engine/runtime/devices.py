"""Device access for containers: Docker's default allow-list, `--device`, `--device-cgroup-rule`.

The device cgroup is what keeps a container from using device numbers it was not given: a layer
may carry any device node, and CAP_MKNOD lets root in the container make more, but opening one
needs an allow rule here. The defaults are runc's AllowedDevices, which dockerd applies on top of
its "deny all" (moby oci/defaults.go): mknod of anything (harmless without access), the standard
/dev nodes, ptmx and the pts slaves, and /dev/net/tun.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter

WILDCARD = -1


@dataclass(frozen=True)
class DeviceRule:
    """One cgroup device rule. kind: "a" (all), "c" (char) or "b" (block); -1 is the `*` wildcard."""

    kind: str
    major: int
    minor: int
    access: str
    allow: bool = True

    def v1(self) -> str:
        """The line written to devices.allow / devices.deny ("c 1:3 rwm", "a")."""
        if self.kind == "a":
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "major": self.major, "minor": self.minor, "access": self.access, "allow": self.allow}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeviceRule:
        return cls(str(d["kind"]), int(d["major"]), int(d["minor"]), str(d["access"]), bool(d["allow"]))


@dataclass(frozen=True)
class DeviceNode:
    """A node to create in the container's /dev (`--device`, or the host's under --privileged)."""

    path: str
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int
    uid: int
    gid: int


# runc's AllowedDevices (libcontainer/specconv), which dockerd's containers get.
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule("c", WILDCARD, WILDCARD, "m"),
    DeviceRule("b", WILDCARD, WILDCARD, "m"),
    DeviceRule("c", 1, 3, "rwm"),  # null
    DeviceRule("c", 1, 8, "rwm"),  # random
    DeviceRule("c", 1, 7, "rwm"),  # full
    DeviceRule("c", 5, 0, "rwm"),  # tty
    DeviceRule("c", 1, 5, "rwm"),  # zero
    DeviceRule("c", 1, 9, "rwm"),  # urandom
    DeviceRule("c", 136, WILDCARD, "rwm"),  # pts
    DeviceRule("c", 5, 2, "rwm"),  # ptmx
    DeviceRule("c", 10, 200, "rwm"),  # net/tun
)
DENY_ALL = DeviceRule("a", WILDCARD, WILDCARD, "rwm", allow=False)
ALLOW_ALL = DeviceRule("a", WILDCARD, WILDCARD, "rwm", allow=True)

# moby's daemon/oci_linux.go deviceCgroupRuleRegex
_RULE_RE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def parse_cgroup_rule(text: str) -> DeviceRule:
    """`--device-cgroup-rule 'c 1:11 rwm'`, dockerd's syntax and message."""
    m = _RULE_RE.match(text)
    if not m:
        raise InvalidParameter(f"invalid device cgroup rule format: '{text}'")
    kind, major, minor, access = m.groups()
    return DeviceRule(
        kind,
        WILDCARD if major == "*" else int(major),
        WILDCARD if minor == "*" else int(minor),
        access,
    )


def _node(host_path: str, ctr_path: str, st: os.stat_result) -> DeviceNode:
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    return DeviceNode(
        ctr_path, kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    )


def host_devices(host_path: str, ctr_path: str, perms: str) -> list[tuple[DeviceNode, DeviceRule]]:
    """What `--device host:ctr:perms` adds: the node(s) and their allow rule(s). A directory adds every
    device below it (dockerd does the same), at the same relative paths under `ctr_path`."""
    if not perms or set(perms) - set("rwm"):
        raise InvalidParameter(f"invalid device mode: {perms}")
    try:
        st = os.stat(host_path)
    except OSError as e:
        raise InvalidParameter(
            f'error gathering device information while adding custom device "{host_path}": '
            f"{(e.strerror or str(e)).lower()}"
        ) from None
    found: list[tuple[str, os.stat_result]] = []
    if stat.S_ISDIR(st.st_mode):
        for dirpath, _dirs, files in os.walk(host_path):
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                try:
                    fst = os.stat(full)
                except OSError:
                    continue
                if stat.S_ISCHR(fst.st_mode) or stat.S_ISBLK(fst.st_mode):
                    found.append((os.path.join(ctr_path, os.path.relpath(full, host_path)), fst))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        found.append((ctr_path, st))
    else:
        raise InvalidParameter(
            f'error gathering device information while adding custom device "{host_path}": not a device node'
        )
    out = []
    for path, fst in found:
        node = _node(host_path, path, fst)
        out.append((node, DeviceRule(node.kind, node.major, node.minor, perms)))
    return out


def parse_device(d: dict[str, Any]) -> tuple[str, str, str]:
    """HostConfig.Devices entry -> (host path, container path, permissions), as dockerd defaults them."""
    host = d.get("PathOnHost") or ""
    if not host:
        raise InvalidParameter("invalid device: PathOnHost is required")
    ctr = d.get("PathInContainer") or host
    if not ctr.startswith("/"):
        raise InvalidParameter(f"invalid device path in container: {ctr}")
    return host, os.path.normpath(ctr), d.get("CgroupPermissions") or "rwm"


def container_devices(hc: dict[str, Any]) -> tuple[list[DeviceRule], list[DeviceNode]]:
    """The rules (in order, last match wins) and the extra nodes for a container's HostConfig."""
    if hc.get("Privileged"):
        return [ALLOW_ALL], privileged_nodes()
    rules = [DENY_ALL, *DEFAULT_RULES]
    nodes: list[DeviceNode] = []
    for d in hc.get("Devices") or []:
        for node, rule in host_devices(*parse_device(d)):
            nodes.append(node)
            rules.append(rule)
    for text in hc.get("DeviceCgroupRules") or []:
        rules.append(parse_cgroup_rule(text))
    return rules, nodes


# Under /dev, what --privileged does not copy: the container has its own of these.
_PRIVATE_DEV = ("pts", "shm", "mqueue", "console", "ptmx", "fd", "stdin", "stdout", "stderr", "core")


def privileged_nodes(dev: str = "/dev") -> list[DeviceNode]:
    """The host's device nodes, which dockerd creates in a privileged container's /dev."""
    out: list[DeviceNode] = []
    for dirpath, dirs, files in os.walk(dev):
        if dirpath == dev:
            dirs[:] = [d for d in dirs if d not in _PRIVATE_DEV]
        for name in sorted(files):
            if dirpath == dev and name in _PRIVATE_DEV:
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(_node(full, full, st))
    return out
