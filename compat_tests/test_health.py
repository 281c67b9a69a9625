"""Healthchecks (issue 12) through the stock CLI and docker-py: State.Health going healthy,
unhealthy and healthy again, the `docker ps` suffix and health filter, --no-healthcheck, the
probe timeout, health_status events, the image's HEALTHCHECK, docker-py's healthcheck={...}."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tests.daemon import Daemon, wait_until

SECOND = 10**9


def health(dm: Daemon, ref: str) -> dict[str, Any] | None:
    out = dm.out("inspect", "-f", "{{json .State.Health}}", ref).strip()
    result: dict[str, Any] | None = json.loads(out)
    return result


def status(dm: Daemon, ref: str) -> str:
    h = health(dm, ref)
    return h["Status"] if h else "none"


def ps(dm: Daemon, *filters: str) -> dict[str, str]:
    args = [a for f in filters for a in ("--filter", f)]
    out = dm.out("ps", "-a", *args, "--format", "{{.Names}}\t{{.Status}}")
    return dict(line.split("\t", 1) for line in out.splitlines() if line.strip())


def test_healthy_unhealthy_healthy_with_ps_suffix_filter_and_events(dm: Daemon) -> None:
    t0 = time.time()
    cid = dm.out(
        "run", "-d", "--name", "hc", "--health-cmd", "cat /tmp/ok && echo fine",
        "--health-interval", "1s", "--health-retries", "2", "--health-timeout", "5s",
        "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 1000",
    ).strip()
    dm.out("run", "-d", "--name", "plain", "busybox", "sleep", "1000")
    assert status(dm, "plain") == "none"

    wait_until(lambda: status(dm, "hc") == "healthy", 30, "hc healthy")
    h = health(dm, "hc")
    assert h is not None and h["FailingStreak"] == 0
    last = h["Log"][-1]
    assert (last["ExitCode"], last["Output"]) == (0, "fine\n")
    assert set(last) == {"Start", "End", "ExitCode", "Output"}
    assert ps(dm, "name=hc")["hc"].endswith(" (healthy)")
    assert set(ps(dm, "health=healthy")) == {"hc"}
    assert set(ps(dm, "health=none")) == {"plain"}
    assert not ps(dm, "name=plain").get("plain", "").endswith(")")
    # Probes are not execs the container lists.
    assert dm.out("inspect", "-f", "{{json .ExecIDs}}", "hc").strip() == "null"

    dm.out("exec", "hc", "rm", "/tmp/ok")
    wait_until(lambda: status(dm, "hc") == "unhealthy", 30, "hc unhealthy")
    h = health(dm, "hc")
    assert h is not None and h["FailingStreak"] >= 2 and h["Log"][-1]["ExitCode"] == 1
    assert "No such file" in h["Log"][-1]["Output"]
    assert ps(dm, "name=hc")["hc"].endswith(" (unhealthy)")
    assert set(ps(dm, "health=unhealthy")) == {"hc"}
    assert ps(dm, "health=healthy") == {}

    dm.out("exec", "hc", "touch", "/tmp/ok")
    wait_until(lambda: status(dm, "hc") == "healthy", 30, "hc healthy again")
    wait_until(lambda: len(health(dm, "hc")["Log"]) == 5, 30, "five results kept")  # type: ignore[index]
    time.sleep(1.5)
    assert len(health(dm, "hc")["Log"]) == 5  # type: ignore[index]

    until = time.time() + 0.001
    out = dm.out(
        "events", "--since", f"{t0:.9f}", "--until", f"{until:.9f}", "--filter", f"container={cid}",
        "--filter", "event=health_status", "--format", "{{json .}}",
    )
    actions = [json.loads(line)["Action"] for line in out.splitlines() if line.strip()]
    assert actions == ["health_status: healthy", "health_status: unhealthy", "health_status: healthy"]

    # Persisted: the stopped container keeps its last health, and a start resets it.
    dm.out("stop", "-t", "0", "hc")
    assert status(dm, "hc") == "healthy"
    with open(os.path.join(dm.data_root, "containers", cid, "config.v2.json")) as f:
        on_disk = json.load(f)["State"]["Health"]
    assert on_disk == dm.client.api.inspect_container(cid)["State"]["Health"]
    assert on_disk["Status"] == "healthy"
    dm.out("start", "hc")
    assert status(dm, "hc") == "starting"
    assert ps(dm, "name=hc")["hc"].endswith(" (health: starting)")
    assert set(ps(dm, "health=starting")) == {"hc"}
    r = dm.docker("ps", "--filter", "health=bogus")
    assert r.returncode != 0 and "Unrecognised filter value for health: bogus" in r.stderr


def test_no_healthcheck_and_image_healthcheck(dm: Daemon, tmp_path: Any) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nHEALTHCHECK --interval=1s --timeout=3s CMD [\"true\"]\n")
    dm.out("build", "-q", "-t", "hcimage", str(tmp_path))
    try:
        dm.out("run", "-d", "--name", "fromimg", "hcimage", "sleep", "1000")
        dm.out("run", "-d", "--name", "disabled", "--no-healthcheck", "hcimage", "sleep", "1000")
        wait_until(lambda: status(dm, "fromimg") == "healthy", 30, "image healthcheck healthy")
        time.sleep(1.5)  # a probe would have run by now
        assert health(dm, "disabled") is None
        assert dm.out("inspect", "-f", "{{json .Config.Healthcheck.Test}}", "disabled").strip() == '["NONE"]'
        assert set(ps(dm, "health=none")) == {"disabled"}
    finally:
        dm.docker("rm", "-f", "fromimg", "disabled")
        dm.docker("rmi", "hcimage")


def test_probe_exceeding_timeout_is_killed_and_fails(dm: Daemon) -> None:
    dm.out(
        "run", "-d", "--name", "slow", "--health-cmd", "sleep 30", "--health-interval", "1s",
        "--health-timeout", "1s", "--health-retries", "1", "busybox", "sleep", "1000",
    )
    wait_until(lambda: status(dm, "slow") == "unhealthy", 40, "slow probe unhealthy")
    last = health(dm, "slow")["Log"][-1]  # type: ignore[index]
    assert (last["ExitCode"], last["Output"]) == (-1, "Health check exceeded timeout (1s)")
    # The killed probe does not linger in the container.
    wait_until(lambda: "sleep 30" not in dm.out("top", "slow"), 20, "probe killed")


def test_start_period_failures_do_not_count(dm: Daemon) -> None:
    dm.out(
        "run", "-d", "--name", "warming", "--health-cmd", "false", "--health-interval", "1s",
        "--health-retries", "1", "--health-start-period", "1h", "busybox", "sleep", "1000",
    )
    wait_until(lambda: len((health(dm, "warming") or {}).get("Log") or []) >= 2, 30, "two failed probes")
    h = health(dm, "warming")
    assert h is not None and (h["Status"], h["FailingStreak"]) == ("starting", 0)


def test_dockerpy_healthcheck(dm: Daemon) -> None:
    c = dm.client.containers.run(
        "busybox", ["sleep", "1000"], name="pyhc", detach=True,
        healthcheck={"test": ["CMD", "sh", "-c", "echo py; exit 0"], "interval": SECOND, "timeout": 5 * SECOND,
                     "retries": 2, "start_period": 0},
    )
    try:
        def py_status() -> str:
            c.reload()
            return str(c.attrs["State"].get("Health", {}).get("Status"))

        wait_until(lambda: py_status() == "healthy", 30, "docker-py healthcheck healthy")
        assert c.attrs["State"]["Health"]["Log"][-1]["Output"] == "py\n"
        assert c.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "sh", "-c", "echo py; exit 0"]
        assert [x.name for x in dm.client.containers.list(filters={"health": "healthy"})] == ["pyhc"]
    finally:
        c.remove(force=True)
