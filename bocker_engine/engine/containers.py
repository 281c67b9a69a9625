"""Containers: the operations of the state machine (create, start, stop, kill, wait, pause,
remove, restore) and the store of records (engine/container.py).

The process itself belongs to the supervisor; this module asks it to start and signal processes
and hears from it when they exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal as sig
from collections.abc import AsyncIterator, Callable
from typing import Any

from bocker_engine import logconfig
from bocker_engine import logs as logreader
from bocker_engine.engine import container_config as cc
from bocker_engine.engine import filters as flt
from bocker_engine.engine import mounts as mnt
from bocker_engine.engine import signals, start_errors
from bocker_engine.engine.container import Container
from bocker_engine.engine.container_exits import ContainerExits
from bocker_engine.engine.container_spec import process_spec, write_etc_files
from bocker_engine.engine.container_views import ContainerViews, created_unix
from bocker_engine.engine.execs import ExecService
from bocker_engine.engine.ids import NAME_RE, lookup, new_id, random_name
from bocker_engine.engine.images import ImageService
from bocker_engine.engine.layers import LayerStore
from bocker_engine.engine.networks import NetworkService
from bocker_engine.engine.restart import Restarts, kill_cancels
from bocker_engine.engine.state import State
from bocker_engine.engine.store import read_json, write_json
from bocker_engine.engine.volumes import VolumeService
from bocker_engine.errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotImplementedYet,
    NotModified,
    System,
)
from bocker_engine.runtime.cgroups import Cgroups, Resources
from bocker_engine.runtime.client import StartError, SupervisorClient
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.storage.driver import Driver
from bocker_engine.timefmt import rfc3339nano

log = logging.getLogger(__name__)

# Mount targets that live in the init layer, below the container's own layer, so that they
# never show up in `docker diff` or in a commit.
INIT_PATHS: dict[str, bytes | None] = {
    "/dev": None,
    "/dev/pts": None,
    "/dev/shm": None,
    "/proc": None,
    "/sys": None,
    "/etc/hosts": b"",
    "/etc/hostname": b"",
    "/etc/resolv.conf": b"",
    "/.dockerenv": b"",
}
DEFAULT_STOP_TIMEOUT = 10
# How often stop, kill, rm -f and wait look for a process that is gone without a reported exit.
LOST_EXIT_POLL = 0.5
# How long a process found gone without an exit is given for its real exit to arrive (the
# supervisor may still be reading its last output, up to 2 s) before it is settled blind.
LOST_EXIT_GRACE = 3.0
# Bound on settling the containers a previous daemon left behind (restore).
RESTORE_SETTLE_TIMEOUT = 15.0


class ContainerService(ContainerExits, ContainerViews):
    # The daemon's log-driver and log-opts, for containers that do not choose their own.
    log_defaults: tuple[str, dict[str, str]] = (logconfig.DEFAULT_DRIVER, {})

    def __init__(
        self,
        root: str,
        images: ImageService,
        layers: LayerStore,
        driver: Driver,
        cgroups: Cgroups,
        supervisor: SupervisorClient,
        init_path: str = "",
        networks: NetworkService | None = None,
        volumes: VolumeService | None = None,
        no_new_privileges: bool = False,
    ) -> None:
        self.root = root
        self.images = images
        self.layers = layers
        self.driver = driver
        self.cgroups = cgroups
        self.supervisor = supervisor
        self.init_path = init_path
        self.networks = networks
        self.no_new_privileges = no_new_privileges
        self.volumes = volumes or VolumeService(os.path.join(os.path.dirname(root), "volumes"))
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}
        # Containers being created: their name is reserved, but nothing else (list, lookup,
        # prune) sees them before they exist whole (dockerd registers a container last too).
        self.creating: dict[str, Container] = {}
        self.on_event: Callable[[str, Container, dict[str, str]], None] = lambda *_: None
        self._name_lock = asyncio.Lock()
        self._restore_task: asyncio.Task[None] | None = None
        self.execs = ExecService(self)
        self.restarts = Restarts()  # restart policies (engine/restart.py)
        # Seams for the state-machine tests (tests/unit), which shorten them.
        self.lost_exit_poll = LOST_EXIT_POLL
        self.lost_exit_grace = LOST_EXIT_GRACE

    # ---- store ----------------------------------------------------------------------------

    def load(self) -> None:
        os.makedirs(self.root, mode=0o710, exist_ok=True)
        for cid in os.listdir(self.root):
            d = os.path.join(self.root, cid)
            try:
                data = read_json(os.path.join(d, "config.v2.json"))
                hc = read_json(os.path.join(d, "hostconfig.json"))
            except (OSError, ValueError):
                log.warning("skipping unreadable container %s", cid)
                continue
            c = Container(
                id=data["ID"],
                name=data["Name"],
                created=data["Created"],
                config=data["Config"],
                host_config=hc,
                image_id=data["Image"],
                root=d,
                state=State.from_json(data["State"]),
                path=data.get("Path", ""),
                args=data.get("Args") or [],
                restart_count=data.get("RestartCount", 0),
                has_been_started=data.get("HasBeenStartedBefore", False),
                manually_stopped=data.get("HasBeenManuallyStopped", False),
                driver=data.get("Driver", ""),
            )
            # ---- volumes: references survive restarts (containers made before volumes had
            # only host binds, which parse again from Binds).
            if "MountPoints" in data:
                c.mount_points = mnt.load(data["MountPoints"])
            else:
                with contextlib.suppress(EngineError):
                    c.mount_points = {m.destination: m for m in map(mnt.parse_raw, hc.get("Binds") or [])}
            for name in mnt.volume_names(c.mount_points):
                self.volumes.refs.setdefault(name, set()).add(c.id)
            # ----
            self.containers[c.id] = c
            self.names[c.name.lstrip("/")] = c.id

    def save(self, c: Container, sync: bool = True, durable: bool = True) -> None:
        write_json(os.path.join(c.root, "config.v2.json"), c.to_disk(), sync=sync, durable=durable)

    def save_host_config(self, c: Container, durable: bool = True) -> None:
        write_json(os.path.join(c.root, "hostconfig.json"), c.host_config, durable=durable)

    def _save_created(self, c: Container) -> None:
        """A new container's two records (off the event loop: fsyncs wait on the journal). One
        directory fsync, the second's, makes both renames durable."""
        self.save_host_config(c, durable=False)
        self.save(c)

    async def restore(self, live_restore: bool) -> None:
        """After a daemon (re)start: match recorded states with what the supervisor runs.

        Without live restore, containers found running (the daemon died without stopping
        them) are killed, as dockerd does; with it, they are adopted. Only the matching is
        done here; settling (kill, wait, release, auto-remove) runs in the background,
        concurrently and bounded in time, so that the API is never kept waiting on it."""
        procs = {p["id"]: p for p in await self.supervisor.list_procs()}
        jobs = []
        for c in list(self.containers.values()):
            p = procs.get(c.id)
            if c.state.Restarting:  # the daemon died while it waited to restart it
                c.state.set_stopped(c.state.ExitCode)
            if c.state.Running:
                if p is not None and p["running"]:
                    c.state.Pid = p["pid"]
                    c.mounted = True  # mounted again in the background (driver.get counts)
                    jobs.append(self._restore_running(c, live_restore))
                    continue
                code = p["exit_code"] if p and p.get("exit_code") is not None else 255
                jobs.append(self._stopped(c, code, p.get("finished_at") if p else None))
            elif c.host_config.get("AutoRemove") and c.has_been_started:
                jobs.append(self.remove(c.id, force=True))
            elif c.has_been_started and self._restart_at_boot(c):
                jobs.append(self._start_at_boot(c))
        self._restore_task = asyncio.get_running_loop().create_task(self._settle_restored(jobs))

    async def _restore_running(self, c: Container, live_restore: bool) -> None:
        rw = self.layers.mounts.get(c.id)
        if rw is not None:
            await asyncio.to_thread(self.driver.get, rw.mount_id)
        with contextlib.suppress(EngineError):
            await asyncio.to_thread(mnt.mount_volumes, c.mount_points, self.volumes, c.id)
        if live_restore:
            # The freezer is the truth: a daemon that died during a commit left its container
            # frozen but recorded as running (a commit's pause is not written down); shown as
            # paused, it can be unpaused, as after a crash of dockerd in the same place.
            frozen = await asyncio.to_thread(self.cgroups.is_frozen, c.id)
            if frozen != c.state.Paused:
                c.state.Paused = frozen
                c.state.Status = "paused" if frozen else "running"
                self.save(c)
            return
        await self._signal(c, sig.SIGKILL)
        if not await self._wait_exit(c, 10, killed=True):
            log.warning("container %s did not exit after SIGKILL", c.id)

    async def _settle_restored(self, jobs: list[Any]) -> None:
        async def bounded(job: Any) -> None:
            try:
                await asyncio.wait_for(job, RESTORE_SETTLE_TIMEOUT)
            except Exception:
                log.exception("settling a container after restart")

        await asyncio.gather(*(bounded(j) for j in jobs))
        # Volumes an earlier daemon mounted that no running container uses any more.
        self.volumes.sweep_mounts()

    # ---- lookup ---------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        return lookup(ref, self.containers, self.names, f"No such container: {ref}")

    def using_image(self, image_id: str) -> list[tuple[str, bool]]:
        cs = [*self.containers.values(), *self.creating.values()]
        return [(c.id, c.state.Running) for c in cs if c.image_id == image_id]

    # ---- create ---------------------------------------------------------------------------

    async def create(self, name: str | None, body: dict[str, Any]) -> tuple[Container, list[str]]:
        image_name = body.get("Image") or ""
        if not image_name:
            raise InvalidParameter("config cannot be empty in order to create a container")
        img = self.images.resolve(image_name)
        cid = new_id()
        config = cc.normalize_config(body, img.container_config, image_name, cid)
        hc = cc.normalize_host_config(logconfig.with_defaults(body.get("HostConfig"), *self.log_defaults),
                                      self.cgroups.version)
        res = Resources.from_host_config(hc)
        warnings = self.cgroups.validate(res)
        cc.capabilities(hc)
        mnt.validate_host_config(hc)
        entry = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
        async with self._name_lock:
            if name:
                if not NAME_RE.match(name):
                    raise InvalidParameter(
                        f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )
                name = name.lstrip("/")
                if name in self.names:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{self.names[name]}". You have to remove (or rename) that container to be able to '
                        "reuse that name."
                    )
            else:
                name = random_name(lambda n: n in self.names)
            root = os.path.join(self.root, cid)
            acquired: list[str] = []
            c = Container(
                id=cid,
                name="/" + name,
                created=rfc3339nano(),
                config=config,
                host_config=hc,
                image_id=img.id,
                root=root,
                path=entry[0],
                args=entry[1:],
                driver=self.driver.name,
            )
            self.names[name] = cid
            self.creating[cid] = c
        try:
            os.makedirs(root, mode=0o700)
            if self.networks is not None:  # network hook: validate and record the endpoints
                self.networks.on_create(c, body.get("NetworkingConfig"))
            await asyncio.to_thread(self.layers.create_rw, cid, img.top_layer, INIT_PATHS)
            await self._register_mounts(c, acquired)
            await asyncio.to_thread(self._save_created, c)
        except BaseException:
            # A failed create leaves nothing behind.
            for vname in set(acquired):
                self.volumes.release(vname, cid)
            for gone in mnt.release(c.mount_points, self.volumes, cid, remove_anonymous=True):
                self.volumes.purge(gone)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.layers.remove_rw, cid)
            shutil.rmtree(root, ignore_errors=True)
            if self.names.get(name) == cid:
                del self.names[name]
            raise
        finally:
            self.creating.pop(cid, None)
        self.containers[cid] = c
        self.on_event("create", c, {})
        return c, warnings

    async def _register_mounts(self, c: Container, acquired: list[str]) -> None:
        """Volumes, binds and tmpfs mounts of a new container; empty volumes get the image's
        content at their destination (dockerd's copy-up, done at create like dockerd)."""

        def mounts_of(ref: str) -> dict[str, mnt.MountPoint]:
            # dockerd answers 400, not 404: a 404 would make the CLI try to pull the image.
            try:
                return self.get(ref).mount_points
            except NotFound as e:
                raise InvalidParameter(e.message) from None

        c.mount_points = mnt.register(c.id, c.host_config, c.config, self.volumes, mounts_of, acquired)
        copies = [mp for mp in c.mount_points.values() if mp.copy_data and mp.type == "volume"]
        if not copies:
            return
        rw = self.layers.mounts[c.id]
        rootfs = await asyncio.to_thread(self.driver.get, rw.mount_id)
        try:
            for mp in copies:
                path = await asyncio.to_thread(self.volumes.mount, mp.name, c.id)
                try:
                    await asyncio.to_thread(mnt.copy_up, rootfs, mp.destination, path)
                finally:
                    self.volumes.unmount(mp.name, c.id)
        finally:
            await asyncio.to_thread(self.driver.put, rw.mount_id)

    # ---- start ----------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        c = self.get(ref)
        async with c.lock:
            if c.state.Paused:
                raise Conflict("cannot start a paused container, try unpause instead")
            if c.state.Running:
                raise NotModified("container already started")
            if c.state.removing or c.state.Dead:
                raise Conflict("container is marked for removal and cannot be started")
            self._reset_restarts(c)
            await self._start_locked(c)

    async def _start_locked(self, c: Container) -> None:
        c.starting = True
        c.early_exit = None
        try:
            await self._start_process(c)
        finally:
            c.starting = False
            c.notify()  # a removal may be waiting for the start to end

    async def _start_process(self, c: Container) -> None:
        rw = self.layers.mounts.get(c.id)
        if rw is None:
            raise System(f"container {c.id} has no filesystem")
        rootfs = await asyncio.to_thread(self.driver.get, rw.mount_id)
        c.mounted = True
        res = Resources.from_host_config(c.host_config)
        try:
            sources, netns = await self._prepare(c, res)
            spec = process_spec(
                c, rootfs, self.cgroups, self.init_path, sources, no_new_privileges=self.no_new_privileges
            )
            if self.networks is not None:  # network hook: the namespace to join
                spec.netns = netns
                own = {e.split("=", 1)[0] for e in spec.env}
                spec.env += [e for e in self.networks.link_env(c) if e.split("=", 1)[0] not in own]
            pid, started_ns = await self._run_process(c, spec)
        except StartError as e:
            failure = start_errors.classify(str(e), e.kind)
            await self._start_failed(c, str(e), failure.exit_code)
            raise failure.error from None
        except BaseException as e:
            msg = str(e) if isinstance(e, Exception) else "start cancelled"
            await self._start_failed(c, msg, start_errors.EXIT_UNKNOWN)
            raise
        c.state.set_running(pid, started_ns)
        c.has_been_started = True
        # The exit rewrites this state; after a machine crash (nothing runs any more) the state
        # before this start is as true as this one, so only a torn file must be ruled out.
        self.save(c, durable=False)
        self.on_event("start", c, {})
        c.notify()
        early, c.early_exit = c.early_exit, None
        if early is not None and early.get("pid") == pid:
            asyncio.get_running_loop().create_task(
                self._stopped(c, int(early.get("exit_code") or 0), early.get("finished_at"))
            )

    async def _run_process(self, c: Container, spec: ProcessSpec) -> tuple[int, int]:
        """The supervisor's start. With veth pairs still to make, the process is started gated:
        it is set up (mounts, pivot, user...) while they are made, and execs only once they
        are (dockerd's prestart hook has the same place); a failure abandons the start."""
        if self.networks is None or not self.networks.attach_pending(c):
            return await self.supervisor.start(spec)
        if not self.supervisor.gates:  # an older supervisor: first the network, then the start
            await self.networks.finish_attach(c)
            return await self.supervisor.start(spec)
        spec.gate = secrets.token_hex(8)
        starting = asyncio.ensure_future(self.supervisor.start(spec))
        try:
            await self.networks.finish_attach(c)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.supervisor.open_gate(spec.gate, False)
            with contextlib.suppress(Exception):
                await starting  # ends with the abandoned start's error; ours is the one to raise
            raise
        try:
            await self.supervisor.open_gate(spec.gate, True)
        except BaseException:
            starting.cancel()
            raise
        return await starting

    async def _prepare(self, c: Container, res: Resources) -> tuple[dict[str, str], str]:
        """The cgroup and volumes, and meanwhile the network sandbox (which waits mostly on the
        kernel): the volumes' sources and the netns to join. Both run to their end, so that
        whatever failed, the caller's release finds everything that was made."""

        async def cgroup_and_volumes() -> dict[str, str]:
            await asyncio.to_thread(self.cgroups.create, c.id, res)
            return await asyncio.to_thread(mnt.mount_volumes, c.mount_points, self.volumes, c.id)

        async def network() -> str:
            # /etc/hostname, hosts and resolv.conf at the first start, as dockerd writes them;
            # before the network's attach, which rewrites the last two for its addresses.
            if not os.path.exists(c.file("hostname")):
                await asyncio.to_thread(write_etc_files, c)
            if self.networks is None:
                return ""
            return await self.networks.attach(c, defer=self.supervisor.gates)

        sources, netns = await asyncio.gather(cgroup_and_volumes(), network(), return_exceptions=True)
        for result in (sources, netns):
            if isinstance(result, BaseException):
                raise result
        assert not isinstance(sources, BaseException) and not isinstance(netns, BaseException)
        return sources, netns

    async def _start_failed(self, c: Container, msg: str, code: int) -> None:
        await self._release(c)
        c.state.set_stopped(code, error=msg)
        c.starting = False  # over: AutoRemove below must not wait for it
        self.save(c)
        # dockerd leaves next-exit waiters pending after a failed start (the CLI reports the
        # start error itself); only `removed` waiters hear of it, through AutoRemove.
        c.notify()
        if c.host_config.get("AutoRemove"):
            with contextlib.suppress(EngineError):
                await self.remove(c.id, force=True)

    async def _release(self, c: Container, drop_rootfs: bool = False) -> None:
        """Give back what a run holds: network sandbox, cgroup and rootfs mount; `drop_rootfs`
        (an auto-removed container's exit) deletes the writable layer too, while the network
        teardown still waits on the kernel."""
        # The network's teardown waits mostly on the kernel (deleting a veth takes RCU grace
        # periods, 10-20 ms): the cgroup and the mounts are given back meanwhile.
        async def network() -> None:
            if self.networks is not None:  # network hook
                with contextlib.suppress(Exception):
                    await self.networks.detach(c)

        async def filesystems() -> None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.cgroups.destroy, c.id)
            await asyncio.to_thread(mnt.unmount_volumes, c.mount_points, self.volumes, c.id)
            if c.mounted:
                rw = self.layers.mounts.get(c.id)
                if rw is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.driver.put, rw.mount_id)
                c.mounted = False
            if drop_rootfs:  # remove() does it otherwise, and finds it done
                await asyncio.to_thread(self.layers.remove_rw, c.id)

        # Both run to their end whatever the other does; then the first error is raised.
        for result in await asyncio.gather(network(), filesystems(), return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    # ---- stop, kill, restart, pause -------------------------------------------------------

    async def kill(self, ref: str, signal: str | int | None) -> None:
        c = self.get(ref)
        signum = signals.parse(signal)
        if not c.state.Running:
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        cancels = kill_cancels(signum, c.config.get("StopSignal"))
        if await self._halt_restart(c, cancels) or c.state.Restarting or not c.state.Running:
            return  # dockerd: a restarting container is not signalled, a cancelled one stays stopped
        await self._signal(c, signum)
        if signum == sig.SIGKILL and not await self._wait_exit(c, 10, killed=True):
            # dockerd's Kill waits for the exit too, so that an inspect right after sees it.
            raise System("tried to kill container, but did not receive an exit event")

    async def _signal(self, c: Container, signum: int) -> None:
        if c.state.Paused and signum == sig.SIGKILL:
            await asyncio.to_thread(self.cgroups.thaw, c.id)
        delivered = False
        with contextlib.suppress(EngineError):
            delivered = await self.supervisor.kill(c.id, signum)
        if not delivered and signum == sig.SIGKILL:
            # The supervisor no longer knows a process (a lost exit): kill what the cgroup holds.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.cgroups.kill_all, c.id, signum)
        if c.state.Paused and signum == sig.SIGKILL:
            c.state.Paused = False
        # Every signal the engine sends, stop's and restart's included, as dockerd reports them.
        self.on_event("kill", c, {"signal": str(signum)})

    async def _wait_exit(self, c: Container, timeout: float | None, killed: bool = False) -> bool:
        """Wait for the exit, settling it at once if the process is gone without one."""
        if not c.state.Running:
            return True
        fut = self.wait_future(c.id, "not-running")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step = self.lost_exit_poll if deadline is None else min(self.lost_exit_poll, deadline - loop.time())
            if step > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(fut), step)
                    return True
                except TimeoutError:
                    pass
            if await self.settle_lost(c, killed):
                return True
            if deadline is not None and loop.time() >= deadline:
                return False

    async def stop(self, ref: str, timeout: int | None, signal: str | None) -> None:
        c = self.get(ref)
        if not c.state.Running:
            raise NotModified("container already stopped")
        await self._stop(c, timeout, signal)

    async def _stop(self, c: Container, timeout: int | None, signal: str | None) -> None:
        if await self._halt_restart(c, True) or not c.state.Running:
            self.on_event("stop", c, {})
            return
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            if timeout is None:
                timeout = DEFAULT_STOP_TIMEOUT
        signum = signals.parse(signal or c.config.get("StopSignal") or "SIGTERM", sig.SIGTERM)
        if timeout != 0:
            await self._signal(c, signum)
            if c.state.Paused:
                await asyncio.to_thread(self.cgroups.thaw, c.id)
                c.state.Paused = False
            if await self._wait_exit(c, None if timeout < 0 else float(timeout)):
                self.on_event("stop", c, {})
                return
        await self._signal(c, sig.SIGKILL)
        if not await self._wait_exit(c, 30, killed=True):
            raise System(f"container {c.id} did not exit after SIGKILL")
        self.on_event("stop", c, {})

    async def restart(self, ref: str, timeout: int | None, signal: str | None) -> None:
        c = self.get(ref)
        if signal:
            signals.parse(signal, sig.SIGTERM)  # a bad signal is the router's 400, not wrapped
        try:
            async with c.lock:
                if c.state.Running:
                    await self._stop(c, timeout, signal)
                self._reset_restarts(c)
                await self._start_locked(c)
        except EngineError as e:
            # dockerd (daemon/restart.go) wraps with %v, naming the container as it was asked
            # for: the cause's type is lost, so it is a 500 whatever the stop or start said.
            raise System(f"Cannot restart container {ref}: {e.message}") from e
        self.on_event("restart", c, {})

    async def pause(self, ref: str, *, persist: bool = True) -> None:
        """Freeze the container. `persist=False` (a commit's pause, undone within the request)
        leaves config.v2.json as it is: after a crash meanwhile, restore takes the freezer's
        word for it (_restore_running)."""
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        if c.state.Restarting:
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if c.state.Paused:
            raise Conflict(f"Container {c.id} is already paused")
        await asyncio.to_thread(self.cgroups.freeze, c.id)
        c.state.Paused = True
        c.state.Status = "paused"
        if persist:
            self.save(c)
        self.on_event("pause", c, {})

    async def unpause(self, ref: str, *, persist: bool = True) -> None:
        c = self.get(ref)
        if not c.state.Paused:
            raise Conflict(f"Container {c.id} is not paused")
        await asyncio.to_thread(self.cgroups.thaw, c.id)
        c.state.Paused = False
        c.state.Status = "running"
        if persist:
            self.save(c)
        self.on_event("unpause", c, {})

    # ---- remove, rename -------------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.get(ref)
        while c.starting:
            # A start is with the runtime (dockerd holds the container's lock through it): let it
            # end first, so that what it starts is killed below instead of left running.
            await c.changed.wait()
        if c.id not in self.containers:
            return  # removed meanwhile (AutoRemove after a failed start)
        if c.state.removing:
            # Already on its way out (AutoRemove racing `docker rm -f`): wait for it.
            fut = self.wait_future(c.id, "removed")
            await fut
            return
        if c.state.Running and not force:
            if c.state.Restarting:
                raise Conflict(
                    f'cannot remove container "{c.name}": container is restarting: stop the container before '
                    "removing or force remove"
                )
            if c.state.Paused:
                raise Conflict(f'cannot remove container "{c.name}": container is paused and must be unpaused first')
            raise Conflict(
                f'cannot remove container "{c.name}": container is running: stop the container before removing '
                "or force remove"
            )
        c.state.removing = True
        try:
            if c.state.Running:
                await self._halt_restart(c, True)
            if c.state.Running:
                await self._signal(c, sig.SIGKILL)
                if not await self._wait_exit(c, 30, killed=True):
                    raise System(f"could not kill running container {c.id}, cannot remove")
            await self._release(c)
            await asyncio.to_thread(self.layers.remove_rw, c.id)

            async def forget() -> None:
                with contextlib.suppress(Exception):
                    await self.supervisor.forget(c.id)

            # The directory goes in a thread (a removal may wait on the filesystem's journal),
            # while the supervisor drops its record.
            await asyncio.gather(forget(), asyncio.to_thread(shutil.rmtree, c.root, ignore_errors=True))
            # `rm -v` (and AutoRemove, like dockerd) removes the anonymous volumes; named stay.
            anonymous_too = volumes or bool(c.host_config.get("AutoRemove"))
            for gone in mnt.release(c.mount_points, self.volumes, c.id, anonymous_too):
                await asyncio.to_thread(self.volumes.purge, gone)
        except BaseException:
            c.state.removing = False
            c.state.Dead = not os.path.exists(c.root) or c.state.Dead
            raise
        self.containers.pop(c.id, None)
        self.execs.forget_container(c.id)
        self.restarts.forget(c.id)
        if self.names.get(c.name.lstrip("/")) == c.id:
            del self.names[c.name.lstrip("/")]
        self.on_event("destroy", c, {})
        self._resolve_waiters(c, ("removed", "next-exit", "not-running"), c.state.ExitCode, "")
        c.notify()

    async def rename(self, ref: str, new: str) -> None:
        c = self.get(ref)
        new = new.lstrip("/") if new else ""
        if not new or not NAME_RE.match(new):
            raise InvalidParameter(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        old = c.name.lstrip("/")
        if new == old:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        async with self._name_lock:
            if new in self.names:
                raise Conflict(
                    f'Conflict. The container name "/{new}" is already in use by container "{self.names[new]}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
            self.names[new] = c.id
            del self.names[old]
            c.name = "/" + new
            self.save(c)
            if self.networks is not None:
                self.networks.on_rename(c, old)
        self.on_event("rename", c, {"oldName": "/" + old})

    async def prune(self, filters: flt.Filters) -> dict[str, Any]:
        flt.check(filters, {"until", "label", "label!"})
        until = flt.until_filter(filters)
        deleted, reclaimed = [], 0
        for c in list(self.containers.values()):
            if c.state.Running or c.state.removing:
                continue
            if until is not None and created_unix(c) >= until:
                continue
            if not flt.match_labels(filters.get("label"), c.config.get("Labels") or {}):
                continue
            if filters.get("label!") and not flt.match_labels(
                [f.replace("=", "!=", 1) if "=" in f else f for f in filters["label!"]], c.config.get("Labels") or {}
            ):
                continue
            rw = self.layers.mounts.get(c.id)
            size = await asyncio.to_thread(self.driver.diff_size, rw.mount_id, rw.init_id) if rw else 0
            try:
                await self.remove(c.id)
            except EngineError:
                continue
            deleted.append(c.id)
            reclaimed += size
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # ---- logs -----------------------------------------------------------------------------

    async def logs(
        self,
        ref: str,
        *,
        follow: bool,
        tail: int | None,
        since_ns: int,
        until_ns: int,
        stdout: bool,
        stderr: bool,
    ) -> tuple[Container, AsyncIterator[list[logreader.LogEntry]]]:
        c = self.get(ref)
        if not c.logs_enabled:
            # dockerd's logger.ErrReadLogsNotSupported, a NotImplemented error (501).
            raise NotImplementedYet("configured logging driver does not support reading")
        wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}

        async def entries() -> AsyncIterator[list[logreader.LogEntry]]:
            async for batch in logreader.read(
                c.log_file,
                follow=follow,
                tail=tail,
                since_ns=since_ns,
                until_ns=until_ns,
                running=lambda: c.state.Running and c.id in self.containers,
                changed=lambda: c.changed,
                fmt=c.log_driver,
            ):
                if len(wanted) < 2:
                    batch = [e for e in batch if e.stream in wanted]
                if batch:
                    yield batch

        return c, entries()

    # ---- attach ---------------------------------------------------------------------------

    async def attach(
        self, ref: str, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[Container, asyncio.StreamReader, asyncio.StreamWriter]:
        c = self.get(ref)
        if c.state.Paused:
            raise Conflict(f"container {c.id} is paused, unpause the container before attach")
        if c.state.Restarting:
            raise Conflict(f"container {c.id} is restarting, wait until the container is running")
        reader, writer = await self.supervisor.attach(c.id, stdin and bool(c.config.get("OpenStdin")), stdout, stderr)
        return c, reader, writer

    async def resize(self, ref: str, h: int, w: int) -> None:
        c = self.get(ref)
        if not c.state.Running:
            raise Conflict(f"Container {c.id} is not running")
        await self.supervisor.resize(c.id, h, w)

    # ---- daemon shutdown ------------------------------------------------------------------

    async def shutdown(self, stop_containers: bool) -> None:
        """Daemon shutdown: stop every running container (each with its own stop timeout), as
        dockerd does; with live restore they keep running and keep their mounts."""
        if self._restore_task is not None:
            with contextlib.suppress(BaseException):
                await self._restore_task
        for cid in await self.restarts.shutdown():
            if (c := self.containers.get(cid)) is not None:
                self._restart_cancelled(c)
        if not stop_containers:
            return

        async def stop_one(c: Container) -> None:
            with contextlib.suppress(Exception):
                await self._stop(c, None, None)

        await asyncio.gather(*(stop_one(c) for c in self.containers.values() if c.state.Running))
