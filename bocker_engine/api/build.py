"""POST /build (the classic builder) and POST /commit."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bocker_engine.api.streams import JsonStream, request_chunks
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool, qint, read_json
from bocker_engine.build.builder import BuildOptions, StepFailed
from bocker_engine.errors import EngineError, InvalidParameter
from bocker_engine.progress import Message
from bocker_engine.registry import reference as refs
from bocker_engine.registry.manifest import Platform

log = logging.getLogger(__name__)

# Query parameters of the build's RUN containers, as HostConfig fields.
RESOURCE_PARAMS = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpushares": "CpuShares",
    "cpuperiod": "CpuPeriod",
    "cpuquota": "CpuQuota",
    "shmsize": "ShmSize",
}


def _json_query(request: web.Request, name: str, what: str) -> Any:
    from bocker_engine import jsonload

    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        return jsonload.loads(raw)
    except jsonload.JSONError as e:
        raise InvalidParameter(f"error reading {what}: {e}") from None


def build_options(request: web.Request) -> BuildOptions:
    q = request.query
    if q.get("version", "1") == "2":
        raise InvalidParameter("BuildKit is not supported by this daemon: use the classic builder (version=1)")
    build_args = _json_query(request, "buildargs", "build args") or {}
    labels = _json_query(request, "labels", "labels") or {}
    cache_from = _json_query(request, "cachefrom", "cache-from") or []
    if not isinstance(build_args, dict) or not isinstance(labels, dict) or not isinstance(cache_from, list):
        raise InvalidParameter("buildargs and labels must be JSON objects, cachefrom a JSON list")
    resources: dict[str, Any] = {}
    for param, key in RESOURCE_PARAMS.items():
        value = qint(request, param)
        if value:
            resources[key] = value
    for param, key in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems")):
        if q.get(param):
            resources[key] = q[param]
    tags = q.getall("t", [])
    for t in tags:
        refs.parse(t)  # a bad tag is a 400 before anything is received
    return BuildOptions(
        tags=tags,
        dockerfile=q.get("dockerfile", ""),
        build_args={str(k): (None if v is None else str(v)) for k, v in build_args.items()},
        target=q.get("target", ""),
        no_cache=qbool(request, "nocache"),
        pull=qbool(request, "pull"),
        rm=qbool(request, "rm", True),
        force_rm=qbool(request, "forcerm"),
        labels={str(k): str(v) for k, v in labels.items()},
        quiet=qbool(request, "q"),
        network=q.get("networkmode", ""),
        resources=resources,
        extra_hosts=q.getall("extrahosts", []),
        cache_from=[str(c) for c in cache_from],
        remote=q.get("remote", ""),
        platform=Platform.parse(q["platform"]) if q.get("platform", "").strip() else None,
    )


async def build(request: web.Request) -> web.StreamResponse:
    """dockerd's postBuild: an error before any output is the HTTP status (so a broken
    Dockerfile is not a 200), one after output has started goes in-stream. With q=1 dockerd
    holds the whole output back: a success sends only the image ID; an error replays what was
    held and then the error in-stream, or is the HTTP status when nothing was held."""
    opts = build_options(request)
    daemon = daemon_of(request)
    stream = JsonStream(request)
    held: list[Message] = []
    try:
        img, tags = await daemon.builds.build(
            request_chunks(request),
            opts,
            held.append if opts.quiet else stream.sink,
            request.headers.get("X-Registry-Config"),
        )
    except Exception as e:
        for msg in held:
            stream.sink(msg)
        if not stream.has_output:
            raise
        if isinstance(e, StepFailed):
            stream.sink(Message(error=e.message, error_code=e.code))
        elif isinstance(e, EngineError):
            stream.sink(Message(error=e.message))
        else:
            log.exception("build failed")
            stream.sink(Message(error=str(e)))
        return await stream.close()
    for ref in tags:
        daemon.sources.image("tag", img.id, ref.familiar())
    if opts.quiet:
        stream.sink(Message(stream=img.id + "\n"))
    return await stream.close()


async def commit(request: web.Request) -> web.StreamResponse:
    q = request.query
    body = await read_json(request)
    if body is not None and not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: config must be an object")
    repo = q.get("repo", "")
    tag = q.get("tag", "")
    if repo:
        refs.parse_repo_tag(repo, tag or None)
    daemon = daemon_of(request)
    c = daemon.containers.get(q.get("container", ""))
    img = await daemon.commits.commit(
        c.id,
        repo=repo,
        tag=tag,
        comment=q.get("comment", ""),
        author=q.get("author", ""),
        changes=q.getall("changes", []),
        pause=qbool(request, "pause", True),
        config=body or None,
    )
    image_ref = refs.parse_repo_tag(repo, tag or None).familiar() if repo else ""
    daemon.sources.container("commit", c, {"comment": q.get("comment", ""), "imageID": img.id, "imageRef": image_ref})
    if repo:
        daemon.sources.image("tag", img.id, image_ref)
    return json_response({"Id": img.id}, status=201)


def setup(router: Router) -> None:
    router.add("POST", "/build", build)
    router.add("POST", "/commit", commit)
