"""Exec instances: `docker exec`, as dockerd keeps them (daemon/exec.go).

An exec is created against a running container, started once, and inspected until its
container is removed. Its process belongs to the supervisor like the container's own: it joins
the container's namespaces and cgroup and gets the container's confinement (capabilities,
seccomp, no_new_privs), with the exec's own user, environment, working directory and, with
`--privileged`, every capability.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bocker_engine import linux
from bocker_engine.engine import detach_keys, security_opts, start_errors
from bocker_engine.engine.container_spec import process_spec
from bocker_engine.engine.ids import new_id
from bocker_engine.errors import Conflict, InvalidParameter, NotFound, System
from bocker_engine.runtime.client import StartError
from bocker_engine.runtime.spec import DEFAULT_PATH, ProcessSpec

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.containers import ContainerService

log = logging.getLogger(__name__)

# Finished execs kept per container for inspect; older ones are dropped (a long-running
# container exec'd into all day must not grow the daemon).
KEEP_FINISHED = 64
# dockerd waits this long for an exec to start before refusing a resize.
RESIZE_START_WAIT = 10.0


@dataclass
class Exec:
    id: str
    container_id: str
    cmd: list[str]
    user: str
    privileged: bool
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    detach_keys: str
    env: list[str]
    workdir: str
    console_size: tuple[int, int]
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    started_evt: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def inspect(self, container_user: str) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": self.cmd[0] if self.cmd else "",
                "arguments": self.cmd[1:],
                "privileged": self.privileged,
                "user": self.user or container_user,
            },
            "OpenStdin": self.attach_stdin,
            "OpenStderr": self.attach_stderr,
            "OpenStdout": self.attach_stdout,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": self.detach_keys,
            "Pid": self.pid,
        }


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid {what}: must be a list of strings")
    return list(value)


def console_size_of(value: Any) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536 for v in value)
    ):
        raise InvalidParameter("invalid ConsoleSize: must be [height, width]")
    return (value[0], value[1])


def _merge_env(env: list[str], more: list[str]) -> list[str]:
    """dockerd's ReplaceOrAppendEnvValues: a later KEY=... replaces an earlier one in place."""
    out = list(env)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    for e in more:
        key = e.split("=", 1)[0]
        if key in index:
            out[index[key]] = e
        else:
            index[key] = len(out)
            out.append(e)
    return out


_FIELDS = (
    "User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStdout", "AttachStderr",
    "Detach", "DetachKeys", "Env", "WorkingDir", "Cmd",
)


