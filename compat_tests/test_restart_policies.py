"""Restart policies through the stock CLI and docker-py: no, always, unless-stopped,
on-failure[:N], RestartCount, the restarting state, stop/kill/rm -f of a restarting container,
`docker update --restart`, and the policies applied when the daemon starts again."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import require_root
from tests.daemon import Daemon, wait_until


def state(dm: Daemon, ref: str) -> dict[str, Any]:
    out = dm.out("inspect", "-f", "{{json .State}} {{.RestartCount}}", ref).strip()
    st, count = out.rsplit(" ", 1)
    return {**json.loads(st), "RestartCount": int(count)}


def test_on_failure_n_stops_after_n_restarts(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "crashy", "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 3")
    wait_until(lambda: state(dm, "crashy")["Status"] == "exited" and state(dm, "crashy")["RestartCount"] == 3,
               30, "on-failure:3 to give up after 3 restarts")
    s = state(dm, "crashy")
    assert (s["ExitCode"], s["Running"], s["Restarting"]) == (3, False, False)
    time.sleep(1)  # nothing more happens
    assert state(dm, "crashy")["RestartCount"] == 3
    assert dm.out("ps", "-a", "--filter", "name=crashy", "--format", "{{.Status}}").startswith("Exited (3)")


def test_on_failure_leaves_a_clean_exit_alone(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "fine", "--restart", "on-failure", "busybox", "true")
    wait_until(lambda: state(dm, "fine")["Status"] == "exited", 20, "exit")
    time.sleep(0.5)
    s = state(dm, "fine")
    assert (s["Status"], s["RestartCount"]) == ("exited", 0)


def test_always_comes_back_with_growing_backoff(dm: Daemon) -> None:
    """The back-off doubles (100 ms, 200 ms, ...): within a deadline it reaches a few restarts,
    and while it waits, inspect and ps show it restarting."""
    dm.out("run", "-d", "--name", "always", "--restart", "always", "busybox", "sh", "-c", "exit 1")
    wait_until(lambda: state(dm, "always")["RestartCount"] >= 5, 60, "5 restarts")
    # From the 6th restart on the wait is >= 3.2 s: the restarting state is there to be seen.
    wait_until(lambda: state(dm, "always")["Restarting"], 30, "the restarting state")
    s = state(dm, "always")
    assert (s["Running"], s["Restarting"], s["Status"], s["Pid"], s["ExitCode"]) == (True, True, "restarting", 0, 1)
    line = dm.out("ps", "--filter", "name=always", "--format", "{{.State}}|{{.Status}}").strip()
    assert line.startswith("restarting|Restarting (1) "), line
    assert line.endswith(" ago"), line
    assert dm.out("ps", "-q", "--filter", "status=restarting", "--filter", "name=always").strip()
    # docker stop cancels the pending restart.
    dm.out("stop", "always")
    s = state(dm, "always")
    assert (s["Status"], s["Running"], s["Restarting"], s["ExitCode"]) == ("exited", False, False, 1)
    count = s["RestartCount"]
    time.sleep(0.5)
    assert state(dm, "always")["RestartCount"] == count and state(dm, "always")["Status"] == "exited"


def test_rm_kill_restart_of_a_restarting_container(dm: Daemon) -> None:
    for name in ("gone", "hit", "again"):
        dm.out("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "exit 2")
    def waiting_long(name: str) -> bool:
        s = state(dm, name)
        return bool(s["RestartCount"] >= 6 and s["Restarting"])

    for name in ("gone", "hit", "again"):
        wait_until(functools.partial(waiting_long, name), 60, f"a long wait before {name}'s restart")
    r = dm.docker("rm", "gone")
    assert r.returncode == 1
    assert ('cannot remove container "/gone": container is restarting: stop the container before removing or '
            "force remove") in r.stderr
    dm.out("rm", "-f", "gone", timeout=30)
    assert dm.out("ps", "-aq", "--filter", "name=gone") == ""
    # docker kill cancels the pending restart (dockerd's ExitOnNext).
    dm.out("kill", "hit", timeout=30)
    s = state(dm, "hit")
    assert (s["Status"], s["ExitCode"]) == ("exited", 2)
    # docker restart: a start by hand, RestartCount back to 0, the policy goes on.
    dm.out("restart", "-t", "1", "again", timeout=30)
    assert state(dm, "again")["RestartCount"] <= 1
    wait_until(lambda: state(dm, "again")["RestartCount"] >= 2, 20, "restarts after docker restart")


def test_kill_and_stop_prevent_restart(dm: Daemon) -> None:
    for name, how in (("killed", ["kill"]), ("stopped", ["stop", "-t", "1"])):
        dm.out("run", "-d", "--name", name, "--restart", "always", "busybox", "sleep", "1000")
        dm.out(*how, name)
        time.sleep(0.5)
        s = state(dm, name)
        assert (s["Status"], s["RestartCount"]) == ("exited", 0), name


def test_always_restarts_after_the_process_dies_by_itself(dm: Daemon) -> None:
    """A process killed from outside (not through the API) is restarted, with a new pid."""
    import os
    import signal

    dm.out("run", "-d", "--name", "victim", "--restart", "always", "busybox", "sleep", "1000")
    pid = state(dm, "victim")["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: state(dm, "victim")["RestartCount"] == 1 and state(dm, "victim")["Running"]
               and not state(dm, "victim")["Restarting"], 20, "the restart")
    assert state(dm, "victim")["Pid"] not in (0, pid)


def test_events_die_then_start_and_wait_next_exit(dm: Daemon) -> None:
    cid = dm.out("create", "--name", "evs", "--restart", "on-failure:2", "busybox", "sh", "-c", "sleep 0.3; exit 4"
                 ).strip()
    since = str(time.time() - 1)
    # docker wait (not-running) returns at each exit, like dockerd's stop waiters.
    api = dm.api()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(api.wait(cid, timeout=30, condition="next-exit")["StatusCode"]))
    t.start()
    time.sleep(0.2)
    dm.out("start", cid)
    t.join(30)
    assert got == [4]
    wait_until(lambda: state(dm, "evs")["Status"] == "exited" and state(dm, "evs")["RestartCount"] == 2, 30, "end")
    out = dm.out("events", "--since", since, "--until", str(time.time() + 0.5), "--filter", f"container={cid}",
                 "--format", "{{.Action}}")
    actions = [a for a in out.split() if a in ("start", "die", "restart")]
    assert actions == ["start", "die", "start", "die", "start", "die"], out


def test_update_restart_on_a_stopped_container(dm: Daemon) -> None:
    dm.out("run", "--name", "later", "busybox", "true")
    dm.out("update", "--restart", "always", "later")
    time.sleep(0.5)
    assert state(dm, "later")["Status"] == "exited"  # update does not start it
    assert dm.out("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "later").strip() == "always"
    dm.out("start", "later")
    wait_until(lambda: state(dm, "later")["RestartCount"] >= 2, 20, "restarts after the next exit")
    dm.out("update", "--restart", "no", "later")
    wait_until(lambda: state(dm, "later")["Status"] == "exited", 20, "policy no to take effect")
    count = state(dm, "later")["RestartCount"]
    time.sleep(0.5)
    assert state(dm, "later")["RestartCount"] == count


def test_restart_with_rm_refused(dm: Daemon) -> None:
    # The CLI refuses it itself (28.x words); the daemon refuses the API request like dockerd.
    r = dm.docker("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.returncode == 125 and "conflicting options: cannot specify both --restart and --rm" in r.stderr
    with pytest.raises(Exception, match="can't create 'AutoRemove' container with restart policy"):
        dm.api().create_container("busybox", "true", host_config=dm.api().create_host_config(
            auto_remove=True, restart_policy={"Name": "always"}))


def test_docker_py_restart_policy(dm: Daemon) -> None:
    c = dm.client.containers.run("busybox", ["sh", "-c", "exit 5"], detach=True, name="pyrestart",
                                 restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    wait_until(lambda: (c.reload() or c.status == "exited") and c.attrs["RestartCount"] == 2, 30, "2 restarts")
    assert c.attrs["State"]["ExitCode"] == 5
    c.remove(force=True)


# ---- across daemon restarts ------------------------------------------------------------------


@pytest.fixture
def fresh(busybox_tar: str) -> Iterator[Daemon]:
    require_root()
    d = Daemon("btrfs")
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        yield d
        d.clean_containers()
        assert d.stop() == 0, d.log()
    finally:
        d.cleanup()


def test_policies_applied_when_the_daemon_starts(fresh: Daemon) -> None:
    d = fresh
    for name, policy in (("al", "always"), ("us", "unless-stopped"), ("us-stopped", "unless-stopped"),
                         ("al-stopped", "always"), ("no", "no"), ("of", "on-failure")):
        d.out("run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "1000")
    d.out("stop", "-t", "0", "us-stopped", "al-stopped")
    assert d.stop() == 0, d.log()  # stops every container, restarting none
    d.start()
    wait_until(lambda: all(state(d, n)["Running"] for n in ("al", "us", "al-stopped", "of")), 30,
               "always, unless-stopped and on-failure (SIGKILLed at shutdown: 137) back")
    assert not state(d, "us-stopped")["Running"]
    assert not state(d, "no")["Running"]
    for n in ("al", "us", "al-stopped", "of"):
        assert state(d, n)["RestartCount"] == 0
    # The restarted containers behave: stop works, no restart after it.
    d.out("stop", "-t", "0", "al")
    time.sleep(0.3)
    assert state(d, "al")["Status"] == "exited"


def test_daemon_shutdown_cancels_a_pending_restart(fresh: Daemon) -> None:
    d = fresh
    d.out("run", "-d", "--name", "loop", "--restart", "always", "busybox", "sh", "-c", "exit 7")
    wait_until(lambda: state(d, "loop")["RestartCount"] >= 6 and state(d, "loop")["Restarting"], 60,
               "a long back-off")
    assert d.stop() == 0, d.log()
    d.start()
    # Exited at shutdown (restart cancelled), then started by the policy at daemon start.
    wait_until(lambda: state(d, "loop")["RestartCount"] >= 1, 30, "restart at daemon start")
