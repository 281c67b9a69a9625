"""The classic builder: a Dockerfile's steps, each committed as an image, with dockerd's output.

Each step is one image whose parent is the previous step's (dockerd's intermediate images): RUN
runs a container through the container service (same confinement, network and limits as any
container) and commits its layer; COPY, ADD and WORKDIR fill a writable layer on a snapshot of
the parent and commit it; the other instructions only change the config (an `empty_layer`
history entry). The cache is dockerd's: a child image of the same parent whose last history
entry (`created_by`, which carries the build args and the sources' content hash) and config
match is used instead of running the step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bocker_engine.build import copier, steps
from bocker_engine.build.cache import SourceCache
from bocker_engine.build.context import BuildContext
from bocker_engine.build.parser import Command, Dockerfile, Stage, parse_commands
from bocker_engine.build.shell import expand
from bocker_engine.engine.commit import IMAGE_CONFIG_KEYS, CommitSpec, commit_rw, image_config_json
from bocker_engine.engine.containers import ContainerService
from bocker_engine.engine.ids import new_id
from bocker_engine.engine.images import Image, ImageService
from bocker_engine.engine.layers import LayerStore, RWLayer
from bocker_engine.errors import EngineError, InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink
from bocker_engine.registry.manifest import Platform
from bocker_engine.storage import container_copy

PROXY_ARGS = {
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
}
BUILTIN_ARGS = PROXY_ARGS | {"SOURCE_DATE_EPOCH"}
# A source word that BuildKit's parser takes for a heredoc (its reHeredoc).
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
# Writable layers of COPY/ADD/WORKDIR steps are keyed like this in the layer store's mounts.
SCRATCH_PREFIX = "build-"


class StepFailed(EngineError):
    """A RUN that exited non-zero: `code` goes to errorDetail.code (the CLI's exit status)."""

    status = 500

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)
    dockerfile: str = ""
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    rm: bool = True
    force_rm: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    network: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    extra_hosts: list[str] = field(default_factory=list)
    cache_from: list[str] = field(default_factory=list)
    platform: Platform | None = None
    remote: str = ""  # a URL or git URL the context comes from instead of the request body

    @property
    def epoch(self) -> int | None:
        raw = self.build_args.get("SOURCE_DATE_EPOCH")
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise InvalidParameter(f"invalid SOURCE_DATE_EPOCH: {raw}") from None


@dataclass
class _State:
    stage: Stage
    image: Image | None
    config: dict[str, Any]
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False
    maintainer: str = ""

    @property
    def parent_id(self) -> str:
        return self.image.id if self.image is not None else ""

    def env(self) -> dict[str, str]:
        out = {k: v for k, v in self.args.items() if v is not None}
        for e in self.config.get("Env") or []:
            k, _, v = e.partition("=")
            out[k] = v
        return out


PullFn = Callable[[str, Platform | None], Awaitable[Image]]


