"""cgroups on the real kernel: limits land in the real files and the kernel enforces pause and kill."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bocker_engine.errors import InvalidParameter
from bocker_engine.runtime.cgroups import Cgroups, CgroupsV1, CgroupsV2, Resources, detect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
]

MiB = 1024 * 1024

# Joins the cgroup the way the container init does (write own pid to every procs file, then exec),
# so that the memory the process then allocates is charged to the container's cgroup.
SELF_JOIN = (
    "import os, sys\n"
    "for f in sys.argv[1:]:\n"
    "    open(f, 'w').write(str(os.getpid()))\n"
    "os.execvp('sleep', ['sleep', '30'])\n"
)


def _parent_dirs(cgs: Cgroups) -> list[Path]:
    if isinstance(cgs, CgroupsV1):
        return [Path(h.mountpoint, cgs.parent) for h in cgs.hierarchies]
    return [Path(cgs.root, cgs.parent)]


def _force_remove(top: Path) -> None:
    """Last-resort cleanup that does not trust the code under test."""
    if not top.exists():
        return
    subdirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*subdirs, top]:
        for state in ("freezer.state", "cgroup.freeze"):
            with contextlib.suppress(OSError):
                (d / state).write_text("THAWED" if state == "freezer.state" else "0")
        with contextlib.suppress(OSError):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(200):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def _thaw_all(top: Path) -> None:
    # A frozen task holds a SIGKILL pending until thawed: thaw before killing, or waiting hangs.
    if not top.exists():
        return
    for d in [top, *(p for p in top.rglob("*") if p.is_dir())]:
        with contextlib.suppress(OSError):
            (d / "freezer.state").write_text("THAWED")
        with contextlib.suppress(OSError):
            (d / "cgroup.freeze").write_text("0")


def _reap(started: list[subprocess.Popen[bytes]]) -> None:
    for p in started:
        if p.poll() is None:
            p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


@pytest.fixture
def procs():
    started: list[subprocess.Popen[bytes]] = []
    yield started
    _reap(started)


@pytest.fixture
def cgs(procs):
    cgroups = detect(parent=f"bocker-test-{secrets.token_hex(4)}")
    try:
        yield cgroups
    finally:
        # Runs even when the test failed half-way: thaw, kill, then remove every directory we made.
        for d in _parent_dirs(cgroups):
            _thaw_all(d)
        _reap(procs)
        for d in _parent_dirs(cgroups):
            _force_remove(d)
        leftovers = [d for d in _parent_dirs(cgroups) if d.exists()]
        assert not leftovers, f"cgroup directories left behind: {leftovers}"


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def test_host_cgroup_lifecycle(cgs, procs):
    name = "c" + secrets.token_hex(6)
    res = Resources(memory=64 * MiB, nano_cpus=500_000_000, cpu_shares=512, cpuset_cpus="0", pids_limit=50)
    assert cgs.validate(res) == []
    cgs.create(name, res)

    if isinstance(cgs, CgroupsV1):

        def d(controller: str) -> str:
            return str(Path(cgs._by_controller[controller].mountpoint, cgs.parent, name))

        assert _read(f"{d('memory')}/memory.limit_in_bytes") == str(64 * MiB)
        if cgs.caps().swap_limit:
            assert _read(f"{d('memory')}/memory.memsw.limit_in_bytes") == str(128 * MiB)
        assert _read(f"{d('cpu')}/cpu.cfs_period_us") == "100000"
        assert _read(f"{d('cpu')}/cpu.cfs_quota_us") == "50000"
        assert _read(f"{d('cpu')}/cpu.shares") == "512"
        assert _read(f"{d('cpuset')}/cpuset.cpus") == "0"
        assert _read(f"{d('cpuset')}/cpuset.mems") == _read(
            f"{cgs._by_controller['cpuset'].mountpoint}/cpuset.mems"
        )
        assert _read(f"{d('pids')}/pids.max") == "50"
    else:
        assert isinstance(cgs, CgroupsV2)
        c = cgs._dir(name)
        assert _read(f"{c}/memory.max") == str(64 * MiB)
        assert _read(f"{c}/cpu.max") == "50000 100000"
        assert _read(f"{c}/cpu.weight") == "20"
        assert _read(f"{c}/cpuset.cpus") == "0"
        assert _read(f"{c}/pids.max") == "50"

    # One process added from outside, one that joins itself before exec like the container init.
    outside = subprocess.Popen(["sleep", "30"])
    procs.append(outside)
    cgs.add_process(name, outside.pid)
    inside = subprocess.Popen([sys.executable, "-c", SELF_JOIN, *cgs.procs_files(name)])
    procs.append(inside)
    deadline = time.monotonic() + 5
    while inside.pid not in cgs.pids(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cgs.pids(name) == sorted([outside.pid, inside.pid])
    for pid in (outside.pid, inside.pid):
        own = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/{cgs.parent}/{name}" in own

    cgs.freeze(name)
    assert cgs.is_frozen(name)
    if isinstance(cgs, CgroupsV1):
        assert _read(f"{d('freezer')}/freezer.state") == "FROZEN"
    else:
        assert "frozen 1" in Path(cgs._dir(name), "cgroup.events").read_text()
    cgs.thaw(name)
    assert not cgs.is_frozen(name)
    assert Path(f"/proc/{outside.pid}/status").read_text().split("\n")[2].split()[1] in ("S", "R")
    cgs.update(name, Resources(pids_limit=100, memory=96 * MiB, memory_swap=192 * MiB))

    stats = cgs.stats(name)
    mem = stats["memory_stats"]
    assert 0 < mem["usage"] < 96 * MiB
    assert mem["limit"] == 96 * MiB
    assert mem["stats"]
    assert stats["pids_stats"] == {"current": 2, "limit": 100}
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert stats["cpu_stats"]["system_cpu_usage"] > 0
    assert stats["cpu_stats"]["online_cpus"] >= 1

    mounts = cgs.container_mounts(name)
    if isinstance(cgs, CgroupsV1):
        assert {m.source for m in mounts if m.kind == "bind"} == {
            str(Path(h.mountpoint, cgs.parent, name)) for h in cgs.hierarchies
        }

    # Kill while paused: the SIGKILL must still be delivered.
    cgs.freeze(name)
    cgs.kill_all(name, signal.SIGKILL)
    assert outside.wait(5) == -signal.SIGKILL
    assert inside.wait(5) == -signal.SIGKILL
    cgs.destroy(name)
    assert cgs.pids(name) == []
    for d_ in cgs._dirs(name):
        assert not os.path.exists(d_), d_
    cgs.destroy(name)  # idempotent


def test_host_destroy_kills_leftovers_and_rejects_bad_cpuset(cgs, procs):
    name = "c" + secrets.token_hex(6)
    cgs.create(name, Resources(memory=32 * MiB))
    p = subprocess.Popen(["sleep", "30"])
    procs.append(p)
    cgs.add_process(name, p.pid)
    cgs.freeze(name)
    cgs.destroy(name)
    assert p.wait(5) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in cgs._dirs(name))

    ncpu = len(os.sched_getaffinity(0))
    with pytest.raises(InvalidParameter, match="Requested CPUs are not available"):
        cgs.validate(Resources(cpuset_cpus=str(ncpu + 7)))


def test_device_rules_land_in_devices_list(cgs: Cgroups) -> None:
    from bocker_engine.runtime.devices import DEFAULT_RULES, DENY_ALL

    if not isinstance(cgs, CgroupsV1) or cgs._dir("devices", "probe") is None:
        pytest.skip("needs the cgroup v1 devices controller")
    name = "dev-" + secrets.token_hex(4)
    cgs.create(name, Resources(devices=[DENY_ALL, *DEFAULT_RULES]))
    try:
        listed = set(_read(os.path.join(cgs._dir("devices", name) or "", "devices.list")).split("\n"))
        assert listed - {""} == {r.v1() for r in DEFAULT_RULES}
    finally:
        cgs.destroy(name)
