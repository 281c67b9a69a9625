"""A container whose process exited is never reported running (issue 6, section 1).

Every stdio shape a client can give a container, followed by stop, kill, rm -f and wait, each
with a deadline: a lost exit shows up as a hang or as "did not exit after SIGKILL".
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.daemon import DOCKER, Daemon

STEP = 20  # seconds any single step may take; a lost exit used to take 30 s and then fail


@dataclass
class Running:
    cid: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(STEP)


def _until(cond: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _running(dm: Daemon, ref: str) -> bool:
    return dm.out("inspect", "-f", "{{.State.Running}}", ref, timeout=STEP).strip() == "true"


def _popen(dm: Daemon, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([DOCKER, *args], env=dm.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _started(dm: Daemon, name: str) -> str:
    _until(lambda: dm.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", f"{name} running")
    return dm.out("inspect", "-f", "{{.Id}}", name).strip()


def shape_detached(dm: Daemon, name: str) -> Running:
    return Running(dm.out("run", "-d", "--name", name, "busybox", "sleep", "1000", timeout=STEP).strip())


def shape_detached_stdin(dm: Daemon, name: str) -> Running:
    # docker-py's stdin_open=True, compose's stdin_open: the exit of this one used to be lost.
    return Running(dm.out("run", "-d", "-i", "--name", name, "busybox", "cat", timeout=STEP).strip())


def shape_detached_tty(dm: Daemon, name: str) -> Running:
    return Running(dm.out("run", "-dit", "--name", name, "busybox", "sh", timeout=STEP).strip())


def shape_attached_stdin(dm: Daemon, name: str) -> Running:
    # Stdin still open when the container exits; the client closes it afterwards.
    p = _popen(dm, "run", "-i", "--name", name, "busybox", "cat")
    return Running(_started(dm, name), [p])


def shape_stdin_closed_before_exit(dm: Daemon, name: str) -> Running:
    p = _popen(dm, "run", "-i", "--name", name, "busybox", "sh", "-c", "cat >/dev/null; exec sleep 1000")
    cid = _started(dm, name)
    assert p.stdin is not None
    p.stdin.write(b"some input\n")
    p.stdin.close()
    time.sleep(0.2)  # let the EOF travel; the container keeps running on its sleep
    return Running(cid, [p])


def shape_stdin_only_client_hangs_up(dm: Daemon, name: str) -> Running:
    p = _popen(dm, "run", "-i", "-a", "stdin", "--name", name, "busybox", "sh", "-c", "cat; exec sleep 1000")
    cid = _started(dm, name)
    p.kill()
    p.wait(STEP)
    return Running(cid)


def shape_attach_client_disconnects(dm: Daemon, name: str) -> Running:
    cid = dm.out("run", "-d", "-i", "--name", name, "busybox", "cat", timeout=STEP).strip()
    for sig in (signal.SIGKILL, signal.SIGKILL):
        p = _popen(dm, "attach", cid)
        time.sleep(0.3)
        p.send_signal(sig)
        p.wait(STEP)
    return Running(cid)


SHAPES = {
    "d": shape_detached,
    "d-i": shape_detached_stdin,
    "dit": shape_detached_tty,
    "i-attached": shape_attached_stdin,
    "stdin-closed-before-exit": shape_stdin_closed_before_exit,
    "a-stdin-hangup": shape_stdin_only_client_hangs_up,
    "attach-disconnects": shape_attach_client_disconnects,
}


@pytest.fixture
def container(dm: Daemon, request: pytest.FixtureRequest) -> Iterator[Running]:
    name = f"exits-{request.node.callspec.id.replace('[', '-').replace(']', '')}"[:60]
    dm.docker("rm", "-f", name)
    r = SHAPES[request.param](dm, name)
    try:
        yield r
    finally:
        r.close()


def _assert_exited(dm: Daemon, cid: str, code: int) -> None:
    assert dm.out("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid, timeout=STEP).split() == [
        "false",
        str(code),
    ]
    assert cid[:12] not in dm.out("ps", "-q", timeout=STEP)


@pytest.mark.parametrize("container", list(SHAPES), indirect=True)
def test_stop(dm: Daemon, container: Running) -> None:
    r = dm.docker("stop", "-t", "1", container.cid, timeout=STEP)
    assert r.returncode == 0, r.stderr
    # PID 1 ignores SIGTERM without a handler: killed after the timeout.
    _assert_exited(dm, container.cid, 137)
    dm.out("rm", container.cid, timeout=STEP)


@pytest.mark.parametrize("container", list(SHAPES), indirect=True)
def test_kill(dm: Daemon, container: Running) -> None:
    r = dm.docker("kill", container.cid, timeout=STEP)
    assert r.returncode == 0, r.stderr
    # The kill returns once the container has exited, as dockerd's does.
    _assert_exited(dm, container.cid, 137)
    dm.out("rm", container.cid, timeout=STEP)


@pytest.mark.parametrize("container", list(SHAPES), indirect=True)
def test_rm_force(dm: Daemon, container: Running) -> None:
    r = dm.docker("rm", "-f", container.cid, timeout=STEP)
    assert r.returncode == 0, r.stderr
    assert dm.out("ps", "-aq", "--no-trunc", timeout=STEP).split().count(container.cid) == 0


@pytest.mark.parametrize("container", list(SHAPES), indirect=True)
def test_wait_for_an_exit_from_outside(dm: Daemon, container: Running) -> None:
    waiter = subprocess.Popen([DOCKER, "wait", container.cid], env=dm.env, stdout=subprocess.PIPE)
    time.sleep(0.3)
    pid = int(dm.out("inspect", "-f", "{{.State.Pid}}", container.cid))
    os.kill(pid, signal.SIGKILL)  # the process ends without the engine asking for it
    out, _ = waiter.communicate(timeout=STEP)
    assert out.decode().strip() == "137"
    assert waiter.returncode == 0
    _until(lambda: not _running(dm, container.cid), "not running")
    # Clients attached to it see their stream end.
    for p in container.procs:
        if p.stdin is not None and not p.stdin.closed:
            p.stdin.close()
        p.wait(STEP)
    dm.out("rm", container.cid, timeout=STEP)


@pytest.mark.parametrize("action", ["stop", "kill", "remove", "wait"])
def test_dockerpy_stdin_open(dm: Daemon, action: str) -> None:
    c = dm.client.containers.run("busybox", "cat", detach=True, stdin_open=True)
    try:
        result: dict[str, object] = {}

        def run() -> None:
            if action == "stop":
                c.stop(timeout=1)
            elif action == "kill":
                c.kill()
            elif action == "remove":
                c.remove(force=True)
            else:
                result["wait"] = c.wait()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        if action == "wait":
            time.sleep(0.2)
            c.reload()
            os.kill(c.attrs["State"]["Pid"], signal.SIGKILL)
        t.join(STEP)
        assert not t.is_alive(), f"{action} hung"
        if action == "remove":
            assert dm.out("ps", "-aq", "--no-trunc").split().count(c.id) == 0
            return
        c.reload()
        assert (c.attrs["State"]["Running"], c.attrs["State"]["ExitCode"]) == (False, 137)
        if action == "wait":
            assert result["wait"] == {"StatusCode": 137, "Error": None}
    finally:
        dm.docker("rm", "-f", c.id)