class Builder:
    def __init__(
        self,
        containers: ContainerService,
        images: ImageService,
        layers: LayerStore,
        pull: PullFn,
        progress: ProgressSink,
        opts: BuildOptions,
        ctx: BuildContext,
        dockerfile: Dockerfile,
    ) -> None:
        self.containers = containers
        self.images = images
        self.layers = layers
        self.pull = pull
        self.progress = progress
        self.opts = opts
        self.ctx = ctx
        self.df = dockerfile
        self.epoch = opts.epoch
        self.stage_images: list[Image | None] = []
        self.used_args: set[str] = set()
        self.live_containers: set[str] = set()
        self.live_scratch: set[str] = set()
        self.step = 0
        self.total = 0
        self._meta: dict[str, str | None] = {}
        self.source_cache: SourceCache | None = None

    # ---- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        # Also with q=1: the api holds the output back, and replays it with an error as dockerd does.
        self.progress(Message(stream=text))

    # ---- the whole build ------------------------------------------------------------------

    async def run(self) -> Image:
        df = self.df
        last = df.stage_index(self.opts.target) if self.opts.target else len(df.stages) - 1
        stages = df.stages[: last + 1]
        if self.opts.labels:
            line = "LABEL " + " ".join(f'"{k}"="{v}"' for k, v in self.opts.labels.items())
            stages[-1].commands.append(parse_commands(line)[0])
        self.total = len(df.meta_args) + sum(1 + len(s.commands) for s in stages)
        meta: dict[str, str | None] = {}
        for cmd in df.meta_args:
            self._step_line(cmd)
            for name, default in self._arg_defs(cmd, {}):
                meta[name] = self.opts.build_args.get(name, default)
                if name in self.opts.build_args:
                    self.used_args.add(name)
        image: Image | None = None
        try:
            for stage in stages:
                image = await self._stage(stage, meta)
                self.stage_images.append(image)
        finally:
            await self._cleanup()
        if image is None:
            raise InvalidParameter("No image was generated. Is your Dockerfile empty?")
        unused = sorted(k for k in self.opts.build_args if k not in self.used_args and k not in BUILTIN_ARGS)
        if unused:
            self.say(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        return image

    def _step_line(self, cmd: Command) -> None:
        self.step += 1
        self.say(f"Step {self.step}/{self.total} : {cmd.original}\n")

    async def _cleanup(self) -> None:
        for cid in list(self.live_containers):
            await self._remove_container(cid)
        for key in list(self.live_scratch):
            await self._remove_scratch(key)

    # ---- stages ---------------------------------------------------------------------------

    async def _stage(self, stage: Stage, meta: dict[str, str | None]) -> Image | None:
        self._step_line(stage.from_cmd)
        meta_env = {k: v for k, v in meta.items() if v is not None}
        base = expand(stage.base, meta_env, self.df.escape)
        if not base:
            raise InvalidParameter(f"base name ({stage.base}) should not be blank")
        image = await self._base_image(base, self._platform(stage, meta_env))
        config: dict[str, Any] = dict(image.container_config) if image is not None else {}
        if not any(e.startswith("PATH=") for e in config.get("Env") or []):
            config["Env"] = [*(config.get("Env") or []), steps.DEFAULT_PATH]
        triggers = list(config.get("OnBuild") or [])
        config["OnBuild"] = None
        st = _State(stage, image, config)
        self._meta = meta
        self.source_cache = self._source_cache()
        if image is not None:
            self.say(f" ---> {image.id[7:19]}\n")
        if triggers:
            self.say(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            for trigger in triggers:
                for cmd in parse_commands(trigger):
                    await self._dispatch(st, cmd)
        for cmd in stage.commands:
            self._step_line(cmd)
            await self._dispatch(st, cmd)
            if st.image is not None:
                self.say(f" ---> {st.image.id[7:19]}\n")
        return st.image

    def _source_cache(self) -> SourceCache | None:
        """A fresh cache over the `--cache-from` images for each stage (dockerd's Reset);
        unknown references are skipped and never pulled, as dockerd's classic builder does."""
        if not self.opts.cache_from:
            return None
        found = [self.images.find(ref) for ref in self.opts.cache_from]
        return SourceCache(
            [img for img in found if img is not None],
            lambda img_id: img.parent if (img := self.images.images.get(img_id)) is not None else "",
            self.images.store,
            self.images.set_parent,
        )

    def _platform(self, stage: Stage, meta_env: dict[str, str]) -> Platform | None:
        """`FROM --platform=...` (build args expanded), else the build's `--platform`."""
        if not stage.platform:
            return self.opts.platform
        raw = expand(stage.platform, meta_env, self.df.escape)
        try:
            return Platform.parse(raw)
        except InvalidParameter as e:
            raise InvalidParameter(f"failed to parse platform {raw}: {e.message}") from None

    async def _base_image(self, base: str, platform: Platform | None) -> Image | None:
        """dockerd's GetImageAndReleasableLayer: a local image of the wanted platform, else a
        pull for it; the classic builder cannot build for another platform than the image's."""
        if base.lower() == "scratch":
            if platform is not None and platform.os.lower() != "linux":
                raise InvalidParameter("operating system is not supported")
            return None
        for s in self.df.stages[: len(self.stage_images)]:
            if s.name and s.name.lower() == base.lower():
                return self.stage_images[s.index]
        img = None if self.opts.pull else self.images.find(base)
        if img is not None and platform is not None and not _runs_on(platform, img):
            img = None
        if img is None:
            img = await self.pull(base, platform)
            if platform is not None and not _runs_on(platform, img):
                raise NotFound(
                    f"image with reference {base} was found but does not match the specified platform: "
                    f"wanted {platform}, actual: {_platform_of(img)}"
                )
        if str(img.config.get("os") or "linux").lower() != "linux":
            raise InvalidParameter("operating system is not supported")
        return img

    # ---- instructions ---------------------------------------------------------------------

    async def _dispatch(self, st: _State, cmd: Command) -> None:
        name = cmd.name
        env = st.env()
        if name == "RUN":
            await self._run(st, cmd)
        elif name in ("COPY", "ADD"):
            await self._copy(st, cmd, env)
        elif name == "WORKDIR":
            config = _copy_config(st.config)
            wd = steps.workdir(config, cmd, env, self.df.escape)
            await self._fs_step(st, config, f"WORKDIR {wd}", lambda root: copier.mkdir_all(root, wd, (0, 0)), nop=True)
        elif name == "ARG":
            await self._arg(st, cmd)
        elif name in steps.METADATA:
            config = _copy_config(st.config)
            comment, st.cmd_set = steps.apply(config, cmd, env, self.df.escape, st.cmd_set)
            if name == "MAINTAINER":
                st.maintainer = comment.split(" ", 1)[1] if " " in comment else ""
            await self._meta_step(st, config, comment)
        else:
            raise InvalidParameter(f"unknown instruction: {name}")

    def _arg_defs(self, cmd: Command, env: dict[str, str]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for a in cmd.args:
            name, eq, default = a.partition("=")
            if not name:
                raise InvalidParameter("ARG names can not be blank")
            out.append((name, expand(default, env, self.df.escape) if eq else None))
        return out

    async def _arg(self, st: _State, cmd: Command) -> None:
        parts = []
        for name, default in self._arg_defs(cmd, st.env()):
            if name in self.opts.build_args:
                value = self.opts.build_args[name]
                self.used_args.add(name)
            elif default is not None:
                value = default
            else:
                value = self._meta.get(name)
            st.args[name] = value
            parts.append(name if default is None else f"{name}={default}")
        await self._meta_step(st, _copy_config(st.config), "ARG " + " ".join(parts))

    def _run_args(self, st: _State) -> list[str]:
        """Declared build args with a value that no ENV overrides (FilterAllowed)."""
        env_keys = {e.split("=", 1)[0] for e in st.config.get("Env") or []}
        out = [f"{k}={v}" for k, v in st.args.items() if v is not None and k not in env_keys]
        return sorted(out)

    # ---- commits and the cache ------------------------------------------------------------

    def _created_by(self, st: _State, comment: str, *, joined: bool = False) -> str:
        shell = " ".join(steps.shell_of(st.config))
        return f"{shell} #(nop) {comment}" if joined else f"{shell} #(nop)  {comment}"

    def _image_config(self, st: _State, config: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in config.items() if k in IMAGE_CONFIG_KEYS}
        out["Image"] = st.parent_id
        return out

    async def _probe(self, st: _State, created_by: str, config: dict[str, Any]) -> Image | None:
        if self.opts.no_cache:
            return None
        local = self._local_probe(st, created_by, config)
        if self.source_cache is None:
            return local
        return await asyncio.to_thread(self.source_cache.probe, st.image, created_by, config, local)

    def _local_probe(self, st: _State, created_by: str, config: dict[str, Any]) -> Image | None:
        """dockerd's local cache: a child of the step's parent made by the same instruction."""
        for img in list(self.images.images.values()):
            if img.parent != st.parent_id:
                continue
            hist = img.config.get("history") or []
            if not hist or hist[-1].get("created_by") != created_by:
                continue
            if (img.config.get("config") or {}) != config:
                continue
            base = st.image.diff_ids if st.image is not None else []
            if img.diff_ids[: len(base)] != base or len(img.diff_ids) - len(base) not in (0, 1):
                continue
            return img
        return None

    def _spec(self, st: _State, config: dict[str, Any], created_by: str) -> CommitSpec:
        extra = {"author": st.maintainer} if st.maintainer else {}
        return CommitSpec(config, created_by, epoch=self.epoch, extra=extra)

    async def _meta_step(self, st: _State, config: dict[str, Any], comment: str) -> None:
        created_by = self._created_by(st, comment)
        img_config = self._image_config(st, config)
        hit = await self._probe(st, created_by, img_config)
        if hit is not None:
            self.say(" ---> Using cache\n")
            st.image, st.config = hit, config
            return
        raw = image_config_json(st.image, self._spec(st, img_config, created_by), None)
        st.image = await asyncio.to_thread(self.images.store, raw, st.parent_id)
        st.config = config

    async def _fs_step(
        self,
        st: _State,
        config: dict[str, Any],
        comment: str,
        fill: Callable[[str], None],
        *,
        nop: bool = False,
    ) -> None:
        """A step whose changes are made by `fill(rootfs)` on a writable layer (no process)."""
        created_by = self._created_by(st, comment, joined=not nop)
        img_config = self._image_config(st, config)
        hit = await self._probe(st, created_by, img_config)
        if hit is not None:
            self.say(" ---> Using cache\n")
            st.image, st.config = hit, config
            return
        key = SCRATCH_PREFIX + new_id()
        top = st.image.top_layer if st.image is not None else None
        self.live_scratch.add(key)
        try:
            rw = await asyncio.to_thread(self.layers.create_rw, key, top, {})
            root = await asyncio.to_thread(self.layers.driver.get, rw.mount_id)
            try:
                await asyncio.to_thread(fill, root)
            finally:
                await asyncio.to_thread(self.layers.driver.put, rw.mount_id)
            st.image = await commit_rw(self.images, self.layers, rw, st.image, self._spec(st, img_config, created_by))
            st.config = config
        finally:
            await self._remove_scratch(key)

    async def _remove_scratch(self, key: str) -> None:
        if key in self.live_scratch:
            self.live_scratch.discard(key)
            await asyncio.shield(asyncio.to_thread(self.layers.remove_rw, key))

    # ---- RUN ------------------------------------------------------------------------------

    async def _run(self, st: _State, cmd: Command) -> None:
        if not cmd.args:
            raise InvalidParameter("RUN requires at least one argument")
        # A heredoc's body is dropped, as dockerd's classic builder does (it runs only the
        # instruction's line, `<<EOF` and all: the shell sees an empty here-document).
        argv = list(cmd.args) if cmd.json else [*steps.shell_of(st.config), cmd.args[0]]
        run_args = self._run_args(st)
        save = [f"|{len(run_args)}", *run_args, *argv] if run_args else argv
        created_by = " ".join(save)
        img_config = self._image_config(st, st.config)
        hit = await self._probe(st, created_by, img_config)
        if hit is not None:
            self.say(" ---> Using cache\n")
            st.image = hit
            return
        if st.image is None:
            raise InvalidParameter("Please provide a source image with `from` prior to run")
        env_keys = {e.split("=", 1)[0] for e in st.config.get("Env") or []}
        proxies = [
            f"{k}={v}"
            for k, v in self.opts.build_args.items()
            if k in PROXY_ARGS and v is not None and k not in st.args
        ]
        env = [*(st.config.get("Env") or []), *[a for a in run_args if a.split("=", 1)[0] not in env_keys], *proxies]
        for k in self.opts.build_args:
            if k in PROXY_ARGS:
                self.used_args.add(k)
        body: dict[str, Any] = {
            "Image": st.image.id,
            "Cmd": argv,
            "Entrypoint": [],
            "Env": env,
            "User": st.config.get("User") or "",
            "WorkingDir": st.config.get("WorkingDir") or "",
            "Labels": {},
            "HostConfig": {
                "NetworkMode": self.opts.network or "default",
                "ExtraHosts": self.opts.extra_hosts or None,
                **self.opts.resources,
            },
        }
        # A client that hangs up during the create must not leave its container unknown to
        # the cleanup: the create finishes and is recorded before the cancellation goes on.
        creating = asyncio.ensure_future(self.containers.create(None, body))
        try:
            c, _ = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                created, _ = await creating
                self.live_containers.add(created.id)
            raise
        self.live_containers.add(c.id)
        self.say(f" ---> Running in {c.id[:12]}\n")
        fut = self.containers.wait_future(c.id, "next-exit")
        await self.containers.start(c.id)
        _, entries = await self.containers.logs(
            c.id, follow=True, tail=None, since_ns=0, until_ns=0, stdout=True, stderr=True
        )
        async for batch in entries:
            text = b"".join(e.data for e in batch).decode("utf-8", "replace")
            if text:
                self.say(text)
        code, _ = await self.containers.wait_exit(c.id, fut)
        if code != 0:
            raise StepFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {code}", code)
        rw = self.layers.mounts.get(c.id)
        if rw is None:
            raise NotFound(f"container {c.id} lost its layer")
        st.image = await commit_rw(self.images, self.layers, rw, st.image, self._spec(st, img_config, created_by))
        if self.opts.rm or self.opts.force_rm:
            self.say(f"Removing intermediate container {c.id[:12]}\n")
            await self._remove_container(c.id)
        else:
            self.live_containers.discard(c.id)

    async def _remove_container(self, cid: str) -> None:
        self.live_containers.discard(cid)
        with contextlib.suppress(EngineError):
            await asyncio.shield(self.containers.remove(cid, force=True, volumes=True))

    # ---- COPY / ADD -----------------------------------------------------------------------

    async def _copy(self, st: _State, cmd: Command, env: dict[str, str]) -> None:
        name = cmd.name
        words = [a if cmd.json else expand(a, env, self.df.escape) for a in cmd.args]
        if len(words) < 2:
            raise InvalidParameter(
                f"{name} requires at least two arguments, but only one was provided. "
                "Destination could not be determined."
            )
        srcs, dest = words[:-1], words[-1]
        if cmd.heredocs:
            # dockerd's classic builder copies no heredoc (BuildKit's inline files): only the
            # sources that are paths, so `COPY <<EOF /file` commits an empty layer.
            if _HEREDOC.match(cmd.args[-1]):
                raise InvalidParameter(f"{name} cannot accept a heredoc as a destination")
            srcs = [w for w, raw in zip(srcs, cmd.args[:-1], strict=True) if not _HEREDOC.match(raw)]
        workdir = st.config.get("WorkingDir") or "/"
        if not dest.startswith("/"):
            dest = workdir.rstrip("/") + "/" + dest if dest not in (".", "./") else workdir.rstrip("/") + "/"
        chown = cmd.flag("chown")
        chmod = copier.parse_chmod(cmd.flag("chmod"))
        src_root, release = await self._source_root(cmd.flag("from"), name)
        try:
            urls = [s for s in srcs if name == "ADD" and s.startswith(("http://", "https://"))]
            locals_ = [s for s in srcs if s not in urls]
            sources: list[copier.Source] = []
            if locals_:
                sources += await asyncio.to_thread(
                    copier.resolve, src_root, locals_, archives=name == "ADD" and not cmd.flag("from"), what=name
                )
            for url in urls:
                sources.append(await self._download(url, dest))
            digest = await asyncio.to_thread(copier.content_hash, sources)
            comment = f"{name} {digest} in {dest} "
            if chown:
                comment = f"{name} --chown={chown} {digest} in {dest} "

            def fill(root: str) -> None:
                owner = container_copy.lookup_owner(root, chown) if chown else None
                copier.copy_into(root, sources, dest, owner=owner, chmod=chmod)

            await self._fs_step(st, _copy_config(st.config), comment, fill)
        finally:
            await release()

    async def _source_root(self, from_: str | None, what: str) -> tuple[str, Callable[[], Awaitable[None]]]:
        async def nothing() -> None:
            return None

        if not from_:
            return self.ctx.root, nothing
        img: Image | None
        if from_.isdigit() and int(from_) < len(self.stage_images):
            img = self.stage_images[int(from_)]
        else:
            named = [s for s in self.df.stages[: len(self.stage_images)] if s.name and s.name.lower() == from_.lower()]
            if named:
                img = self.stage_images[named[0].index]
            else:
                img = self.images.find(from_) or await self.pull(from_, None)
        if img is None or img.top_layer is None:
            empty = os.path.join(self.ctx.workdir, "empty-" + new_id()[:8])
            os.makedirs(empty, exist_ok=True)
            return empty, nothing
        key = SCRATCH_PREFIX + new_id()
        self.live_scratch.add(key)
        rw: RWLayer = await asyncio.to_thread(self.layers.create_rw, key, img.top_layer, {})
        root = await asyncio.to_thread(self.layers.driver.get, rw.mount_id)

        async def release() -> None:
            await asyncio.to_thread(self.layers.driver.put, rw.mount_id)
            await self._remove_scratch(key)

        return root, release

    async def _download(self, url: str, dest: str) -> copier.Source:
        import aiohttp

        name = os.path.basename(url.split("?", 1)[0].rstrip("/")) or "download"
        if not dest.endswith("/"):
            name = os.path.basename(dest)
        where = os.path.join(self.ctx.workdir, "url-" + new_id()[:12])
        os.makedirs(where)
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                if resp.status >= 400:
                    raise InvalidParameter(f"failed to GET {url} with status {resp.status}: {resp.reason}")
                path = os.path.join(where, name)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
        except aiohttp.ClientError as e:
            raise InvalidParameter(f"failed to GET {url}: {e}") from None
        return copier.Source(where, "/" + name, False, False)


def _platform_of(img: Image) -> Platform:
    c = img.config
    return Platform(str(c.get("os") or "linux"), str(c.get("architecture") or ""), str(c.get("variant") or ""))


def _runs_on(platform: Platform, img: Image) -> bool:
    return platform.matches(_platform_of(img))


def _copy_config(config: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(config)
