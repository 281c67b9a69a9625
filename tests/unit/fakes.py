"""Fakes of what ContainerService needs from the host, for the state-machine tests without root.

Each is a subclass of the real interface (mypy checks them against it) that keeps its state in
memory or on plain directories:
- FakeSupervisor: runtime/client.py's SupervisorClient. Processes are records; signals end them
  (unless they ignore the signal), and their exits are delivered the way the real client does:
  from another task (its events connection), after the start reply or, on request, before it.
  It can lose exit events, forget processes, fail starts with a kind, and die.
- FakeCgroups: runtime/cgroups' Cgroups, one set of pids per container; SIGKILL through it (and
  destroy) ends the processes, as the kernel would.
- FakeDriver: a storage driver on plain directories (a child starts as a copy of its parent).

Fake pids are above the kernel's PID_MAX_LIMIT (2**22), so that the engine's own liveness check
(kill(pid, 0)) can never hit a real process: it always finds them gone.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from signal import SIGKILL
from typing import Any, BinaryIO

from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.images import ImageService
from bocker_engine.engine.layers import LayerStore
from bocker_engine.errors import System
from bocker_engine.registry import reference
from bocker_engine.runtime.cgroups import CgroupMount, Cgroups, HostCaps, Resources
from bocker_engine.runtime.client import ExitHandler, LostHandler, StartError, SupervisorClient
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.storage.driver import Driver

PID_BASE = (1 << 22) + 1000


# ---- cgroups ---------------------------------------------------------------------------------


@dataclass
class FakeGroup:
    pids: set[int] = field(default_factory=set)
    frozen: bool = False
    oom: bool = False


class FakeCgroups(Cgroups):
    version = 1

    def __init__(self) -> None:
        super().__init__(root="/nonexistent", parent="bocker")
        self.groups: dict[str, FakeGroup] = {}
        self.created: list[str] = []
        self.fail_create: str = ""  # the next create fails with this message
        # Set by FakeSupervisor: what a signal does to a process of the container.
        self.signal_hook: Any = lambda name, pid, sig: None

    def caps(self) -> HostCaps:
        return HostCaps(ncpu=2, cpus="0-1", mems="0")

    def _dirs(self, name: str) -> list[str]:
        return []

    def _pids_dir(self, name: str) -> str:
        return ""

    def _make_dirs(self, rel: str) -> None:
        pass

    def _apply(self, name: str, res: Resources, *, create: bool) -> None:
        pass

    def _oom_kills(self, name: str) -> int:
        g = self.groups.get(name)
        return 1 if g is not None and g.oom else 0

    def create(self, name: str, res: Resources) -> None:
        if self.fail_create:
            msg, self.fail_create = self.fail_create, ""
            raise System(msg)
        self.groups[name] = FakeGroup()
        self.created.append(name)

    def destroy(self, name: str) -> None:
        if name in self.groups:
            self.kill_all(name, signal.SIGKILL)
            self.groups.pop(name, None)

    def pids(self, name: str) -> list[int]:
        g = self.groups.get(name)
        return sorted(g.pids) if g else []

    def kill_all(self, name: str, sig: int) -> None:
        g = self.groups.get(name)
        if g is None:
            return
        for pid in list(g.pids):
            self.signal_hook(name, pid, sig)
        if sig == signal.SIGKILL:
            g.frozen = False

    def freeze(self, name: str) -> None:
        self.groups[name].frozen = True

    def thaw(self, name: str) -> None:
        if name in self.groups:
            self.groups[name].frozen = False

    def is_frozen(self, name: str) -> bool:
        g = self.groups.get(name)
        return g is not None and g.frozen

    def stats(self, name: str) -> dict[str, Any]:
        return {}

    def container_mounts(self, name: str, cgroupns: bool = True) -> list[CgroupMount]:
        return []


# ---- supervisor ------------------------------------------------------------------------------


@dataclass
class FakeProc:
    id: str
    pid: int
    spec: ProcessSpec
    running: bool = True
    exit_code: int | None = None
    finished_at: int | None = None
    # Signals the process handles and survives (a shell trapping SIGTERM).
    survives: set[int] = field(default_factory=set)


class FakeSupervisor(SupervisorClient):
    def __init__(self, cgroups: FakeCgroups) -> None:
        super().__init__("/nonexistent")
        self.cgroups = cgroups
        cgroups.signal_hook = self._cgroup_signal
        self.procs: dict[str, FakeProc] = {}
        self.next_pid = PID_BASE
        self.connected = False
        self.specs: list[ProcessSpec] = []
        self.signals: list[tuple[str, int]] = []
        self.forgotten: list[str] = []
        # Scenario knobs, each for the next start unless said otherwise.
        self.start_error: tuple[str, str | None] | None = None  # (message, kind)
        self.exit_at_once: int | None = None  # the process exits at once with this code
        self.exit_before_reply = False  # ... and its exit event arrives before the start reply
        self.start_gate: asyncio.Event | None = None  # start waits for it (a slow start)
        self.survives: set[int] = set()
        self.deliver_exits = True  # False: exits are recorded but their events are lost
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # exits whose events are not handled yet
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- the SupervisorClient interface --

    async def connect(self, on_exit: ExitHandler, on_lost: LostHandler | None = None) -> None:
        self._on_exit, self._on_lost = on_exit, on_lost
        self.loop = asyncio.get_running_loop()
        self.connected = True

    async def close(self, shutdown: bool) -> None:
        self.connected = False
        await self.settle()

    def _check(self) -> None:
        if not self.connected:
            raise System("the container supervisor went away")

    async def start(self, spec: ProcessSpec) -> tuple[int, int]:
        self._check()
        self.specs.append(spec)
        if self.start_gate is not None:
            gate, self.start_gate = self.start_gate, None
            await gate.wait()
        if self.start_error is not None:
            (msg, kind), self.start_error = self.start_error, None
            raise StartError(msg, kind)
        old = self.procs.get(spec.id)
        if old is not None and old.running:
            raise StartError(f"process {spec.id} is already running", "")
        pid = self.next_pid
        self.next_pid += 1
        proc = self.procs[spec.id] = FakeProc(spec.id, pid, spec, survives=set(self.survives))
        self.survives = set()
        self.cgroups.groups[spec.id].pids.add(pid)
        started = time.time_ns()
        code, self.exit_at_once = self.exit_at_once, None
        if code is not None:
            if self.exit_before_reply:
                self.exit_before_reply = False
                self._end(proc, code)
                await self._deliver_now(proc)
            else:
                self._exit_soon(proc, code)
        return pid, started

    async def kill(self, id: str, signal: int) -> bool:
        self._check()
        proc = self.procs.get(id)
        if proc is None or not proc.running:
            return False
        self.signals.append((id, signal))
        if signal not in proc.survives or signal == SIGKILL:
            self._exit_soon(proc, 128 + signal)
        return True

    async def resize(self, id: str, h: int, w: int) -> None:
        self._check()

    async def forget(self, id: str) -> None:
        self._check()
        self.forgotten.append(id)
        self.procs.pop(id, None)

    async def list_procs(self) -> list[dict[str, Any]]:
        self._check()
        return [
            {"id": p.id, "pid": p.pid, "running": p.running, "exit_code": p.exit_code, "finished_at": p.finished_at}
            for p in self.procs.values()
        ]

    async def attach(
        self, id: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError("attach is not faked")

    # -- driving the scenarios --

    def exit(self, id: str, code: int) -> None:
        """The container's process exits by itself (its event follows, unless events are lost)."""
        self._exit_soon(self.procs[id], code)

    def disconnect(self) -> None:
        """The daemon is gone (crashed or stopped with live restore): exits are only recorded."""
        self._on_exit = self._on_lost = None

    def vanish(self, id: str) -> None:
        """The process is gone and the supervisor has no record of it (nor of its exit)."""
        proc = self.procs.pop(id)
        self._end(proc, None)

    async def die(self) -> None:
        """The supervisor process dies: the client hears EOF, lets the engine settle, then
        starts a new supervisor, which knows nothing of the old one's processes."""
        self.connected = False
        assert self._on_lost is not None
        await self._on_lost()
        self.procs.clear()
        self.connected = True

    async def settle(self) -> None:
        """Let every exit event in flight be handled."""
        while self.in_flight:
            await asyncio.sleep(0.001)

    # -- internals --

    def _end(self, proc: FakeProc, code: int | None) -> None:
        if not proc.running:
            return
        proc.running = False
        proc.exit_code = code
        proc.finished_at = time.time_ns()
        g = self.cgroups.groups.get(proc.id)
        if g is not None:
            g.pids.discard(proc.pid)

    def _exit_soon(self, proc: FakeProc, code: int) -> None:
        if not proc.running:
            return
        self._end(proc, code)
        # Events travel on their own connection: handled by another task, later. (Cgroups are
        # driven from threads, as the engine runs them with to_thread.)
        self.in_flight += 1
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._spawn_delivery, proc)

    def _spawn_delivery(self, proc: FakeProc) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(proc))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, proc: FakeProc) -> None:
        try:
            await self._deliver_now(proc)
        finally:
            self.in_flight -= 1

    async def _deliver_now(self, proc: FakeProc) -> None:
        if not self.deliver_exits or self._on_exit is None or not self.connected:
            return
        event = {
            "event": "exit",
            "id": proc.id,
            "pid": proc.pid,
            "exit_code": proc.exit_code,
            "finished_at": proc.finished_at,
        }
        # What the real client does with each event line (it goes through JSON).
        await self._on_exit(json.loads(json.dumps(event)))

    def _cgroup_signal(self, name: str, pid: int, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.pid == pid and proc.running and (sig == SIGKILL or sig not in proc.survives):
            self._exit_soon(proc, 128 + sig)
        else:
            # A process the supervisor lost track of: it just dies.
            g = self.cgroups.groups.get(name)
            if g is not None and sig == SIGKILL:
                g.pids.discard(pid)


# ---- storage ---------------------------------------------------------------------------------


class FakeDriver(Driver):
    """Plain directories; `get` counts references so that tests can see every mount given back."""

    name = "fake"

    def __init__(self, home: str) -> None:
        super().__init__(home)
        self.refs: collections.Counter[str] = collections.Counter()
        self.fail_create = ""  # the next create of a container's own layer fails with this message

    def _path(self, id: str) -> str:
        return os.path.join(self.home, id)

    def setup(self) -> None:
        os.makedirs(self.home, exist_ok=True)

    def status(self) -> list[list[str]]:
        return []

    def create(self, id: str, parent: str | None) -> None:
        if self.fail_create and parent and parent.endswith("-init"):
            msg, self.fail_create = self.fail_create, ""
            raise System(msg)
        if parent:
            shutil.copytree(self._path(parent), self._path(id), symlinks=True)
        else:
            os.makedirs(self._path(id))

    def get(self, id: str) -> str:
        if not os.path.isdir(self._path(id)):
            raise System(f"fake driver: no layer {id}")
        self.refs[id] += 1
        return self._path(id)

    def put(self, id: str) -> None:
        self.refs[id] -= 1
        if self.refs[id] <= 0:
            del self.refs[id]

    def remove(self, id: str) -> None:
        shutil.rmtree(self._path(id), ignore_errors=True)
        self.refs.pop(id, None)

    def exists(self, id: str) -> bool:
        return os.path.isdir(self._path(id))

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO, tar_split: BinaryIO | None) -> tuple[str, int]:
        raise NotImplementedError("the fake driver has no image layers")

    def diff(self, id: str, parent: str | None, out: BinaryIO, mtime_clamp: int | None = None) -> None:
        raise NotImplementedError("the fake driver has no image layers")

    def changes(self, id: str, parent: str | None) -> list[tuple[str, int]]:
        return []

    def layer_dir(self, id: str) -> str:
        return self._path(id)

    def mounted(self) -> list[str]:
        """Layers `get` handed out and `put` did not give back."""
        return sorted(self.refs)


