"""`docker stats` and docker-py `container.stats()` (issue 12): CPU%, memory within the limit,
PIDs, the first frame's precpu, one-shot, stopped containers, network interfaces."""

from __future__ import annotations

import json
from typing import Any

from tests.daemon import Daemon

MIB = 1024 * 1024


def _parse_pct(s: str) -> float:
    return float(s.rstrip("%"))


def test_busy_and_idle_cpu_memory_pids_through_the_cli(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "stbusy", "busybox", "sh", "-c", "while :; do :; done")
    dm.out("run", "-d", "--name", "stidle", "-m", "64m", "busybox", "sleep", "1000")
    out = dm.out(
        "stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}", "stbusy", "stidle"
    )
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    busy, idle = rows["stbusy"], rows["stidle"]
    # A spinning shell takes about one CPU, or its share of two on a loaded machine (31% was
    # seen with five other busy processes): well clear of idle either way.
    assert 10.0 < _parse_pct(busy[1]) < 210.0, out
    assert _parse_pct(idle[1]) < 5.0, out
    # MemUsage "1.2MiB / 64MiB": the limit is the container's, the usage within it.
    assert idle[4] == "64MiB", out
    assert idle[2].endswith(("KiB", "MiB")), out
    assert busy[5] == "1" and idle[5] == "1", out


def test_docker_py_one_shot_stream_and_first_frame(dm: Daemon) -> None:
    c = dm.client.containers.run(
        "busybox", ["sh", "-c", "while :; do :; done"], detach=True, name="stpy", mem_limit="128m"
    )
    s: dict[str, Any] = c.stats(stream=False)
    assert s["name"] == "/stpy" and s["id"] == c.id
    # stream=false without one-shot: two samples, so precpu is filled and CPU% computable.
    assert s["precpu_stats"]["cpu_usage"]["total_usage"] > 0 and s["precpu_stats"]["system_cpu_usage"] > 0
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] > s["precpu_stats"]["cpu_usage"]["total_usage"]
    assert s["cpu_stats"]["online_cpus"] >= 1 and s["preread"] != "0001-01-01T00:00:00Z"
    assert s["memory_stats"]["limit"] == 128 * MIB and 0 < s["memory_stats"]["usage"] <= 128 * MIB
    assert s["pids_stats"]["current"] == 1
    assert "eth0" in s["networks"] and set(s["networks"]["eth0"]) >= {"rx_bytes", "tx_packets"}
    assert "lo" not in s["networks"]
    for key in ("blkio_stats", "storage_stats", "num_procs", "read"):
        assert key in s
    # The first streamed frame already has precpu (dockerd primes the stream).
    gen = c.stats(decode=True)
    first = next(gen)
    second = next(gen)
    gen.close()
    assert first["precpu_stats"]["system_cpu_usage"] > 0
    assert first["cpu_stats"]["cpu_usage"]["total_usage"] >= first["precpu_stats"]["cpu_usage"]["total_usage"]
    assert second["precpu_stats"] == first["cpu_stats"] and second["preread"] == first["read"]
    # one-shot: a single reading, precpu empty.
    api = dm.api()
    one = api.stats(c.id, stream=False, one_shot=True)
    assert one["preread"] == "0001-01-01T00:00:00Z" and one["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert "system_cpu_usage" not in one["precpu_stats"]
    r = api._get(api._url("/containers/{0}/stats", c.id), params={"stream": "1", "one-shot": "1"})
    assert r.status_code == 400 and r.json()["message"] == "cannot have stream=true and one-shot=true"
    api.close()


def test_stopped_container_answers_zeros(dm: Daemon) -> None:
    cid = dm.out("create", "--name", "ststop", "busybox", "true").strip()
    s = dm.client.api.stats(cid, stream=False)
    assert s["name"] == "/ststop" and s["id"] == cid
    assert s["read"] == "0001-01-01T00:00:00Z" and s["memory_stats"] == {} and s["pids_stats"] == {}
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] == 0 and "networks" not in s
    out = dm.out("stats", "--no-stream", "--format", "{{json .}}", "ststop")
    row = json.loads(out)
    assert row["CPUPerc"] == "0.00%" and row["PIDs"] == "0"