class ExecService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.execs: dict[str, Exec] = {}
        # Healthcheck probes (engine/health.py): execs like the others, but never listed or
        # looked up by id (dockerd keeps them out of ExecIDs); dropped when they exit.
        self.probes: dict[str, Exec] = {}
        # The container's spec, the expensive part of an exec's (seccomp resolved for its
        # capabilities), per (container, pid, all caps): built once per run of the container.
        self._base: dict[tuple[str, int, bool], ProcessSpec] = {}

    # ---- lookup ---------------------------------------------------------------------------

    def get(self, exec_id: str) -> Exec:
        ex = self.execs.get(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def running_ids(self, container_id: str) -> list[str]:
        return [e.id for e in self.execs.values() if e.container_id == container_id and e.running]

    def _running_container(self, ref: str) -> Container:
        c = self.containers.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        if c.state.Paused:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.state.Restarting:
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        return c

    # ---- create ---------------------------------------------------------------------------

    def create(self, ref: str, body: dict[str, Any]) -> Exec:
        c = self._running_container(ref)
        # Go's JSON decoding matches field names case-insensitively, and docker-py sends
        # "detachKeys": fold the keys as dockerd would see them.
        folded = {k.lower(): v for k, v in body.items()}
        body = {name: folded.get(name.lower()) for name in _FIELDS}
        cmd = _str_list(body.get("Cmd"), "Cmd")
        if not cmd:
            raise InvalidParameter("No exec command specified")
        keys = body.get("DetachKeys") or ""
        if not isinstance(keys, str):
            raise InvalidParameter("invalid DetachKeys: must be a string")
        detach_keys.parse(keys, "escape")
        for name in ("User", "WorkingDir"):
            if not isinstance(body.get(name) or "", str):
                raise InvalidParameter(f"invalid {name}: must be a string")
        env = _str_list(body.get("Env"), "Env")
        workdir = body.get("WorkingDir") or ""
        if workdir and not workdir.startswith("/"):
            # dockerd 23+: a relative working directory is refused for exec.
            raise InvalidParameter(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
        ex = Exec(
            id=new_id(),
            container_id=c.id,
            cmd=cmd,
            user=body.get("User") or "",
            privileged=bool(body.get("Privileged")),
            tty=bool(body.get("Tty")),
            attach_stdin=bool(body.get("AttachStdin")),
            attach_stdout=bool(body.get("AttachStdout")),
            attach_stderr=bool(body.get("AttachStderr")),
            detach_keys=keys,
            env=env,
            workdir=workdir,
            console_size=console_size_of(body.get("ConsoleSize")),
        )
        self._trim(c.id)
        self.execs[ex.id] = ex
        self.containers.on_event("exec_create: " + " ".join(cmd), c, {"execID": ex.id})
        return ex

    def create_probe(self, c: Container, cmd: list[str]) -> Exec:
        """A healthcheck probe: output (stdout and stderr) captured, no stdin, no TTY, the
        container's user and working directory."""
        ex = Exec(
            id=new_id(), container_id=c.id, cmd=list(cmd), user="", privileged=False, tty=False,
            attach_stdin=False, attach_stdout=True, attach_stderr=True, detach_keys="", env=[],
            workdir="", console_size=(0, 0),
        )
        self.probes[ex.id] = ex
        self.containers.on_event("exec_create: " + " ".join(cmd), c, {"execID": ex.id})
        return ex

    def _trim(self, container_id: str) -> None:
        done = [e for e in self.execs.values() if e.container_id == container_id and e.exit_code is not None]
        for e in done[: max(0, len(done) - KEEP_FINISHED + 1)]:
            self.execs.pop(e.id, None)

    # ---- start ----------------------------------------------------------------------------

    def check_start(self, exec_id: str) -> tuple[Exec, Container]:
        """What start refuses before anything is hijacked (answered as an HTTP error)."""
        ex = self.get(exec_id)
        if ex.running:
            raise Conflict(f"Error: Exec command {ex.id} is already running")
        if ex.started:
            raise Conflict(f"Error: Exec command {ex.id} has already run")
        return ex, self._running_container(ex.container_id)

    def spec(self, ex: Exec, c: Container) -> ProcessSpec:
        svc = self.containers
        privileged = ex.privileged or bool(c.host_config.get("Privileged"))
        key = (c.id, c.state.Pid, privileged)
        base = self._base.get(key)
        if base is None:
            for k in [k for k in self._base if k[0] == c.id and k[1] != c.state.Pid]:
                del self._base[k]
            base = process_spec(c, "", svc.cgroups, "", no_new_privileges=svc.no_new_privileges)
            if privileged and not c.host_config.get("Privileged"):
                # The container's profile, resolved for every capability (runc gives an exec
                # the container's filter; Docker's profile opens syscalls by capability).
                base.seccomp = security_opts.seccomp_filter(c.host_config, list(linux.CAP_NUMBERS))
            if svc.networks is not None:
                own = {e.split("=", 1)[0] for e in base.env}
                base.env += [e for e in svc.networks.link_env(c) if e.split("=", 1)[0] not in own]
            self._base[key] = base
        env = [e for e in base.env if not e.startswith("TERM=")] if not c.config.get("Tty") else list(base.env)
        if ex.tty and not c.config.get("Tty"):
            env = _merge_env(env, ["TERM=xterm"])
        env = _merge_env(env, ex.env)
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, "PATH=" + DEFAULT_PATH)
        return dataclasses.replace(
            base,
            id=ex.id,
            args=list(ex.cmd),
            env=env,
            cwd=ex.workdir or c.config.get("WorkingDir") or "/",
            user=ex.user or c.config.get("User") or "",
            tty=ex.tty,
            open_stdin=ex.attach_stdin,
            stdin_once=True,
            console_size=ex.console_size,
            log_path="",
            rootfs="",
            mounts=[],
            cgroup_mounts=[],
            devices=[],
            init_path="",
            privileged=privileged,
            container_pid=c.state.Pid,
        )

    async def start(self, ex: Exec, c: Container, console_size: tuple[int, int] | None = None) -> None:
        """Start the process (attach to it first for its output). A failed start raises the
        EngineError dockerd answers (its "OCI runtime exec failed" text), after recording the
        exit code it implies."""
        if ex.started:
            raise Conflict(f"Error: Exec command {ex.id} has already run")
        ex.started = True
        if console_size and console_size[0] and console_size[1]:
            ex.console_size = console_size
        try:
            spec = self.spec(ex, c)
            ex.running = True
            pid, _ = await self.containers.supervisor.start(spec)
        except StartError as e:
            ex.running = False
            failure = start_errors.classify_exec(str(e), e.kind)
            ex.exit_code = failure.exit_code
            ex.done.set()
            ex.started_evt.set()
            with contextlib.suppress(Exception):
                await self.containers.supervisor.forget(ex.id)
            raise failure.error from None
        except BaseException:
            ex.running = False
            ex.exit_code = 126
            ex.done.set()
            ex.started_evt.set()
            raise
        ex.pid = pid
        ex.started_evt.set()
        self.containers.on_event("exec_start: " + " ".join(ex.cmd), c, {"execID": ex.id})

    async def attach(self, ex: Exec) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The exec's stdio at the supervisor, attached before the start so no output is lost."""
        return await self.containers.supervisor.attach(ex.id, ex.attach_stdin, ex.attach_stdout, ex.attach_stderr)

    async def wait_done(self, ex: Exec, timeout: float) -> None:
        """Until the exit is recorded (the stream must not close before ExitCode is final)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.done.wait(), timeout)

    # ---- exit -----------------------------------------------------------------------------

    def owns(self, proc_id: str) -> bool:
        return proc_id in self.execs or proc_id in self.probes

    async def on_exit(self, event: dict[str, Any]) -> None:
        ex = self.execs.get(event["id"]) or self.probes.pop(event["id"], None)
        if ex is None:
            return
        # The exit may overtake the start reply (a fast `true`; they travel on different
        # connections): start only sets pid and started_evt after this, never running.
        ex.running = False
        ex.exit_code = int(event.get("exit_code") or 0)
        ex.done.set()
        c = self.containers.containers.get(ex.container_id)
        if c is not None:
            self.containers.on_event("exec_die", c, {"execID": ex.id, "exitCode": str(ex.exit_code)})
        with contextlib.suppress(Exception):
            await self.containers.supervisor.forget(ex.id)

    def forget_container(self, container_id: str) -> None:
        for e in [e for e in self.execs.values() if e.container_id == container_id]:
            self.execs.pop(e.id, None)
        for e in [e for e in self.probes.values() if e.container_id == container_id]:
            self.probes.pop(e.id, None)
        for k in [k for k in self._base if k[0] == container_id]:
            del self._base[k]

    # ---- resize ---------------------------------------------------------------------------

    async def resize(self, exec_id: str, h: int, w: int) -> None:
        ex = self.get(exec_id)
        try:
            await asyncio.wait_for(ex.started_evt.wait(), RESIZE_START_WAIT)
        except TimeoutError:
            raise System("timeout waiting for exec session ready") from None
        if not ex.running:
            raise Conflict(f"Exec {ex.id} is not running")
        await self.containers.supervisor.resize(ex.id, h, w)
