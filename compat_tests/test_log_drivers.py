"""Log rotation and log drivers through the stock CLI and docker-py: json-file with max-size,
max-file, compress and attrs; `docker logs` (--tail, -f, -t) across rotated and compressed files;
the local and none drivers; mode=non-blocking."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import docker
import pytest

from tests.daemon import DOCKER, Daemon


def _wait_exit(dm: Daemon, cid: str, timeout: float = 60) -> None:
    assert dm.out("wait", cid, timeout=timeout).strip() == "0"


def _settled(directory: str, names: set[str], timeout: float = 30) -> list[str]:
    """The directory's log files once compression finished (it runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        now = sorted(n for n in os.listdir(directory) if n.split(".")[0] in names or "log" in n)
        if not any(re.search(r"\.\d+$", n) for n in now) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def test_json_file_rotation_compressed_read_in_order(dm: Daemon) -> None:
    cid = dm.out(
        "run", "-d", "--log-opt", "max-size=10k", "--log-opt", "max-file=4", "--log-opt", "compress=true",
        "busybox", "seq", "100000", "103000",
    ).strip()
    _wait_exit(dm, cid)
    log_path = dm.out("inspect", "-f", "{{.LogPath}}", cid).strip()
    assert log_path.endswith(f"/{cid}-json.log")
    files = _settled(os.path.dirname(log_path), {cid})
    assert [f for f in files if f.startswith(cid)] == [
        f"{cid}-json.log", f"{cid}-json.log.1.gz", f"{cid}-json.log.2.gz", f"{cid}-json.log.3.gz",
    ]
    out = dm.out("logs", cid).split()
    # The oldest files were dropped (max-file=4): what is left is the end, contiguous, in order.
    assert out[-1] == "103000" and out == [str(i) for i in range(int(out[0]), 103001)]
    assert 300 < len(out) < 3001
    # --tail reaching back into the compressed files, and -t
    n = len(out) - 7
    assert dm.out("logs", "--tail", str(n), cid).split() == out[7:]
    stamped = dm.out("logs", "-t", "--tail", "3", cid).splitlines()
    assert [line.split(" ")[1] for line in stamped] == ["102998", "102999", "103000"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in stamped)
    # docker-py reads the same
    assert dm.client.containers.get(cid).logs(tail=5).split() == [b"102996", b"102997", b"102998", b"102999", b"103000"]


def test_follow_through_rotations_exact_count(dm: Daemon) -> None:
    script = "sleep 1; i=1; while [ $i -le 3000 ]; do echo $i; [ $((i % 200)) = 0 ] && sleep 0.05; i=$((i+1)); done"
    cid = dm.out(
        "run", "-d", "--log-opt", "max-size=20k", "--log-opt", "max-file=3", "--log-opt", "compress=true",
        "busybox", "sh", "-c", script,
    ).strip()
    follow = subprocess.run([DOCKER, "logs", "-f", cid], env=dm.env, capture_output=True, text=True, timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.split() == [str(i) for i in range(1, 3001)]
    log_dir = os.path.dirname(dm.out("inspect", "-f", "{{.LogPath}}", cid).strip())
    assert f"{cid}-json.log.2.gz" in _settled(log_dir, {cid})  # it did rotate (3000 lines, 20k files)


def test_json_file_attrs(dm: Daemon) -> None:
    cid = dm.out(
        "run", "-d", "--name", "tagged", "--label", "team=web", "-e", "STAGE=prod",
        "--log-opt", "labels=team", "--log-opt", "env=STAGE", "--log-opt", "tag={{.Name}}/{{.ID}}",
        "busybox", "echo", "hello",
    ).strip()
    _wait_exit(dm, cid)
    with open(dm.out("inspect", "-f", "{{.LogPath}}", cid).strip(), "rb") as f:
        line = f.readline()
    rec = json.loads(line)
    assert rec["log"] == "hello\n" and rec["stream"] == "stdout"
    assert rec["attrs"] == {"STAGE": "prod", "tag": f"tagged/{cid[:12]}", "team": "web"}
    assert line.startswith(b'{"log":"hello\\n","stream":"stdout","attrs":{"STAGE":"prod",')
    assert dm.out("logs", cid) == "hello\n"


def test_local_driver_rotates_and_reads(dm: Daemon) -> None:
    cid = dm.out(
        "run", "-d", "--log-driver", "local", "--log-opt", "max-size=8k", "busybox", "sh", "-c",
        "seq 1 3000; echo err >&2",
    ).strip()
    _wait_exit(dm, cid)
    assert dm.out("inspect", "-f", "{{.LogPath}}|{{.HostConfig.LogConfig.Type}}", cid).strip() == "|local"
    local_dir = os.path.join(dm.data_root, "containers", cid, "local-logs")
    # dockerd's defaults for local: max-file 5, compress true
    assert _settled(local_dir, {"container"}) == [
        "container.log", "container.log.1.gz", "container.log.2.gz", "container.log.3.gz", "container.log.4.gz",
    ]
    r = dm.docker("logs", cid, check=True)
    nums = r.stdout.split()
    assert r.stderr == "err\n" and nums == [str(i) for i in range(int(nums[0]), 3001)] and len(nums) > 400
    r = dm.docker("logs", "--tail", "3", cid)
    assert (r.stdout, r.stderr) == ("2999\n3000\n", "err\n")
    assert dm.client.containers.get(cid).logs(tail=3, stderr=False).split() == [b"2999", b"3000"]
    # the local driver takes only its own options
    bad = dm.docker("create", "--log-driver", "local", "--log-opt", "labels=a", "busybox", "true")
    assert bad.returncode != 0 and "unknown log opt 'labels' for log driver local" in bad.stderr


def test_none_driver_cannot_be_read(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "--log-driver", "none", "busybox", "echo", "hi").strip()
    _wait_exit(dm, cid)
    r = dm.docker("logs", cid)
    assert r.returncode == 1
    assert "Error response from daemon: configured logging driver does not support reading" in r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        dm.client.containers.get(cid).logs()
    assert e.value.status_code == 501
    assert not [n for n in os.listdir(os.path.join(dm.data_root, "containers", cid)) if "log" in n]


def test_non_blocking_mode_and_info(dm: Daemon) -> None:
    cid = dm.out(
        "run", "-d", "--log-opt", "mode=non-blocking", "--log-opt", "max-buffer-size=4m",
        "busybox", "seq", "1", "5000",
    ).strip()
    _wait_exit(dm, cid)
    # A fast disk drains the buffer: nothing is lost, and the exit waited for the buffer.
    assert dm.out("logs", cid).split() == [str(i) for i in range(1, 5001)]
    assert dm.info()["Plugins"]["Log"] == ["json-file", "local"]