# ---- a daemon's wiring over the fakes --------------------------------------------------------

IMAGE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": []},
}


class Host:
    """What outlives a daemon: the data root, the cgroups and the supervisor. `daemon()` wires
    a ContainerService over them as daemon.py does (again after a restart)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.driver = FakeDriver(os.path.join(root, "fake"))
        self.driver.setup()
        self.cgroups = FakeCgroups()
        self.supervisor = FakeSupervisor(self.cgroups)
        self.events: list[tuple[str, str, dict[str, str]]] = []

    async def daemon(self, live_restore: bool = False) -> ContainerService:
        # A new daemon process: its driver's mount counts start from zero.
        self.driver = FakeDriver(self.driver.home)
        image_root = os.path.join(self.root, "image", self.driver.name)
        os.makedirs(image_root, exist_ok=True)
        layers = LayerStore(image_root, self.driver)
        layers.load()
        images = ImageService(image_root, layers)
        images.load()
        if not images.images:
            img = images.store(json.dumps(IMAGE_CONFIG).encode())
            images.tag(img, reference.parse("busybox:latest"))
        svc = ContainerService(
            os.path.join(self.root, "containers"), images, layers, self.driver, self.cgroups, self.supervisor
        )
        # Lost exits are looked for, and settled, at once.
        svc.lost_exit_poll = 0.02
        svc.lost_exit_grace = 0.05
        svc.load()
        svc.on_event = lambda action, c, attrs: self.events.append((action, c.id, attrs))
        await self.supervisor.connect(svc.on_exit, svc.on_supervisor_lost)
        await svc.restore(live_restore)
        return svc

    def actions(self, cid: str) -> list[str]:
        return [a for a, i, _ in self.events if i == cid]
