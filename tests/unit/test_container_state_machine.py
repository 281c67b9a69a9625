"""The container state machine (engine/containers.py) over fake runtime, cgroups and storage:
create, start, stop, kill, wait, AutoRemove, rm -f races, restore after a restart, start
failures, lost exits. No root needed (`make test` runs this file as nobody too)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from bocker_engine.engine.container import Container
from bocker_engine.engine.containers import ContainerService
from bocker_engine.errors import Conflict, InvalidParameter, NotFound, NotModified, System
from tests.unit.fakes import Host

pytestmark = pytest.mark.timeout(20)

DEADLINE = 5.0


async def until(cond: Callable[[], bool], what: str) -> None:
    """Poll for a condition, failing (not hanging) after a deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def within(aw: Awaitable[tuple[int, str]]) -> tuple[int, str]:
    return await asyncio.wait_for(aw, DEADLINE)


@pytest.fixture
def host(tmp_path: os.PathLike[str]) -> Host:
    return Host(str(tmp_path))


async def new(svc: ContainerService, **body: object) -> Container:
    c, _ = await svc.create(None, {"Image": "busybox", "Cmd": ["sh"], **body})
    return c


def released(host: Host, c: Container) -> bool:
    """Nothing of a run is left: no process, no cgroup, no mount."""
    return c.id not in host.cgroups.groups and host.driver.mounted() == []


# ---- create ----------------------------------------------------------------------------------


async def test_create_records_the_container(host: Host) -> None:
    svc = await host.daemon()
    c, warnings = await svc.create("web", {"Image": "busybox", "Cmd": ["echo", "hi"]})
    assert warnings == []
    assert c.state.status_word() == "created" and c.path == "echo" and c.args == ["hi"]
    assert os.path.exists(c.file("config.v2.json")) and os.path.exists(c.file("hostconfig.json"))
    assert c.id in svc.layers.mounts and svc.get("web") is c
    assert host.actions(c.id) == ["create"]
    with pytest.raises(Conflict, match='The container name "/web" is already in use'):
        await svc.create("web", {"Image": "busybox"})
    with pytest.raises(NotFound, match="No such image: nosuch"):
        await svc.create(None, {"Image": "nosuch"})


def driver_dirs(host: Host, svc: ContainerService) -> list[str]:
    """The driver's layers, less the images' shared init layers (kept for the next create,
    collected with their image)."""
    return sorted(set(os.listdir(host.driver.home)) - svc.layers.inits)


async def test_failed_create_leaves_nothing(host: Host) -> None:
    svc = await host.daemon()
    before = sorted(os.listdir(host.driver.home))
    host.driver.fail_create = "no space left on device"
    with pytest.raises(System, match="no space left"):
        await svc.create("bad", {"Image": "busybox"})
    with pytest.raises(NotFound):
        svc.get("bad")
    assert os.listdir(svc.root) == [] and driver_dirs(host, svc) == before


# ---- start and exit --------------------------------------------------------------------------


