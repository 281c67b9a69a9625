"""`docker top` and `docker update` (issue 8), through the CLI and docker-py."""

from __future__ import annotations

import json
import os
from typing import Any

import docker.errors
import pytest

from tests.daemon import Daemon, wait_until

MIB = 1024 * 1024


def _cgroup(dm: Daemon, controller: str, cid: str, name: str) -> str:
    with open(os.path.join("/sys/fs/cgroup", controller, dm.cgroup_parent, cid, name)) as f:
        return f.read().strip()


def _host_config(dm: Daemon, ref: str) -> dict[str, Any]:
    hc: dict[str, Any] = json.loads(dm.out("inspect", ref))[0]["HostConfig"]
    return hc


def test_top_runs_ps_on_the_host(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "--name", "topbox", "busybox", "sleep", "1000").strip()
    pid = json.loads(dm.out("inspect", cid))[0]["State"]["Pid"]
    lines = dm.out("top", "topbox").splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert len(lines) == 2 and lines[1].split()[1] == str(pid) and lines[1].endswith("sleep 1000")
    # ps options after the name; the PID column is the host's, the row only the container's.
    lines = dm.out("top", "topbox", "-o", "pid,user,args").splitlines()
    assert lines[0].split() == ["PID", "USER", "COMMAND"]
    assert [line.split(None, 2) for line in lines[1:]] == [[str(pid), "root", "sleep 1000"]]
    top = dm.client.containers.get("topbox").top()
    assert top["Titles"][1] == "PID" and [p[1] for p in top["Processes"]] == [str(pid)]
    assert top["Processes"][0][-1] == "sleep 1000"
    r = dm.docker("top", "topbox", "-o", "user=PID")
    assert r.returncode != 0 and 'specifying "user=PID" is not allowed' in r.stderr
    dm.out("kill", "topbox")
    dm.out("wait", "topbox")
    r = dm.docker("top", "topbox")
    assert r.returncode != 0 and f"Container {cid} is not running" in r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        dm.client.containers.get(cid).top()
    assert e.value.response.status_code == 409


def test_update_live_and_stored(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "--name", "upbox", "-m", "300m", "busybox", "sleep", "1000").strip()
    dm.out("update", "--memory", "512m", "--cpus", "1", "--pids-limit", "50", "--restart", "on-failure:3", "upbox")
    assert _cgroup(dm, "memory", cid, "memory.limit_in_bytes") == str(512 * MIB)
    assert _cgroup(dm, "cpu", cid, "cpu.cfs_quota_us") == "100000"
    assert _cgroup(dm, "cpu", cid, "cpu.cfs_period_us") == "100000"
    assert _cgroup(dm, "pids", cid, "pids.max") == "50"
    hc = _host_config(dm, "upbox")
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (512 * MIB, 10**9, 50)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    # Unlimited again: pids -1 is stored as 0, like dockerd does.
    dm.out("update", "--pids-limit", "-1", "--memory-swap", "-1", "upbox")
    assert _cgroup(dm, "pids", cid, "pids.max") == "max"
    assert _host_config(dm, "upbox")["PidsLimit"] == 0
    # docker-py; a stopped container keeps the values and gets them at its next start.
    c = dm.client.containers.get("upbox")
    assert c.update(cpu_shares=512, mem_limit="400m", memswap_limit=-1) == {"Warnings": None}
    assert _cgroup(dm, "cpu", cid, "cpu.shares") == "512"
    dm.out("stop", "-t", "0", "upbox")
    dm.out("update", "--cpu-shares", "256", "--memory", "200m", "--memory-swap", "400m", "upbox")
    assert _host_config(dm, "upbox")["CpuShares"] == 256
    dm.out("start", "upbox")
    assert _cgroup(dm, "cpu", cid, "cpu.shares") == "256"
    assert _cgroup(dm, "memory", cid, "memory.limit_in_bytes") == str(200 * MIB)
    assert _cgroup(dm, "pids", cid, "pids.max") == "max"


def test_update_refusals_like_dockerd(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "--name", "refuse", "--cpu-period", "50000", "busybox", "sleep", "1000").strip()
    r = dm.docker("update", "--cpus", "1", "refuse")
    assert r.returncode != 0
    assert (
        f"Cannot update container {cid}: Conflicting options: Nano CPUs cannot be updated as CPU Period "
        "has already been set" in r.stderr
    )
    # No memory+swap limit yet: dockerd asks for both.
    r = dm.docker("update", "--memory", "64m", "refuse")
    assert r.returncode != 0 and "update the memoryswap at the same time" in r.stderr
    r = dm.docker("update", "--memory", "1m", "--memory-swap", "-1", "refuse")
    assert r.returncode != 0 and "Minimum memory limit allowed is 6MB" in r.stderr
    r = dm.docker("update", "--restart", "always:3", "refuse")
    assert r.returncode != 0 and "maximum retry count can only be used with 'on-failure'" in r.stderr
    auto = dm.out("create", "--rm", "busybox", "true").strip()
    r = dm.docker("update", "--restart", "always", auto)
    assert r.returncode != 0 and "AutoRemove is enabled" in r.stderr
    api = dm.api()
    resp = api._post_json(api._url("/containers/{0}/update", cid), data={"Memory": "lots"})
    assert resp.status_code == 400 and "Memory" in resp.json()["message"]
    # The quota may change while the period stays: docker-py's update_container.
    assert api.update_container(cid, cpu_quota=25000) == {"Warnings": None}
    hc = _host_config(dm, "refuse")
    assert (hc["CpuPeriod"], hc["CpuQuota"]) == (50000, 25000)
    assert _cgroup(dm, "cpu", cid, "cpu.cfs_quota_us") == "25000"


def test_update_the_kernel_refuses_keeps_the_old_limits(dm: Daemon) -> None:
    # 40 MiB of tmpfs pages charged to the container cannot be reclaimed without swap, so the
    # kernel refuses a 16 MiB limit (EBUSY) after the memory+swap limit was already raised.
    cid = dm.out(
        "run", "-d", "--name", "busy", "-m", "100m", "busybox", "sh", "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && sleep 1000",
    ).strip()  # fmt: skip
    wait_until(lambda: int(_cgroup(dm, "memory", cid, "memory.usage_in_bytes")) >= 40 * MIB, what="tmpfs charged")
    memsw_before = _cgroup(dm, "memory", cid, "memory.memsw.limit_in_bytes")
    r = dm.docker("update", "--memory", "16m", "--memory-swap", "-1", "busy")
    assert r.returncode != 0 and f"Cannot update container {cid}" in r.stderr, r.stderr
    assert _cgroup(dm, "memory", cid, "memory.limit_in_bytes") == str(100 * MIB)
    assert _cgroup(dm, "memory", cid, "memory.memsw.limit_in_bytes") == memsw_before
    hc = _host_config(dm, "busy")
    assert (hc["Memory"], hc["MemorySwap"]) == (100 * MIB, 0)
