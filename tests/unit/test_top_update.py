"""Pure parts of `docker top` and `docker update`: ps parsing, the update merge, cgroup rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bocker_engine.engine import container_top as top
from bocker_engine.engine import container_update as upd
from bocker_engine.errors import Conflict, InvalidParameter, System
from bocker_engine.runtime import cgroup_snapshot

PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         300       1  0 10:01 ?        00:00:00 sleep 1000
root         301     300  0 10:01 ?        00:00:00 sh -c echo  two  spaces
"""


def test_parse_ps_keeps_the_container_rows() -> None:
    out = top.parse_ps(PS, {300, 301})
    assert out["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [p[1] for p in out["Processes"]] == ["300", "301"]
    # The last column takes the rest of the line (fields joined by one space, like dockerd).
    assert out["Processes"][1][-1] == "sh -c echo two spaces"


def test_parse_ps_threads_follow_their_process() -> None:
    threads = "PID TID CMD\n1 - init\n- 1 -\n300 - app\n- 300 -\n- 302 -\n"
    out = top.parse_ps(threads, {300})
    assert out["Processes"] == [["300", "-", "app"], ["-", "300", "-"], ["-", "302", "-"]]
    with pytest.raises(System, match="Couldn't find PID field"):
        top.parse_ps("USER CMD\nroot x\n", {1})
    with pytest.raises(System, match="Unexpected pid"):
        top.parse_ps("PID CMD\nabc x\n", {1})


def test_ps_args_cannot_rename_the_pid_column() -> None:
    top.validate_ps_args("-o pid,user,args")
    top.validate_ps_args("-o pid=PID")
    with pytest.raises(InvalidParameter, match='specifying "user=PID" is not allowed'):
        top.validate_ps_args("-o user=PID")


def test_update_request_zero_means_unchanged() -> None:
    changes, policy = upd.parse_request(
        {"Memory": 0, "CpuShares": 512, "CpusetCpus": "", "PidsLimit": -1, "RestartPolicy": {"Name": ""}}
    )
    assert changes == {"CpuShares": 512, "PidsLimit": 0} and policy is None
    changes, policy = upd.parse_request(
        {"PidsLimit": None, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}
    )
    assert changes == {} and policy == {"Name": "on-failure", "MaximumRetryCount": 3}
    bad: object
    for bad in ({"Memory": "1g"}, {"Memory": True}, {"CpusetCpus": 1}, [], {"RestartPolicy": "always"}):
        with pytest.raises(InvalidParameter):
            upd.parse_request(bad)
    with pytest.raises(InvalidParameter, match="cannot be negative"):
        upd.parse_request({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}})
    with pytest.raises(InvalidParameter, match="invalid restart policy 'sometimes'"):
        upd.parse_request({"RestartPolicy": {"Name": "sometimes"}})


def test_update_merge_rules() -> None:
    hc = {"Memory": 300 << 20, "MemorySwap": 0, "CpuPeriod": 0, "CpuQuota": 0, "NanoCpus": 0, "AutoRemove": False}
    # Memory alone may grow up to the stored (or implied 2x) memory+swap.
    assert upd.merge(hc, {"Memory": 512 << 20}, None)["Memory"] == 512 << 20
    with pytest.raises(Conflict, match="update the memoryswap at the same time"):
        upd.merge(hc, {"Memory": 700 << 20}, None)
    assert upd.merge(hc, {"Memory": 700 << 20, "MemorySwap": -1}, None)["MemorySwap"] == -1
    with pytest.raises(Conflict, match="update the memoryswap"):
        upd.merge({**hc, "Memory": 0}, {"Memory": 64 << 20}, None)
    with pytest.raises(Conflict, match="Nano CPUs cannot be updated as CPU Period"):
        upd.merge({**hc, "CpuPeriod": 50000}, {"NanoCpus": 10**9}, None)
    with pytest.raises(Conflict, match="CPU Quota cannot be updated as NanoCPUs"):
        upd.merge({**hc, "NanoCpus": 10**9}, {"CpuQuota": 50000}, None)
    with pytest.raises(Conflict, match="AutoRemove is enabled"):
        upd.merge({**hc, "AutoRemove": True}, {}, {"Name": "always", "MaximumRetryCount": 0})
    new = upd.merge(hc, {"CpuShares": 10}, {"Name": "always", "MaximumRetryCount": 0})
    assert new["RestartPolicy"]["Name"] == "always" and "RestartPolicy" not in hc


def test_snapshot_restore_undoes_partial_writes(tmp_path: Path) -> None:
    mem, cpu = tmp_path / "memory", tmp_path / "cpu"
    mem.mkdir()
    cpu.mkdir()
    (mem / "memory.limit_in_bytes").write_text("104857600\n")
    (mem / "memory.memsw.limit_in_bytes").write_text("209715200\n")
    (cpu / "cpu.shares").write_text("1024\n")
    (cpu / "io.weight").write_text("default 100\n8:0 200\n")
    saved = cgroup_snapshot.snapshot([str(mem), str(cpu)])
    assert saved[str(cpu / "io.weight")] == "default 100"
    (mem / "memory.memsw.limit_in_bytes").write_text("-1\n")
    (cpu / "cpu.shares").write_text("2\n")
    assert cgroup_snapshot.restore(saved) == []
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == "209715200"
    assert (cpu / "cpu.shares").read_text() == "1024"
    # Unchanged files are not written again (a write can have side effects in a cgroup).
    assert (mem / "memory.limit_in_bytes").read_text() == "104857600\n"