async def test_start_then_exit(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    next_exit = svc.wait_future(c.id, "next-exit")
    await svc.start(c.id)
    assert c.state.Running and c.state.Pid == host.supervisor.procs[c.id].pid
    assert c.has_been_started and c.id in host.cgroups.groups and host.driver.mounted() != []
    assert host.supervisor.specs[-1].args == ["sh"]
    with pytest.raises(NotModified):
        await svc.start(c.id)
    host.supervisor.exit(c.id, 3)
    assert await within(next_exit) == (3, "")
    assert c.state.status_word() == "exited" and c.state.ExitCode == 3 and c.state.Pid == 0
    assert released(host, c)
    assert host.actions(c.id) == ["create", "start", "die"]
    assert ("die", c.id, {"exitCode": "3"}) in host.events
    # Recorded on disk: a new daemon reads the same state.
    assert (await host.daemon()).get(c.id).state.ExitCode == 3


async def test_exit_before_the_start_reply(host: Host) -> None:
    """A fast `true`: its exit event is handled before the engine has the start reply."""
    svc = await host.daemon()
    c = await new(svc)
    fut = svc.wait_future(c.id, "next-exit")
    host.supervisor.exit_at_once, host.supervisor.exit_before_reply = 0, True
    await svc.start(c.id)
    assert await within(fut) == (0, "")
    await until(lambda: released(host, c), "the run released")
    assert c.state.status_word() == "exited" and host.actions(c.id) == ["create", "start", "die"]


async def test_exit_right_after_the_start_reply(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    fut = svc.wait_future(c.id, "next-exit")
    host.supervisor.exit_at_once = 7
    await svc.start(c.id)
    assert await within(fut) == (7, "")
    assert released(host, c) and host.actions(c.id).count("die") == 1


async def test_start_of_paused_or_removed_container_refused(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    await svc.pause(c.id)
    assert host.cgroups.is_frozen(c.id) and c.state.status_word() == "paused"
    with pytest.raises(Conflict, match="cannot start a paused container"):
        await svc.start(c.id)
    with pytest.raises(Conflict, match="container is paused and must be unpaused first"):
        await svc.remove(c.id)
    await svc.unpause(c.id)
    assert not host.cgroups.is_frozen(c.id) and c.state.status_word() == "running"
    await svc.kill(c.id, "KILL")
    assert c.state.ExitCode == 137


# ---- start failures: 126, 127 and the rest -----------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "kind", "code", "error"),
    [
        ('exec: "nosuchcmd": executable file not found in $PATH', "ENOENT", 127, InvalidParameter),
        ('exec: "/x": stat /x: no such file or directory', "ENOENT", 127, InvalidParameter),
        ('exec: "/etc/passwd": permission denied', "EACCES", 126, InvalidParameter),
        ('exec: "/etc": is a directory', "EISDIR", 126, InvalidParameter),
        ("mkdir /etc/passwd/x: Not a directory", "ENOTDIR", 127, InvalidParameter),
        ("exec /bin/x: Exec format error", "ENOEXEC", 128, System),
        ("error mounting 'a' to rootfs at '/b': operation not permitted", "EPERM", 128, System),
        ("unable to find user nobody2: no matching entries in passwd file", "", 128, System),
        # A supervisor from an older daemon says no kind: the text decides, as dockerd's does.
        ('exec: "nosuchcmd": executable file not found in $PATH', None, 127, InvalidParameter),
        ("PermissionError: [Errno 13] Permission denied: '/x'", None, 126, InvalidParameter),
        ("something else", None, 128, System),
    ],
)
async def test_start_failure_codes(host: Host, msg: str, kind: str | None, code: int, error: type[Exception]) -> None:
    svc = await host.daemon()
    c = await new(svc)
    next_exit = svc.wait_future(c.id, "next-exit")
    host.supervisor.start_error = (msg, kind)
    with pytest.raises(error) as e:
        await svc.start(c.id)
    # The CLI derives `docker run`'s status from this text: runc's wording, unchanged.
    assert str(e.value).startswith("failed to create task for container: failed to create shim task: ")
    assert f"error during container init: {msg}" in str(e.value) and str(e.value).endswith(": unknown")
    if kind == "ENOTDIR":
        assert "Are you trying to mount a directory onto a file (or vice-versa)?" in str(e.value)
    # Never started, so "Created" to `docker ps`, as with dockerd; the code is for inspect.
    assert c.state.status_word() == "created" and c.state.ExitCode == code and c.state.Error == msg
    assert released(host, c)
    # dockerd leaves next-exit waiters pending after a failed start (the CLI reports the error).
    await asyncio.sleep(0)
    assert not next_exit.done()
    assert host.actions(c.id) == ["create"]


async def test_failed_start_with_autoremove(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, HostConfig={"AutoRemove": True})
    removed = svc.wait_future(c.id, "removed")
    host.supervisor.start_error = ('exec: "nosuchcmd": executable file not found in $PATH', "ENOENT")
    with pytest.raises(InvalidParameter):
        await svc.start(c.id)
    assert await within(removed) == (127, "")
    assert c.id not in svc.containers and not os.path.exists(c.root) and c.id not in svc.layers.mounts


async def test_failure_before_the_runtime_is_128(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    host.cgroups.fail_create = "cgroups: cannot create: no such file or directory"
    with pytest.raises(System, match="cannot create"):
        await svc.start(c.id)
    assert c.state.ExitCode == 128 and released(host, c)
    await svc.start(c.id)  # and it can start afterwards
    assert c.state.Running


# ---- stop and kill ---------------------------------------------------------------------------


async def test_stop(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    await svc.stop(c.id, None, None)
    assert c.state.ExitCode == 143 and released(host, c)
    assert host.supervisor.signals == [(c.id, signal.SIGTERM)]
    # dockerd's events: every signal sent is a `kill` event, `stop` comes after the `die`.
    assert host.actions(c.id) == ["create", "start", "kill", "die", "stop"]
    with pytest.raises(NotModified):
        await svc.stop(c.id, None, None)


async def test_stop_escalates_to_sigkill(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, StopSignal="SIGUSR1")
    host.supervisor.survives = {signal.SIGUSR1}
    await svc.start(c.id)
    await svc.stop(c.id, 0, None)  # -t 0: straight to SIGKILL
    assert c.state.ExitCode == 137 and released(host, c)
    assert [s for _, s in host.supervisor.signals] == [signal.SIGKILL]
    host.supervisor.survives = {signal.SIGUSR1}
    await svc.start(c.id)
    await svc.stop(c.id, 1, None)  # the stop signal is trapped: SIGKILL after the timeout
    assert c.state.ExitCode == 137
    assert [s for _, s in host.supervisor.signals][1:] == [signal.SIGUSR1, signal.SIGKILL]


async def test_kill(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    with pytest.raises(Conflict, match=f"Container {c.id} is not running"):
        await svc.kill(c.id, None)
    await svc.start(c.id)
    host.supervisor.survives = set()
    await svc.kill(c.id, "SIGKILL")
    # dockerd's kill waits for the exit: inspect right after sees it.
    assert not c.state.Running and c.state.ExitCode == 137 and released(host, c)
    assert host.actions(c.id) == ["create", "start", "kill", "die"]
    with pytest.raises(InvalidParameter):
        await svc.kill(c.id, "SIGNOPE")


async def test_kill_racing_the_exit(host: Host) -> None:
    """The process exits on its own while SIGKILL is on its way: its own code is kept."""
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    host.supervisor.exit(c.id, 0)  # its event not handled yet
    assert c.state.Running
    await svc.kill(c.id, "KILL")
    assert c.state.ExitCode == 0 and released(host, c)
    assert host.actions(c.id).count("die") == 1


async def test_kill_paused_container(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    await svc.pause(c.id)
    await svc.kill(c.id, "KILL")
    assert c.state.ExitCode == 137 and not c.state.Paused and released(host, c)


# ---- wait ------------------------------------------------------------------------------------


async def test_wait_conditions(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    with pytest.raises(InvalidParameter, match="invalid condition"):
        svc.wait_future(c.id, "whenever")
    # not-running on a container that is not running answers at once.
    assert svc.wait_future(c.id, "not-running").result() == (0, "")
    next_exit = svc.wait_future(c.id, "next-exit")
    removed = svc.wait_future(c.id, "removed")
    await svc.start(c.id)
    not_running = svc.wait_future(c.id, "not-running")
    host.supervisor.exit(c.id, 5)
    assert await within(svc.wait_exit(c.id, next_exit)) == (5, "")
    assert await within(not_running) == (5, "")
    assert not removed.done()
    await svc.remove(c.id)
    assert await within(removed) == (5, "")
    with pytest.raises(NotFound):
        svc.wait_future(c.id, "removed")


async def test_removed_waiter_of_a_created_container(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    removed = svc.wait_future(c.id, "removed")
    next_exit = svc.wait_future(c.id, "next-exit")
    await svc.remove(c.id)
    assert await within(removed) == (0, "") and await within(next_exit) == (0, "")


# ---- AutoRemove and rm -f --------------------------------------------------------------------


async def test_autoremove_after_exit(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, HostConfig={"AutoRemove": True})
    removed = svc.wait_future(c.id, "removed")
    await svc.start(c.id)
    host.supervisor.exit(c.id, 2)
    assert await within(removed) == (2, "")
    assert c.id not in svc.containers and not os.path.exists(c.root)
    assert c.id not in svc.layers.mounts and driver_dirs(host, svc) == []
    assert host.supervisor.forgotten == [c.id] and released(host, c)
    assert host.actions(c.id) == ["create", "start", "die", "destroy"]


async def test_remove(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, Cmd=["top"])
    await svc.start(c.id)
    with pytest.raises(Conflict, match="container is running: stop the container before removing or force remove"):
        await svc.remove(c.id)
    await svc.remove(c.id, force=True)
    assert c.id not in svc.containers and not os.path.exists(c.root) and released(host, c)
    assert driver_dirs(host, svc) == []
    assert host.actions(c.id) == ["create", "start", "kill", "die", "destroy"]
    assert c.name.lstrip("/") not in svc.names


async def test_rm_f_racing_autoremove(host: Host) -> None:
    """`docker run --rm` killed by `docker rm -f`: both removals end, the container once."""
    svc = await host.daemon()
    c = await new(svc, HostConfig={"AutoRemove": True})
    await svc.start(c.id)
    await asyncio.wait_for(asyncio.gather(svc.remove(c.id, force=True), svc.remove(c.id, force=True)), DEADLINE)
    assert c.id not in svc.containers and released(host, c)
    assert host.actions(c.id).count("destroy") == 1 and host.actions(c.id).count("die") == 1


async def test_rm_f_while_starting(host: Host) -> None:
    """`rm -f` while the start is with the runtime: the start finishes, then the removal kills
    what it started; nothing is left running, mounted or on disk."""
    svc = await host.daemon()
    c = await new(svc)
    gate = host.supervisor.start_gate = asyncio.Event()
    starting = asyncio.create_task(svc.start(c.id))
    await until(lambda: bool(host.supervisor.specs), "the start to reach the runtime")
    removing = asyncio.create_task(svc.remove(c.id, force=True))
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(starting, removing, return_exceptions=True), DEADLINE)
    assert results == [None, None]
    assert c.id not in svc.containers and not os.path.exists(c.root)
    await host.supervisor.settle()
    assert all(not p.running for p in host.supervisor.procs.values())
    assert released(host, c) and host.cgroups.groups == {}


# ---- lost exits ------------------------------------------------------------------------------


async def test_lost_exit_settled_from_the_supervisors_record(host: Host) -> None:
    """The exit event never arrives, but the supervisor recorded the exit: wait settles it."""
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    host.supervisor.deliver_exits = False
    fut = svc.wait_future(c.id, "next-exit")
    host.supervisor.exit(c.id, 9)
    assert await within(svc.wait_exit(c.id, fut)) == (9, "")
    assert released(host, c)


async def test_lost_exit_settled_by_stop(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    host.supervisor.deliver_exits = False
    host.supervisor.exit(c.id, 4)
    await asyncio.wait_for(svc.stop(c.id, None, None), DEADLINE)
    assert c.state.ExitCode == 4 and released(host, c)


async def test_vanished_process_settled_by_kill(host: Host) -> None:
    """Neither an exit nor a record: the process is gone from its cgroup; SIGKILL settles 137."""
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    host.supervisor.vanish(c.id)
    await asyncio.wait_for(svc.kill(c.id, "KILL"), DEADLINE)
    assert c.state.ExitCode == 137 and released(host, c)


async def test_vanished_process_settled_by_wait(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    fut = svc.wait_future(c.id, "not-running")
    host.supervisor.vanish(c.id)
    assert await within(svc.wait_exit(c.id, fut)) == (255, "")
    assert released(host, c)


async def test_supervisor_dies(host: Host) -> None:
    svc = await host.daemon()
    a, b = await new(svc), await new(svc)
    await svc.start(a.id)
    await host.supervisor.die()
    assert not a.state.Running and a.state.ExitCode == 255
    assert a.state.Error == "container supervisor exited unexpectedly"
    assert released(host, a) and b.state.status_word() == "created"
    # A new supervisor serves what comes next.
    await svc.start(a.id)
    assert a.state.Running


# ---- restore after a daemon restart ----------------------------------------------------------


async def test_live_restore_adopts_running_containers(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    pid = c.state.Pid
    await svc.shutdown(stop_containers=False)  # --live-restore: they keep running
    host.supervisor.disconnect()
    svc2 = await host.daemon(live_restore=True)
    c2 = svc2.get(c.id)
    assert c2.state.Running and c2.state.Pid == pid
    await until(lambda: host.driver.mounted() != [], "the rootfs mounted again")
    fut = svc2.wait_future(c.id, "next-exit")
    host.supervisor.exit(c.id, 6)
    assert await within(fut) == (6, "")
    assert released(host, c2)


async def test_restore_without_live_restore_kills(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc)
    await svc.start(c.id)
    host.supervisor.disconnect()  # the daemon died without stopping its containers
    svc2 = await host.daemon(live_restore=False)
    c2 = svc2.get(c.id)
    await until(lambda: not c2.state.Running, "the container killed")
    assert c2.state.ExitCode == 137
    await until(lambda: released(host, c2), "the run released")


async def test_restore_records_exits_that_happened_while_down(host: Host) -> None:
    svc = await host.daemon()
    kept, gone, auto = await new(svc), await new(svc), await new(svc, HostConfig={"AutoRemove": True})
    for c in (kept, gone, auto):
        await svc.start(c.id)
    host.supervisor.disconnect()
    host.supervisor.exit(kept.id, 3)  # recorded by the supervisor while no daemon listened
    host.supervisor.vanish(gone.id)  # and one it knows nothing about
    host.supervisor.exit(auto.id, 0)
    await host.supervisor.settle()
    svc2 = await host.daemon(live_restore=True)
    await until(lambda: not svc2.get(kept.id).state.Running, "the recorded exit")
    assert svc2.get(kept.id).state.ExitCode == 3
    await until(lambda: not svc2.get(gone.id).state.Running, "the unknown exit")
    assert svc2.get(gone.id).state.ExitCode == 255
    await until(lambda: auto.id not in svc2.containers, "the AutoRemove container removed")
    assert host.cgroups.groups == {}


async def test_restore_removes_stopped_autoremove_containers(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, HostConfig={"AutoRemove": True})
    await svc.start(c.id)
    # Exited and recorded, but the daemon died before removing it.
    host.supervisor.disconnect()
    host.supervisor.exit(c.id, 0)
    await host.supervisor.settle()
    c.state.set_stopped(0)
    svc.save(c)
    host.cgroups.groups.clear()
    svc2 = await host.daemon()
    await until(lambda: c.id not in svc2.containers, "the container removed")
    assert not os.path.exists(c.root)


async def test_rm_f_while_a_failing_start_autoremoves(host: Host) -> None:
    svc = await host.daemon()
    c = await new(svc, HostConfig={"AutoRemove": True})
    gate = host.supervisor.start_gate = asyncio.Event()
    host.supervisor.start_error = ('exec: "nosuchcmd": executable file not found in $PATH', "ENOENT")
    starting = asyncio.create_task(svc.start(c.id))
    await until(lambda: bool(host.supervisor.specs), "the start to reach the runtime")
    removing = asyncio.create_task(svc.remove(c.id, force=True))
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(starting, removing, return_exceptions=True), DEADLINE)
    assert isinstance(results[0], InvalidParameter) and results[1] is None
    assert c.id not in svc.containers and not os.path.exists(c.root) and released(host, c)
    assert host.actions(c.id).count("destroy") == 1
