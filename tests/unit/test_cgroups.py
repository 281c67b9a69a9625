"""cgroups against fake trees: plain directories with the interface files the kernel would create."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from bocker_engine.errors import InvalidParameter, System
from bocker_engine.runtime import cgroups as cg
from bocker_engine.runtime.cgroups import (
    SWAP_UNSUPPORTED_WARNING,
    CgroupMount,
    CgroupsV1,
    CgroupsV2,
    HostCaps,
    Resources,
    cpu_weight,
    detect,
    io_weight,
    parse_cpuset,
    parse_mountinfo,
)
from bocker_engine.runtime.devices import DEFAULT_RULES, DENY_ALL

MiB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"
MEMTOTAL_KB = 2048000
CAPS = HostCaps(ncpu=2, cpus="0-1", mems="0")


def populate(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_text(content)


def read(path: Path) -> str:
    return path.read_text().strip()


def fake_proc(tmp_path: Path, mountinfo: str = "", cgroups_table: str = "") -> Path:
    proc = tmp_path / "proc"
    populate(
        proc,
        {
            "meminfo": f"MemTotal:       {MEMTOTAL_KB} kB\nMemFree:         1000 kB\n",
            "stat": "cpu  100 0 50 800 10 0 40 0 0 0\ncpu0 50 0 25 400 5 0 20 0 0 0\n"
            "cpu1 50 0 25 400 5 0 20 0 0 0\nintr 1 2 3\n",
        },
    )
    populate(proc / "self", {"mountinfo": mountinfo, "cgroup": "0::/user.slice\n"})
    if cgroups_table:
        (proc / "cgroups").write_text(cgroups_table)
    return proc


@pytest.fixture
def sleeper():
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sleep", "30"])
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


# --------------------------------------------------------------------------------------------------
# Resources


def test_from_host_config_reads_docker_keys():
    res = Resources.from_host_config(
        {
            "Memory": 64 * MiB,
            "MemoryReservation": 32 * MiB,
            "MemorySwap": -1,
            "MemorySwappiness": 10,
            "CpuShares": 512,
            "NanoCpus": 500_000_000,
            "CpuPeriod": 0,
            "CpuQuota": 0,
            "CpusetCpus": "0",
            "CpusetMems": "0",
            "PidsLimit": 50,
            "BlkioWeight": 300,
            "Binds": None,
        }
    )
    assert res == Resources(
        memory=64 * MiB,
        memory_reservation=32 * MiB,
        memory_swap=-1,
        memory_swappiness=10,
        cpu_shares=512,
        nano_cpus=500_000_000,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids_limit=50,
        blkio_weight=300,
        devices=DEFAULT_DEVICES,
    )


# What every container gets unless it is privileged: deny all, then runc's allow-list.
DEFAULT_DEVICES = [DENY_ALL, *DEFAULT_RULES]


def test_from_host_config_none_means_unset():
    hc = {"Memory": None, "CpusetCpus": None, "MemorySwappiness": -1, "PidsLimit": None, "CpuShares": None}
    assert Resources.from_host_config(hc) == Resources(devices=DEFAULT_DEVICES)
    assert Resources.from_host_config({}) == Resources(devices=DEFAULT_DEVICES)
    assert Resources.from_host_config({"PidsLimit": 0}).pids_limit == 0
    assert Resources.from_host_config({"MemorySwappiness": 0}).memory_swappiness == 0


@pytest.mark.parametrize(
    ("res", "message"),
    [
        (
            Resources(nano_cpus=10**9, cpu_period=100000),
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ),
        (
            Resources(nano_cpus=10**9, cpu_quota=50000),
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ),
        (Resources(memory=5 * MiB), "Minimum memory limit allowed is 6MB"),
        (
            Resources(memory=64 * MiB, memory_swap=32 * MiB),
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            Resources(memory_swap=64 * MiB),
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        (
            Resources(nano_cpus=3 * 10**9),
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available",
        ),
        (Resources(nano_cpus=-1), "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"),
        (Resources(cpuset_cpus="3"), "Requested CPUs are not available - requested 3, available: 0-1"),
        (Resources(cpuset_cpus="0-2"), "Requested CPUs are not available - requested 0-2, available: 0-1"),
        (Resources(cpuset_cpus="a-b"), "Invalid value a-b for cpuset cpus: invalid format: a-b"),
        (Resources(cpuset_mems="1"), "Requested memory nodes are not available - requested 1, available: 0"),
        (Resources(memory_swappiness=101), "Invalid value: 101, valid memory swappiness range is 0-100"),
        (Resources(blkio_weight=5), "Range of blkio weight is from 10 to 1000"),
        (Resources(cpu_quota=500), "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
        (
            Resources(cpu_period=500),
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        (Resources(memory_reservation=MiB), "Minimum memory reservation allowed is 6MB"),
        (
            Resources(memory=64 * MiB, memory_reservation=128 * MiB),
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ),
    ],
)
def test_validate_rejects_like_docker(res, message):
    with pytest.raises(InvalidParameter) as exc:
        res.validate(CAPS)
    assert exc.value.message == message


def test_validate_accepts_and_warns():
    good = Resources(
        memory=64 * MiB,
        memory_swap=-1,
        nano_cpus=2 * 10**9,
        cpu_shares=512,
        cpuset_cpus="0,1",
        cpuset_mems="0",
        pids_limit=50,
        blkio_weight=500,
    )
    assert good.validate(CAPS) == []
    no_swap = HostCaps(ncpu=2, cpus="0-1", mems="0", swap_limit=False)
    assert Resources(memory=64 * MiB).validate(no_swap) == [SWAP_UNSUPPORTED_WARNING]
    # -1 asks for unlimited swap, which needs no swap accounting.
    assert Resources(memory=64 * MiB, memory_swap=-1).validate(no_swap) == []
    v2ish = HostCaps(ncpu=2, cpus="0-1", mems="0", memory_swappiness=False)
    assert "Memory swappiness discarded" in Resources(memory_swappiness=200).validate(v2ish)[0]
    # `docker update` may change swap alone.
    assert Resources(memory_swap=128 * MiB).validate(CAPS, update=True) == []


def test_validate_without_caps_probes_the_host():
    ncpu = len(os.sched_getaffinity(0))
    with pytest.raises(InvalidParameter, match=f"there are only {ncpu} CPUs available"):
        Resources(nano_cpus=(ncpu + 1) * 10**9).validate()


def test_conversions():
    assert parse_cpuset("0-2,4") == {0, 1, 2, 4}
    assert parse_cpuset("") == set()
    for bad in ("1-", "x", "3-1", "1,,2"):
        with pytest.raises(ValueError):
            parse_cpuset(bad)
    # runc's ConvertCPUSharesToCgroupV2Value
    assert [cpu_weight(s) for s in (2, 512, 1024, 262144)] == [1, 20, 39, 10000]
    assert cpu_weight(1) == 1 and cpu_weight(10**6) == 10000
    assert [io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]
    assert Resources(memory=64 * MiB).memsw_total() == 128 * MiB
    assert Resources(memory=64 * MiB, memory_swap=-1).memsw_total() == -1
    assert Resources(memory=64 * MiB, memory_swap=100 * MiB).memsw_total() == 100 * MiB
    assert Resources().memsw_total() == 0


# --------------------------------------------------------------------------------------------------
# cgroup v2

V2_CONTAINER_FILES = {
    "cgroup.controllers": "cpuset cpu io memory pids\n",
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
    "cgroup.freeze": "0\n",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.kill": "",
    "memory.max": "max\n",
    "memory.low": "0\n",
    "memory.swap.max": "max\n",
    "memory.current": "1234567\n",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
    "memory.stat": "anon 1000\nfile 2000\nkernel_stack 16384\nslab 300\n",
    "cpu.weight": "100\n",
    "cpu.max": "max 100000\n",
    "cpu.stat": "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n"
    "nr_periods 10\nnr_throttled 4\nthrottled_usec 700\n",
    "cpuset.cpus": "\n",
    "cpuset.mems": "\n",
    "pids.max": "max\n",
    "pids.current": "3\n",
    "io.weight": "default 100\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
    "253:1 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=0 dios=0\n",
}


@pytest.fixture
def v2tree(tmp_path: Path) -> tuple[Path, CgroupsV2]:
    root = tmp_path / "cgroup"
    populate(
        root,
        {
            "cgroup.controllers": "cpuset cpu io memory pids\n",
            "cgroup.subtree_control": "",
            "cgroup.procs": "1\n",
            "cpuset.cpus.effective": "0-3\n",
            "cpuset.mems.effective": "0\n",
        },
    )
    # The kernel creates these on mkdir; here the test stands in for it.
    populate(
        root / "bocker",
        {
            "cgroup.controllers": "cpuset cpu io memory pids\n",
            "cgroup.subtree_control": "",
            "memory.max": "max\n",
            "memory.swap.max": "max\n",
        },
    )
    populate(root / "bocker" / "c1", V2_CONTAINER_FILES)
    proc = fake_proc(tmp_path)
    return root / "bocker" / "c1", CgroupsV2(str(root), "bocker", proc=str(proc))


def test_detect_picks_v2_on_unified_root(tmp_path, v2tree):
    d, cgs = v2tree
    found = detect(cgs.root, "bocker", proc=cgs.proc)
    assert isinstance(found, CgroupsV2) and found.version == 2 and found.driver == "cgroupfs"


def test_v2_create_writes_docker_values(v2tree):
    d, cgs = v2tree
    res = Resources(
        memory=64 * MiB,
        memory_reservation=32 * MiB,
        cpu_shares=512,
        nano_cpus=500_000_000,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids_limit=50,
        blkio_weight=500,
    )
    assert cgs.validate(res) == []
    cgs.create("c1", res)
    root = d.parent.parent
    assert read(root / "cgroup.subtree_control") == "+cpuset +cpu +io +memory +pids"
    assert read(root / "bocker" / "cgroup.subtree_control") == "+cpuset +cpu +io +memory +pids"
    assert read(d / "memory.max") == str(64 * MiB)
    assert read(d / "memory.low") == str(32 * MiB)
    # Docker's default memory+swap is 2x memory: swap alone is then equal to memory.
    assert read(d / "memory.swap.max") == str(64 * MiB)
    assert read(d / "cpu.weight") == "20"
    assert read(d / "cpu.max") == "50000 100000"
    assert read(d / "cpuset.cpus") == "0"
    assert read(d / "cpuset.mems") == "0"
    assert read(d / "pids.max") == "50"
    assert read(d / "io.weight") == "default 4950"


def test_v2_create_swap_variants(v2tree):
    d, cgs = v2tree
    cgs.create("c1", Resources(memory=64 * MiB, memory_swap=-1))
    assert read(d / "memory.swap.max") == "max"
    cgs.create("c1", Resources(memory=64 * MiB, memory_swap=100 * MiB))
    assert read(d / "memory.swap.max") == str(36 * MiB)


def test_v2_create_leaves_unset_fields_alone(v2tree):
    d, cgs = v2tree
    cgs.create("c1", Resources(pids_limit=0, cpu_period=50000))
    assert read(d / "memory.max") == "max"
    assert read(d / "memory.swap.max") == "max"
    assert read(d / "pids.max") == "max"
    assert read(d / "cpu.weight") == "100"
    assert read(d / "cpu.max") == "max 50000"
    assert read(d / "io.weight") == "default 100"


def test_v2_prefers_bfq_weight(v2tree):
    d, cgs = v2tree
    (d / "io.bfq.weight").write_text("100\n")
    cgs.create("c1", Resources(blkio_weight=300))
    assert read(d / "io.bfq.weight") == "300"
    assert read(d / "io.weight") == "default 100"


def test_v2_skips_controllers_already_enabled(v2tree):
    d, cgs = v2tree
    root = d.parent.parent
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    (root / "cgroup.controllers").write_text("cpu memory pids hugetlb\n")
    cgs.create("c1", Resources())
    assert read(root / "cgroup.subtree_control") == "+pids"


def test_v2_update_changes_only_what_is_set(v2tree):
    d, cgs = v2tree
    cgs.create("c1", Resources(memory=64 * MiB, nano_cpus=10**9, pids_limit=50, cpu_shares=1024))
    cgs.update("c1", Resources(memory=128 * MiB))
    assert read(d / "memory.max") == str(128 * MiB)
    assert read(d / "memory.swap.max") == str(64 * MiB)
    assert read(d / "pids.max") == "50"
    assert read(d / "cpu.max") == "100000 100000"
    assert read(d / "cpu.weight") == "39"

    cgs.update("c1", Resources(memory_swap=200 * MiB))  # against the current memory.max
    assert read(d / "memory.swap.max") == str(72 * MiB)
    cgs.update("c1", Resources(cpu_quota=25000))
    assert read(d / "cpu.max") == "25000 100000"
    cgs.update("c1", Resources(cpu_period=200000))
    assert read(d / "cpu.max") == "25000 200000"
    cgs.update("c1", Resources(cpu_quota=-1))
    assert read(d / "cpu.max") == "max 200000"
    cgs.update("c1", Resources(pids_limit=0))
    assert read(d / "pids.max") == "max"
    cgs.update("c1", Resources(cpuset_cpus="1-2"))
    assert read(d / "cpuset.cpus") == "1-2"
    assert read(d / "memory.max") == str(128 * MiB)

    with pytest.raises(InvalidParameter, match="larger than memory limit"):
        cgs.update("c1", Resources(memory_swap=64 * MiB))
    with pytest.raises(System, match="no cgroup for c2"):
        cgs.update("c2", Resources(memory=64 * MiB))


def test_v2_write_failure_names_file_and_value_and_rolls_back(v2tree):
    d, cgs = v2tree
    (d / "memory.max").unlink()
    (d / "memory.max").mkdir()  # opening it for writing fails like a refused kernel write would
    with pytest.raises(System) as exc:
        cgs.create("c1", Resources(memory=64 * MiB))
    assert str(d / "memory.max") in exc.value.message and "'67108864'" in exc.value.message
    assert not d.exists()


def test_v2_names_are_checked(v2tree):
    _d, cgs = v2tree
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(InvalidParameter):
            cgs.procs_files(bad)
    with pytest.raises(InvalidParameter):
        CgroupsV2(cgs.root, "../escape")


def test_v2_procs_and_pids(v2tree):
    d, cgs = v2tree
    assert cgs.procs_files("c1") == [str(d / "cgroup.procs")]
    cgs.add_process("c1", 4242)
    assert read(d / "cgroup.procs") == "4242"
    populate(d / "nested", {"cgroup.procs": "77\n78\n"})
    assert cgs.pids("c1") == [77, 78, 4242]
    assert cgs.pids("missing") == []


def test_v2_freeze_waits_for_frozen_event(v2tree, monkeypatch):
    d, cgs = v2tree
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cgs.freeze("c1")
    assert read(d / "cgroup.freeze") == "1"
    assert cgs.is_frozen("c1")
    cgs.thaw("c1")
    assert read(d / "cgroup.freeze") == "0"
    assert not cgs.is_frozen("c1")

    monkeypatch.setattr(cg.base, "WAIT_SECONDS", 0.05)
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    with pytest.raises(System, match="did not freeze"):
        cgs.freeze("c1")
    assert read(d / "cgroup.freeze") == "0"


def test_v2_kill_all(v2tree, sleeper):
    d, cgs = v2tree
    cgs.kill_all("c1", signal.SIGKILL)
    assert read(d / "cgroup.kill") == "1"

    p = sleeper()
    (d / "cgroup.procs").write_text(f"{p.pid}\n")
    cgs.kill_all("c1", signal.SIGTERM)
    assert p.wait(5) == -signal.SIGTERM

    # Without cgroup.kill (Linux < 5.14) SIGKILL goes to each process.
    (d / "cgroup.kill").unlink()
    p = sleeper()
    (d / "cgroup.procs").write_text(f"{p.pid}\n")
    cgs.kill_all("c1", signal.SIGKILL)
    assert p.wait(5) == -signal.SIGKILL


def test_v2_destroy_is_idempotent(v2tree):
    d, cgs = v2tree
    populate(d / "nested", {"cgroup.procs": ""})
    cgs.destroy("c1")
    assert not d.exists()
    assert d.parent.exists()
    cgs.destroy("c1")


def test_v2_stats(v2tree):
    d, cgs = v2tree
    s = cgs.stats("c1")
    assert s["memory_stats"] == {
        "usage": 1234567,
        "limit": MEMTOTAL_KB * 1024,  # unlimited reports the host's memory, like Docker
        "failcnt": 2,
        "stats": {"anon": 1000, "file": 2000, "kernel_stack": 16384, "slab": 300},
    }
    ticks = os.sysconf("SC_CLK_TCK")
    assert s["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 5_000_000,
            "usage_in_kernelmode": 2_000_000,
            "usage_in_usermode": 3_000_000,
        },
        "system_cpu_usage": (100 + 50 + 800 + 10 + 40) * 10**9 // ticks,
        "online_cpus": 2,
        "throttling_data": {"periods": 10, "throttled_periods": 4, "throttled_time": 700_000},
    }
    assert s["pids_stats"] == {"current": 3, "limit": 0}
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 4096},
        {"major": 8, "minor": 0, "op": "write", "value": 8192},
        {"major": 253, "minor": 1, "op": "read", "value": 10},
        {"major": 253, "minor": 1, "op": "write", "value": 20},
    ]
    assert s["blkio_stats"]["io_serviced_recursive"][1] == {"major": 8, "minor": 0, "op": "write", "value": 2}

    (d / "memory.max").write_text(f"{64 * MiB}\n")
    (d / "pids.max").write_text("50\n")
    s = cgs.stats("c1")
    assert s["memory_stats"]["limit"] == 64 * MiB
    assert s["pids_stats"]["limit"] == 50
    with pytest.raises(System):
        cgs.stats("gone")


def test_v2_container_mounts(v2tree):
    d, cgs = v2tree
    assert cgs.container_mounts("c1") == [
        CgroupMount("cgroup2", "cgroup", "/sys/fs/cgroup", True, "nosuid,nodev,noexec")
    ]
    assert cgs.container_mounts("c1", cgroupns=False) == [
        CgroupMount("bind", str(d), "/sys/fs/cgroup", True, "nosuid,nodev,noexec")
    ]


def test_v2_caps(v2tree):
    d, cgs = v2tree
    caps = cgs.caps()
    assert (caps.cpus, caps.mems) == ("0-3", "0")
    assert caps.memory_limit and caps.swap_limit and caps.pids_limit and not caps.memory_swappiness
    (d.parent / "memory.swap.max").unlink()  # CONFIG_MEMCG_SWAP off
    assert not cgs.caps().swap_limit
    assert cgs.validate(Resources(memory=64 * MiB)) == [SWAP_UNSUPPORTED_WARNING]


# --------------------------------------------------------------------------------------------------
# cgroup v1

PROC_CGROUPS = (
    "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
    "cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t1\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t1\t1\n"
    "devices\t5\t1\t1\nfreezer\t6\t1\t1\nnet_cls\t0\t1\t1\npids\t8\t1\t1\n"
)


def v1_mountinfo(root: Path) -> str:
    return "\n".join(
        [
            "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
            f"31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755",
            f"32 31 0:29 / {root}/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct",
            f"34 31 0:31 / {root}/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children",
            f"35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory",
            f"37 31 0:34 / {root}/freezer rw,relatime - cgroup cgroup rw,freezer",
            f"38 31 0:35 / {root}/blkio rw,relatime - cgroup cgroup rw,blkio",
            f"39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids",
            f"40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
            f"41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
            # A bind of a hierarchy elsewhere: the system's mount above wins.
            "90 22 0:32 /x /mnt/mem rw,relatime - cgroup cgroup rw,memory",
        ]
    )


@pytest.fixture
def v1tree(tmp_path: Path):
    root = tmp_path / "cgroup"
    populate(root / "cpu,cpuacct", {"cgroup.procs": "", "cpu.shares": "1024\n", "cpu.cfs_quota_us": "-1\n"})
    populate(root / "cpuset", {"cgroup.procs": "", "cpuset.cpus": "0-3\n", "cpuset.mems": "0\n"})
    populate(
        root / "memory",
        {
            "cgroup.procs": "",
            "memory.limit_in_bytes": V1_UNLIMITED,
            "memory.memsw.limit_in_bytes": V1_UNLIMITED,
            "memory.soft_limit_in_bytes": V1_UNLIMITED,
            "memory.swappiness": "60\n",
        },
    )
    populate(root / "freezer", {"cgroup.procs": ""})
    populate(root / "blkio", {"cgroup.procs": "", "blkio.weight": "500\n"})
    populate(root / "pids", {"cgroup.procs": ""})
    populate(root / "systemd", {"cgroup.procs": ""})
    populate(root / "unified", {"cgroup.controllers": ""})
    # The container's interface files, as the kernel would create them on mkdir.
    c = "bocker/c1"
    populate(
        root / "cpu,cpuacct" / c,
        {
            "cgroup.procs": "",
            "cpu.shares": "1024\n",
            "cpu.cfs_period_us": "100000\n",
            "cpu.cfs_quota_us": "-1\n",
            "cpu.stat": "nr_periods 12\nnr_throttled 5\nthrottled_time 123456\n",
            "cpuacct.usage": "987654321\n",
            "cpuacct.usage_percpu": "900000000 87654321 \n",
            "cpuacct.stat": "user 30\nsystem 20\n",
        },
    )
    populate(
        root / "memory" / c,
        {
            "cgroup.procs": "",
            "memory.limit_in_bytes": V1_UNLIMITED,
            "memory.memsw.limit_in_bytes": V1_UNLIMITED,
            "memory.soft_limit_in_bytes": V1_UNLIMITED,
            "memory.swappiness": "60\n",
            "memory.usage_in_bytes": "4096000\n",
            "memory.max_usage_in_bytes": "8192000\n",
            "memory.failcnt": "1\n",
            "memory.stat": "cache 100\nrss 200\ntotal_rss 200\n"
            "hierarchical_memory_limit 9223372036854771712\n",
        },
    )
    populate(root / "freezer" / c, {"cgroup.procs": "", "freezer.state": "THAWED\n"})
    populate(root / "pids" / c, {"cgroup.procs": "", "pids.max": "max\n", "pids.current": "2\n"})
    populate(
        root / "blkio" / c,
        {
            "cgroup.procs": "",
            "blkio.weight": "500\n",
            "blkio.throttle.io_service_bytes_recursive": (
                "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\nTotal 4608\n"
            ),
            "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 1\nTotal 2\n",
        },
    )
    proc = fake_proc(tmp_path, v1_mountinfo(root), PROC_CGROUPS)
    return root, CgroupsV1(str(root), "bocker", proc=str(proc))


def kernel_memory_rules(monkeypatch):
    """Make fake memory files refuse what the v1 kernel refuses: limit > memsw or memsw < limit."""
    real_write = cg.files.write
    log: list[tuple[str, str]] = []

    def write(path: str, value: str) -> None:
        p = Path(path)
        if p.name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            other = p.parent / (
                "memory.memsw.limit_in_bytes"
                if p.name == "memory.limit_in_bytes"
                else "memory.limit_in_bytes"
            )
            new = int(V1_UNLIMITED) if value == "-1" else int(value)
            cur = int(other.read_text())
            if (p.name == "memory.limit_in_bytes" and new > cur) or (
                p.name == "memory.memsw.limit_in_bytes" and new < cur
            ):
                raise System(f"cgroups: cannot write {value!r} to {path}: Invalid argument")
            value = str(new)
            log.append((p.name, value))
        real_write(path, value)

    monkeypatch.setattr(cg.files, "write", write)
    return log


def test_parse_mountinfo(tmp_path):
    text = v1_mountinfo(Path("/sys/fs/cgroup"))
    known = {"cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "pids"}
    hs = parse_mountinfo(text, known)
    assert [(h.mountpoint, h.controllers) for h in hs] == [
        ("/sys/fs/cgroup/cpu,cpuacct", ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/cpuset", ("cpuset",)),
        ("/sys/fs/cgroup/memory", ("memory",)),
        ("/sys/fs/cgroup/freezer", ("freezer",)),
        ("/sys/fs/cgroup/blkio", ("blkio",)),
        ("/sys/fs/cgroup/pids", ("pids",)),
        ("/sys/fs/cgroup/systemd", ("name=systemd",)),
    ]
    assert [h.dirname for h in hs][0] == "cpu,cpuacct" and hs[-1].dirname == "systemd"
    # Without /proc/cgroups, known mount options are told apart from controllers.
    assert parse_mountinfo(text) == hs
    escaped = r"5 1 0:9 / /my\040cgroups/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio"
    (h,) = parse_mountinfo(escaped, None)
    assert h.mountpoint == "/my cgroups/net_cls,net_prio" and h.controllers == ("net_cls", "net_prio")


def test_detect_picks_v1_from_mountinfo(v1tree):
    root, cgs = v1tree
    found = detect(str(root), "bocker", proc=cgs.proc)
    assert isinstance(found, CgroupsV1) and found.version == 1
    assert [h.dirname for h in found.hierarchies] == [h.dirname for h in cgs.hierarchies]
    with pytest.raises(System, match="no cgroup v1 hierarchy"):
        empty = fake_proc(root.parent / "other")
        CgroupsV1(str(root), proc=str(empty))


def test_v1_create_writes_values_and_copies_cpuset(v1tree):
    root, cgs = v1tree
    res = Resources(
        memory=64 * MiB,
        memory_reservation=32 * MiB,
        memory_swappiness=10,
        cpu_shares=512,
        nano_cpus=500_000_000,
        cpuset_cpus="1",
        pids_limit=50,
        blkio_weight=300,
    )
    assert cgs.validate(res) == []
    cgs.create("c1", res)
    c = "bocker/c1"
    assert read(root / "memory" / c / "memory.limit_in_bytes") == str(64 * MiB)
    assert read(root / "memory" / c / "memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read(root / "memory" / c / "memory.soft_limit_in_bytes") == str(32 * MiB)
    assert read(root / "memory" / c / "memory.swappiness") == "10"
    assert read(root / "cpu,cpuacct" / c / "cpu.shares") == "512"
    assert read(root / "cpu,cpuacct" / c / "cpu.cfs_period_us") == "100000"
    assert read(root / "cpu,cpuacct" / c / "cpu.cfs_quota_us") == "50000"
    assert read(root / "pids" / c / "pids.max") == "50"
    assert read(root / "blkio" / c / "blkio.weight") == "300"
    # The intermediate cgroup got its parent's cpus/mems; the container its own cpus and inherited mems.
    assert read(root / "cpuset" / "bocker" / "cpuset.cpus") == "0-3"
    assert read(root / "cpuset" / "bocker" / "cpuset.mems") == "0"
    assert read(root / "cpuset" / c / "cpuset.cpus") == "1"
    assert read(root / "cpuset" / c / "cpuset.mems") == "0"
    for h in ("systemd", "freezer"):
        assert (root / h / c).is_dir()


def test_v1_cpuset_copy_keeps_existing_values(v1tree):
    root, cgs = v1tree
    populate(root / "cpuset" / "bocker", {"cpuset.cpus": "2-3\n", "cpuset.mems": "0\n"})
    cgs.create("c1", Resources())
    assert read(root / "cpuset" / "bocker" / "cpuset.cpus") == "2-3"
    assert read(root / "cpuset" / "bocker" / "c1" / "cpuset.cpus") == "2-3"


def test_v1_create_respects_kernel_memory_order(v1tree, monkeypatch):
    root, cgs = v1tree
    log = kernel_memory_rules(monkeypatch)
    cgs.create("c1", Resources(memory=64 * MiB))
    assert log == [("memory.limit_in_bytes", str(64 * MiB)), ("memory.memsw.limit_in_bytes", str(128 * MiB))]
    limits = {"memory.limit_in_bytes": V1_UNLIMITED, "memory.memsw.limit_in_bytes": V1_UNLIMITED}
    populate(root / "memory" / "bocker" / "c2", limits)
    cgs.create("c2", Resources(memory=64 * MiB, memory_swap=-1))
    assert read(root / "memory" / "bocker" / "c2" / "memory.memsw.limit_in_bytes") == V1_UNLIMITED


def test_v1_update_orders_memory_and_memsw(v1tree, monkeypatch):
    root, cgs = v1tree
    mem = root / "memory" / "bocker" / "c1"
    log = kernel_memory_rules(monkeypatch)
    cgs.create("c1", Resources(memory=64 * MiB, memory_swap=128 * MiB))

    log.clear()
    cgs.update("c1", Resources(memory=256 * MiB, memory_swap=512 * MiB))  # grow: memsw first
    assert [name for name, _ in log] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    assert read(mem / "memory.limit_in_bytes") == str(256 * MiB)
    assert read(mem / "memory.memsw.limit_in_bytes") == str(512 * MiB)

    log.clear()
    cgs.update("c1", Resources(memory=16 * MiB, memory_swap=24 * MiB))  # shrink: memory first
    assert [name for name, _ in log] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    assert read(mem / "memory.limit_in_bytes") == str(16 * MiB)
    assert read(mem / "memory.memsw.limit_in_bytes") == str(24 * MiB)

    cgs.update("c1", Resources(memory=20 * MiB))  # within the current memsw: only memory changes
    assert read(mem / "memory.limit_in_bytes") == str(20 * MiB)
    assert read(mem / "memory.memsw.limit_in_bytes") == str(24 * MiB)
    with pytest.raises(InvalidParameter, match="update the memoryswap at the same time"):
        cgs.update("c1", Resources(memory=32 * MiB))
    with pytest.raises(InvalidParameter, match="larger than memory limit"):
        cgs.update("c1", Resources(memory_swap=10 * MiB))

    cgs.update("c1", Resources(memory=100 * MiB, memory_swap=-1))
    assert read(mem / "memory.memsw.limit_in_bytes") == V1_UNLIMITED
    assert read(mem / "memory.limit_in_bytes") == str(100 * MiB)


def test_v1_update_only_set_fields(v1tree):
    root, cgs = v1tree
    cgs.create("c1", Resources(cpu_shares=512, cpu_quota=20000, cpu_period=50000, pids_limit=10))
    cgs.update("c1", Resources(pids_limit=0, cpuset_cpus="0-1"))
    c = "bocker/c1"
    assert read(root / "pids" / c / "pids.max") == "max"
    assert read(root / "cpuset" / c / "cpuset.cpus") == "0-1"
    assert read(root / "cpu,cpuacct" / c / "cpu.shares") == "512"
    assert read(root / "cpu,cpuacct" / c / "cpu.cfs_quota_us") == "20000"
    assert read(root / "cpu,cpuacct" / c / "cpu.cfs_period_us") == "50000"
    cgs.update("c1", Resources(cpu_quota=-1))
    assert read(root / "cpu,cpuacct" / c / "cpu.cfs_quota_us") == "-1"


def test_v1_without_swap_accounting(v1tree):
    root, cgs = v1tree
    (root / "memory" / "memory.memsw.limit_in_bytes").unlink()
    assert not cgs.caps().swap_limit
    assert cgs.validate(Resources(memory=64 * MiB)) == [SWAP_UNSUPPORTED_WARNING]
    cgs.create("c1", Resources(memory=64 * MiB))
    mem = root / "memory" / "bocker" / "c1"
    assert read(mem / "memory.limit_in_bytes") == str(64 * MiB)
    assert read(mem / "memory.memsw.limit_in_bytes") == V1_UNLIMITED


def test_v1_procs_files_and_pids(v1tree):
    root, cgs = v1tree
    cgs.create("c1", Resources())
    files = cgs.procs_files("c1")
    assert len(files) == 7  # one per hierarchy, including name=systemd, not the hybrid cgroup2 mount
    assert str(root / "systemd" / "bocker" / "c1" / "cgroup.procs") in files
    cgs.add_process("c1", 4242)
    assert all(read(Path(f)) == "4242" for f in files)
    assert cgs.pids("c1") == [4242]


def test_v1_freeze_thaw_and_kill(v1tree, sleeper):
    root, cgs = v1tree
    state = root / "freezer" / "bocker" / "c1" / "freezer.state"
    cgs.freeze("c1")
    assert read(state) == "FROZEN" and cgs.is_frozen("c1")
    cgs.thaw("c1")
    assert read(state) == "THAWED" and not cgs.is_frozen("c1")

    p = sleeper()
    (root / "pids" / "bocker" / "c1" / "cgroup.procs").write_text(f"{p.pid}\n")
    cgs.freeze("c1")
    cgs.kill_all("c1", signal.SIGKILL)
    assert p.wait(5) == -signal.SIGKILL
    assert read(state) == "THAWED"  # thawed after the kill so the queued SIGKILL is delivered


def test_v1_freeze_timeout(v1tree, monkeypatch):
    root, cgs = v1tree
    monkeypatch.setattr(cg.base, "WAIT_SECONDS", 0.05)
    real_write = cg.files.write

    def stuck(path: str, value: str) -> None:
        real_write(path, "FREEZING" if value == "FROZEN" else value)

    monkeypatch.setattr(cg.files, "write", stuck)
    with pytest.raises(System, match="did not freeze"):
        cgs.freeze("c1")
    assert read(root / "freezer" / "bocker" / "c1" / "freezer.state") == "THAWED"


def test_v1_destroy(v1tree):
    root, cgs = v1tree
    cgs.create("c1", Resources(memory=64 * MiB))
    cgs.destroy("c1")
    for h in cgs.hierarchies:
        assert not Path(h.mountpoint, "bocker", "c1").exists()
        assert Path(h.mountpoint, "bocker").exists()
    cgs.destroy("c1")


def test_v1_stats(v1tree):
    root, cgs = v1tree
    s = cgs.stats("c1")
    assert s["memory_stats"] == {
        "usage": 4096000,
        "max_usage": 8192000,
        "failcnt": 1,
        "limit": MEMTOTAL_KB * 1024,
        "stats": {"cache": 100, "rss": 200, "total_rss": 200, "hierarchical_memory_limit": int(V1_UNLIMITED)},
    }
    ticks = os.sysconf("SC_CLK_TCK")
    assert s["cpu_stats"]["cpu_usage"] == {
        "total_usage": 987654321,
        "percpu_usage": [900000000, 87654321],
        "usage_in_kernelmode": 20 * 10**9 // ticks,
        "usage_in_usermode": 30 * 10**9 // ticks,
    }
    assert s["cpu_stats"]["throttling_data"] == {
        "periods": 12,
        "throttled_periods": 5,
        "throttled_time": 123456,
    }
    assert s["cpu_stats"]["online_cpus"] == 2
    assert s["pids_stats"] == {"current": 2, "limit": 0}
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512},
        {"major": 8, "minor": 0, "op": "Sync", "value": 0},
    ]
    assert len(s["blkio_stats"]["io_serviced_recursive"]) == 2

    (root / "memory" / "bocker" / "c1" / "memory.limit_in_bytes").write_text(f"{64 * MiB}\n")
    assert cgs.stats("c1")["memory_stats"]["limit"] == 64 * MiB


def test_v1_container_mounts(v1tree):
    root, cgs = v1tree
    mounts = cgs.container_mounts("c1")
    opts = "nosuid,nodev,noexec"
    assert mounts[0] == CgroupMount("tmpfs", "tmpfs", "/sys/fs/cgroup", False, "mode=755," + opts)
    assert mounts[-1] == CgroupMount("remount-ro", "", "/sys/fs/cgroup", True, "mode=755," + opts)
    binds = {m.target: m.source for m in mounts if m.kind == "bind"}
    assert binds == {
        f"/sys/fs/cgroup/{name}": str(root / name / "bocker" / "c1")
        for name in ("cpu,cpuacct", "cpuset", "memory", "freezer", "blkio", "pids", "systemd")
    }
    assert all(m.readonly for m in mounts if m.kind == "bind")
    links = [(m.target, m.source) for m in mounts if m.kind == "symlink"]
    assert links == [("/sys/fs/cgroup/cpu", "cpu,cpuacct"), ("/sys/fs/cgroup/cpuacct", "cpu,cpuacct")]
    # Symlinks come after the bind they point at.
    kinds = [m.kind for m in mounts]
    assert kinds.index("symlink") > [m.target for m in mounts].index("/sys/fs/cgroup/cpu,cpuacct")
