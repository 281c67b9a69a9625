"""Wiring: storage, stores, supervisor, API servers; startup restore and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import grp
import logging
import os
import shutil
import signal
import socket
import ssl
from typing import Any
from urllib.parse import urlparse

from aiohttp import web

from bocker_engine import reload as reload_mod
from bocker_engine import systemd
from bocker_engine.api.app import create_app
from bocker_engine.build.service import BuildService
from bocker_engine.config import Config
from bocker_engine.engine import disk_usage, system_info
from bocker_engine.engine.commit import CommitService
from bocker_engine.engine.container import Container
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.distribution import Distribution
from bocker_engine.engine.event_sources import EventSources
from bocker_engine.engine.events import Events
from bocker_engine.engine.health import HealthMonitors
from bocker_engine.engine.ids import new_id
from bocker_engine.engine.images import ImageService
from bocker_engine.engine.layers import LayerStore
from bocker_engine.engine.networks import NetConfig, NetworkService
from bocker_engine.engine.stats import StatsCollector
from bocker_engine.engine.store import read_text, write_atomic
from bocker_engine.engine.volumes import VolumeService
from bocker_engine.errors import EngineError, System
from bocker_engine.registry.client import Registry
from bocker_engine.registry.config import RegistryConfig
from bocker_engine.runtime import cgroups as cgroups_mod
from bocker_engine.runtime.client import SupervisorClient
from bocker_engine.storage import new_driver
from bocker_engine.storage.driver import private_dir

log = logging.getLogger("bockerd")

INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini")


class DaemonError(Exception):
    pass


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.warnings: list[str] = []
        self.events = Events()
        self.init_path = next((p for p in INIT_CANDIDATES if os.path.exists(p)), "")
        self._lock_fd = -1
        self._runners: list[web.AppRunner] = []
        self._sockets: list[str] = []
        self.stopping = asyncio.Event()

    # ---- startup --------------------------------------------------------------------------

    def _lock(self) -> None:
        # dockerd's modes: other users may traverse the data root (0711), nothing more.
        private_dir(self.config.data_root, 0o711)
        path = os.path.join(self.config.data_root, "bockerd.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_text(path, "?")
            raise DaemonError(
                f"another bockerd (pid {pid}) is already using data root {self.config.data_root}; "
                "stop it or choose another --data-root"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    async def start(self) -> None:
        cfg = self.config
        self._lock()
        private_dir(cfg.exec_root, 0o700)
        private_dir(os.path.join(cfg.data_root, "image"), 0o700)
        private_dir(os.path.join(cfg.data_root, "containers"), 0o710)
        if cfg.pidfile:
            write_atomic(cfg.pidfile, f"{os.getpid()}\n".encode(), mode=0o644)
        id_path = os.path.join(cfg.data_root, "engine-id")
        self.engine_id = read_text(id_path)
        if not self.engine_id:
            self.engine_id = new_id()
            write_atomic(id_path, self.engine_id.encode())
        self.driver = new_driver(cfg.storage_driver, cfg.data_root)
        await asyncio.to_thread(self.driver.setup)
        image_root = os.path.join(cfg.data_root, "image", self.driver.name)
        os.makedirs(image_root, exist_ok=True)
        self.layers = LayerStore(image_root, self.driver)
        await asyncio.to_thread(self.layers.load)
        self.images = ImageService(image_root, self.layers)
        await asyncio.to_thread(self.images.load)
        self.cgroups = cgroups_mod.detect(parent=cfg.cgroup_parent)
        self.registry = Registry(
            RegistryConfig(
                mirrors=list(cfg.registry_mirrors),
                insecure=list(cfg.insecure_registries),
                mirror_fallback=not cfg.registry_mirrors_only,
            )
        )
        self.distribution = Distribution(image_root, self.registry, self.images, self.layers)
        reload_mod.apply_runtime(self)
        self.supervisor = SupervisorClient(os.path.join(cfg.exec_root, "supervisor"))
        self.networks = NetworkService(
            cfg.data_root,
            cfg.exec_root,
            NetConfig(cfg.bridge, cfg.bip, cfg.fixed_cidr, list(cfg.default_address_pools)),
        )
        try:
            await asyncio.to_thread(self.networks.load)
        except EngineError as e:
            raise DaemonError(f"networking: {e.message}") from None
        self.volumes = VolumeService(os.path.join(cfg.data_root, "volumes"))
        await asyncio.to_thread(self.volumes.load)
        self.volumes.on_event = lambda action, name, attrs: self.event("volume", action, name, attrs)
        self.containers = ContainerService(
            os.path.join(cfg.data_root, "containers"),
            self.images,
            self.layers,
            self.driver,
            self.cgroups,
            self.supervisor,
            self.init_path,
            self.networks,
            volumes=self.volumes,
            no_new_privileges=cfg.no_new_privileges,
        )
        self.networks.containers = self.containers
        self.containers.log_defaults = (cfg.log_driver, dict(cfg.log_opts))
        self.containers.load()
        self.commits = CommitService(self.containers, self.images, self.layers)
        self.builds = BuildService(self.containers, self.images, self.layers, self.distribution)
        await asyncio.to_thread(self.builds.sweep)
        # Layers of a pull or load that a crash interrupted belong to no image: drop them.
        await asyncio.to_thread(self.images.collect_layers)
        self.sources = EventSources(self.events, self.images, self.networks)
        self.stats = StatsCollector(
            self.cgroups, self.containers.containers.get, lambda c: c.id in self.networks.sandboxes
        )
        self.health = HealthMonitors(self.containers)
        self.containers.on_event = self._container_event
        self.images.containers_using = self.containers.using_image
        await self.supervisor.connect(self.containers.on_exit, self.containers.on_supervisor_lost)
        await self.networks.restore()
        await self.containers.restore(cfg.live_restore)
        if cfg.live_restore:
            self.health.resume(self.containers.containers.values())
        if not self.init_path:
            self.warnings.append("WARNING: no tini found; `docker run --init` is not available")
        app = create_app(self)
        for host in cfg.hosts:
            await self._listen(app, host)
        # Everything allocated so far lives as long as the daemon: keep it out of the cyclic
        # collector's full passes (they stall the event loop for ~16 ms otherwise).
        gc.freeze()
        log.info(
            "bockerd ready: driver %s, data root %s, listening on %s",
            self.driver.name,
            cfg.data_root,
            ", ".join(cfg.hosts),
        )

    async def _listen(self, app: web.Application, host: str) -> None:
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, keepalive_timeout=300, shutdown_timeout=1.0
        )
        await runner.setup()
        self._runners.append(runner)
        url = urlparse(host if "://" in host else "tcp://" + host)
        site: web.BaseSite
        if url.scheme == "fd":
            await self._listen_activated(runner, url.netloc)
        elif url.scheme == "unix":
            path = url.path or "/run/bocker.sock"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if _socket_alive(path):
                    raise DaemonError(f"{path} is in use by another daemon")
                os.unlink(path)
            site = web.UnixSite(runner, path)
            await site.start()
            os.chmod(path, 0o660)
            try:
                os.chown(path, 0, grp.getgrnam(self.config.group).gr_gid)
            except KeyError:
                pass
            self._sockets.append(path)
        elif url.scheme in ("tcp", "http", "https"):
            ctx = self._tls_context()
            port = url.port or (2376 if ctx else 2375)
            if ctx is None and url.hostname not in ("127.0.0.1", "localhost", "::1"):
                self.warnings.append(f"WARNING: API is accessible on http://{url.hostname}:{port} without encryption.")
            if ctx is not None:
                from bocker_engine.api.tls import TLSSite

                site = TLSSite(runner, url.hostname or "0.0.0.0", port, ctx)
            else:
                site = web.TCPSite(runner, url.hostname or "0.0.0.0", port)
            await site.start()
        else:
            raise DaemonError(f"unsupported host {host!r} (unix:// or tcp://)")

    async def _listen_activated(self, runner: web.AppRunner, selector: str) -> None:
        """`-H fd://`: serve on the sockets systemd passed; they stay systemd's (never unlinked)."""
        try:
            socks = systemd.listen_sockets(selector)
        except systemd.ActivationError as e:
            raise DaemonError(str(e)) from None
        for sock in socks:
            ctx = self._tls_context() if sock.family != socket.AF_UNIX else None
            site = web.SockSite(runner, sock, ssl_context=ctx)
            await site.start()

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not (cfg.tls or cfg.tlsverify):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg.tlscert, cfg.tlskey)
        if cfg.tlsverify:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cfg.tlscacert)
        return ctx

    # ---- events ---------------------------------------------------------------------------

    def _container_event(self, action: str, c: Container, extra: dict[str, str]) -> None:
        self.health.on_event(action, c)
        self.sources.container(action, c, extra)

    def event(self, type_: str, action: str, actor: str, attrs: dict[str, str]) -> None:
        if type_ == "image":  # with the image's labels, like dockerd's LogImageEvent
            self.sources.image(action, actor, attrs.get("name", ""))
            return
        self.events.publish(type_, action, actor, attrs)

    async def disk_usage(self, types: list[str]) -> dict[str, Any]:
        return await disk_usage.disk_usage(self.images, self.containers, types, self.volumes.usage)

    def system_info(self) -> dict[str, Any]:
        return system_info.info(
            engine_id=self.engine_id,
            containers=self.containers,
            images=self.images,
            driver=self.driver,
            cgroups=self.cgroups,
            config=self.config,
            init_path=self.init_path,
            warnings=self.warnings,
            events_listeners=self.events.listeners,
        )

    # ---- shutdown -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        if self._lock_fd < 0:
            return  # never owned the data root: nothing here is ours to clean
        systemd.notify("STOPPING=1")
        log.info("shutting down")
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        for path in self._sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        live = self.config.live_restore
        if hasattr(self, "stats"):
            await self.stats.close()
        if hasattr(self, "health"):
            await self.health.shutdown()
        if hasattr(self, "containers"):
            await self.containers.shutdown(stop_containers=not live)
        if hasattr(self, "networks"):
            with contextlib.suppress(Exception):
                await self.networks.shutdown(live)
        if hasattr(self, "volumes") and not live:
            await asyncio.to_thread(self.volumes.shutdown)
        if hasattr(self, "supervisor"):
            await self.supervisor.close(shutdown=not live)
        if hasattr(self, "registry"):
            await self.registry.close()
        if hasattr(self, "driver") and not live:
            await asyncio.to_thread(self.driver.cleanup)
        if self.config.pidfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.pidfile)
        if not live:
            shutil.rmtree(os.path.join(self.config.exec_root, "supervisor"), ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _socket_alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


async def run(config: Config) -> int:
    systemd.capture()
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    # Until the daemon is up a reload has nothing to apply to; it must not kill the daemon either.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    try:
        await daemon.start()
    except (DaemonError, System) as e:
        log.error("%s", e)
        await daemon.shutdown()
        return 1
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_mod.reload(daemon))
    systemd.notify(f"READY=1\nMAINPID={os.getpid()}")
    await daemon.stopping.wait()
    await daemon.shutdown()
    return 0
