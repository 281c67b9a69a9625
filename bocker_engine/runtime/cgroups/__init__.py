"""Container cgroups: one interface, a cgroup v1 and a cgroup v2 implementation picked from the host.

Everything here is plain reads and writes of cgroupfs files (no shell, no libraries), so the same code
runs against a fake tree in tests. Resource semantics follow Docker's HostConfig; the translation to
kernel files follows runc, so a container limited here reports the same numbers as under Docker.

Modules: resources (HostConfig fields, validation, conversions), files (cgroupfs reads and writes),
base (the interface and what v1 and v2 share), v1, v2, detection.
"""

from bocker_engine.runtime.cgroups.base import CONTAINER_CGROUP_DIR, WAIT_SECONDS, CgroupMount, Cgroups
from bocker_engine.runtime.cgroups.detection import detect
from bocker_engine.runtime.cgroups.resources import (
    DEFAULT_CFS_PERIOD,
    MAX_CPU_SHARES,
    MIN_CPU_SHARES,
    MIN_MEMORY,
    SWAP_UNSUPPORTED_WARNING,
    HostCaps,
    Resources,
    cpu_weight,
    io_weight,
    parse_cpuset,
)
from bocker_engine.runtime.cgroups.v1 import CgroupsV1, Hierarchy, parse_mountinfo
from bocker_engine.runtime.cgroups.v2 import V2_CONTROLLERS, CgroupsV2

__all__ = [
    "CONTAINER_CGROUP_DIR",
    "DEFAULT_CFS_PERIOD",
    "MAX_CPU_SHARES",
    "MIN_CPU_SHARES",
    "MIN_MEMORY",
    "SWAP_UNSUPPORTED_WARNING",
    "V2_CONTROLLERS",
    "WAIT_SECONDS",
    "CgroupMount",
    "Cgroups",
    "CgroupsV1",
    "CgroupsV2",
    "HostCaps",
    "Hierarchy",
    "Resources",
    "cpu_weight",
    "detect",
    "io_weight",
    "parse_cpuset",
    "parse_mountinfo",
]
