"""Which cgroup implementation the host needs."""

from __future__ import annotations

import os

from bocker_engine.runtime.cgroups.base import Cgroups
from bocker_engine.runtime.cgroups.v1 import CgroupsV1
from bocker_engine.runtime.cgroups.v2 import CgroupsV2


def detect(
    root: str = "/sys/fs/cgroup",
    parent: str = "bocker",
    *,
    proc: str = "/proc",
    mountinfo: str | None = None,
) -> Cgroups:
    """v2 when `root` is a cgroup2 mount (unified), else the v1 hierarchies found in mountinfo."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupsV2(root, parent, proc=proc)
    return CgroupsV1(root, parent, proc=proc, mountinfo=mountinfo)
