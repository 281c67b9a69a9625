"""/images/...: import (create fromSrc), list, inspect, history, tag, delete, prune."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from bocker_engine.api.streams import JsonStream, request_chunks
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool
from bocker_engine.engine import filters as flt
from bocker_engine.engine.images import ImageService
from bocker_engine.errors import EngineError, InvalidParameter, System, message_of
from bocker_engine.registry import reference as refs


def _images(request: web.Request) -> ImageService:
    return daemon_of(request).images


async def _url_chunks(url: str) -> AsyncIterator[bytes]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        if resp.status != 200:
            raise InvalidParameter(f"error downloading {url}: {resp.status} {resp.reason}")
        async for chunk in resp.content.iter_chunked(1 << 20):
            yield chunk


async def create(request: web.Request) -> web.StreamResponse:
    q = request.query
    src = q.get("fromSrc")
    if src is None:
        if not q.get("fromImage"):
            raise InvalidParameter("fromImage or fromSrc is required")
        from bocker_engine.api import distribution

        return await distribution.pull(request)
    repo = q.get("repo", "")
    tag = q.get("tag", "")
    if repo:
        refs.parse_repo_tag(repo, tag or None)  # fail with 400 before streaming
    chunks = request_chunks(request) if src == "-" else _url_chunks(src)
    stream = JsonStream(request)
    try:
        img = await _images(request).import_tar(
            chunks,
            repo=repo,
            tag=tag,
            message=q.get("message", ""),
            changes=q.getall("changes", []),
            src=src,
            progress=stream.sink,
        )
        if repo:  # dockerd tags first, then reports the import
            daemon_of(request).sources.image("tag", img.id, refs.parse_repo_tag(repo, tag or None).familiar())
        daemon_of(request).sources.image("import", img.id, img.id)
    except EngineError as e:
        if not stream.started and not stream._pending:
            raise
        await stream.error(e)
    except Exception as e:
        if not stream.started and not stream._pending:
            if isinstance(e, OSError) and e.errno:  # the host's failure (a full disk), not the input's
                raise System(message_of(e)) from e
            raise InvalidParameter(str(e)) from e
        await stream.error(e)
    return await stream.close()


async def list_(request: web.Request) -> web.StreamResponse:
    filters = flt.parse(request.query.get("filters"))
    if request.query.get("filter"):
        filters.setdefault("reference", []).append(request.query["filter"])
    return json_response(_images(request).list_images(qbool(request, "all"), filters))


async def inspect(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    return json_response(svc.inspect(svc.resolve(request.match_info["name"])))


async def history(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    return json_response(svc.history(svc.resolve(request.match_info["name"])))


async def tag(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    img = svc.resolve(request.match_info["name"])
    repo = request.query.get("repo", "")
    if not repo:
        raise InvalidParameter("repository name must have at least one component")
    ref = refs.parse_repo_tag(repo, request.query.get("tag") or None)
    svc.tag(img, ref)
    daemon_of(request).sources.image("tag", img.id, ref.familiar())
    return web.Response(status=201)


async def delete(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    name = request.match_info["name"]
    async with svc.lock:
        img_id, known = svc.find_quiet(name) or "", set(svc.images)
        records = await asyncio.to_thread(svc.delete, name, qbool(request, "force"), not qbool(request, "noprune"))
    daemon_of(request).sources.image_records(records, known, img_id)
    return json_response(records)


async def prune(request: web.Request) -> web.StreamResponse:
    svc = _images(request)
    async with svc.lock:
        known = set(svc.images)
        result = await asyncio.to_thread(svc.prune, flt.parse(request.query.get("filters")))
    sources = daemon_of(request).sources
    sources.image_records(result.get("ImagesDeleted"), known)
    sources.pruned("image", result.get("SpaceReclaimed", 0))
    return json_response(result)


def setup(router: Router) -> None:
    router.add("POST", "/images/create", create)
    router.add("GET", "/images/json", list_)
    router.add("POST", "/images/prune", prune)
    router.add("GET", "/images/{name:.+}/json", inspect)
    router.add("GET", "/images/{name:.+}/history", history)
    router.add("POST", "/images/{name:.+}/tag", tag)
    router.add("DELETE", "/images/{name:.+}", delete)
