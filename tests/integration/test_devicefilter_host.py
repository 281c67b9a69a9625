"""The cgroup v2 device program, live: /sys/fs/cgroup/unified is a real cgroup2 hierarchy
(without controllers) on this v1 host, and BPF device programs work on any cgroup2 directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bocker_engine.runtime.cgroups import devicefilter
from bocker_engine.runtime.devices import DEFAULT_RULES, DENY_ALL, DeviceRule

UNIFIED = "/sys/fs/cgroup/unified"

PROBE = r"""
import errno, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
for path, flags in (("/dev/null", os.O_WRONLY), ("/dev/zero", os.O_RDONLY), ("/dev/kmsg", os.O_WRONLY),
                    ("/dev/fuse", os.O_RDWR), ("/dev/fuse", os.O_RDONLY)):
    try:
        os.close(os.open(path, flags))
        print(path, flags, "ok")
    except OSError as e:
        print(path, flags, errno.errorcode[e.errno])
"""


@pytest.fixture
def cgroup() -> Iterator[str]:
    if os.geteuid() != 0 or not os.path.exists(os.path.join(UNIFIED, "cgroup.procs")):
        pytest.skip("needs root and a cgroup2 hierarchy at " + UNIFIED)
    path = os.path.join(UNIFIED, f"bocker-test-devfilter-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)  # the probe has exited; the attached program goes with the cgroup


def probe(cgroup: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, cgroup], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.splitlines()


def test_default_rules_live(cgroup: str) -> None:
    devicefilter.attach(cgroup, [DENY_ALL, *DEFAULT_RULES])
    assert probe(cgroup) == [
        f"/dev/null {os.O_WRONLY} ok",
        f"/dev/zero {os.O_RDONLY} ok",
        f"/dev/kmsg {os.O_WRONLY} EPERM",
        f"/dev/fuse {os.O_RDWR} EPERM",
        f"/dev/fuse {os.O_RDONLY} EPERM",
    ]


def test_extra_rule_live(cgroup: str) -> None:
    devicefilter.attach(cgroup, [DENY_ALL, *DEFAULT_RULES, DeviceRule("c", 10, 229, "r")])
    out = probe(cgroup)
    assert out[3:] == [f"/dev/fuse {os.O_RDWR} EPERM", f"/dev/fuse {os.O_RDONLY} ok"]
