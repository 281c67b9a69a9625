"""Registry-facing endpoints: pull (images/create?fromImage), push, /auth, save, load, export.

Pull answers with an HTTP error when the manifest cannot be resolved (the CLI's `docker run`
prints it and exits 125, docker-py maps a 404 to ImageNotFound); once the progress stream has
started, errors go in-band.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import cast

from aiohttp import web

from bocker_engine.api.streams import JsonStream, request_chunks
from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool, stream_response
from bocker_engine.api.validation import read_body
from bocker_engine.engine import archive, container_archive
from bocker_engine.engine.distribution import Distribution
from bocker_engine.engine.pipes import drain_thread
from bocker_engine.engine.pull import Puller
from bocker_engine.engine.push import Pusher
from bocker_engine.errors import EngineError, InvalidParameter
from bocker_engine.progress import Message
from bocker_engine.registry import reference as refs
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.manifest import Platform

log = logging.getLogger(__name__)


def _dist(request: web.Request) -> Distribution:
    d: Distribution = daemon_of(request).distribution
    return d


def _auth(request: web.Request) -> AuthConfig | None:
    return AuthConfig.from_header(request.headers.get("X-Registry-Auth"))


async def _in_band(stream: JsonStream, e: Exception) -> None:
    if not isinstance(e, EngineError):
        log.exception("%s", e)
    await stream.error(e)


# ---- pull / push / login --------------------------------------------------------------------


async def pull(request: web.Request) -> web.StreamResponse:
    q = request.query
    image = q.get("fromImage", "")
    tag = q.get("tag", "")
    ref = refs.parse_repo_tag(image, tag) if tag else refs.parse(image)
    all_tags = ref.tag is None and ref.digest is None
    platform = Platform.parse(q["platform"]) if q.get("platform", "").strip() else None
    stream = JsonStream(request)
    puller = Puller(_dist(request), _auth(request), stream.sink, platform)
    # Resolved before the first byte: a missing image is an HTTP error, not a stream message.
    tags = await puller.tags(ref) if all_tags else [ref.tag]
    first = await puller.resolve(ref.with_tag(tags[0]) if all_tags else ref)
    daemon = daemon_of(request)
    try:
        changed = False
        for i, t in enumerate(tags):
            resolved = first if i == 0 else await puller.resolve(ref.with_tag(t))
            img, new = await puller.pull(resolved)
            changed = changed or new
            daemon.event("image", "pull", resolved.ref.familiar(), {"name": resolved.ref.familiar()})
        shown = ref.familiar_name if all_tags else ref.familiar()
        status = "Downloaded newer image for" if changed else "Image is up to date for"
        stream.sink(Message(status=f"Status: {status} {shown}"))
    except Exception as e:
        await _in_band(stream, e)
    return await stream.close()


async def push(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ref = refs.parse(name)
    tag = request.query.get("tag") or ref.tag
    if tag and not refs.is_valid_tag(tag):
        raise InvalidParameter(f"invalid tag format: {tag}")
    repo = ref.with_tag(None)
    auth = _auth(request)
    stream = JsonStream(request)
    try:
        results = await Pusher(_dist(request), auth, stream.sink).push(repo, tag)
        for r in results:
            daemon_of(request).event(
                "image", "push", f"{repo.familiar_name}:{r.tag}", {"name": f"{repo.familiar_name}:{r.tag}"}
            )
    except Exception as e:
        await _in_band(stream, e)
    return await stream.close()


async def auth(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "SystemAuth", {})
    cfg = AuthConfig.from_json(body)
    status, token = await _dist(request).registry.login(cfg)
    return json_response({"Status": status, "IdentityToken": token})


async def distribution_inspect(request: web.Request) -> web.StreamResponse:
    ref = refs.parse(request.match_info["name"]).tagged_or_latest()
    _, m = await _dist(request).registry.resolve(ref, _auth(request))
    platforms = [m.platform.to_json()] if m.platform is not None else []
    desc = {"mediaType": m.media_type, "digest": m.index_digest or m.digest, "size": len(m.raw)}
    return json_response({"Descriptor": desc, "Platforms": platforms})


# ---- save / load / export -------------------------------------------------------------------


async def _stream_tar(
    request: web.Request, chunks: AsyncGenerator[bytes, None], content_type: str
) -> web.StreamResponse:
    resp = stream_response(200)
    resp.content_type = content_type
    resp.enable_chunked_encoding()
    async with contextlib.aclosing(chunks):
        first = await anext(chunks, b"")  # an error before any byte is still an HTTP error
        await resp.prepare(request)
        if first:
            await resp.write(first)
        async for chunk in chunks:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


async def save(request: web.Request) -> web.StreamResponse:
    if "name" in request.match_info:
        names = [request.match_info["name"]]
    else:
        names = request.query.getall("names", [])
        if not names:
            raise InvalidParameter("no images to save: names is required")
    dist = _dist(request)
    items = archive.save_items(dist.images, names)
    with dist.pinned(archive.all_chains(items)):
        chunks = drain_thread(lambda out: archive.write_archive(dist.layers, items, out, dist.temp_file))
        resp = await _stream_tar(request, cast(AsyncGenerator[bytes, None], chunks), "application/x-tar")
    for item in items:
        daemon_of(request).event("image", "save", item.image.id, {"name": item.image.id})
    return resp


async def load(request: web.Request) -> web.StreamResponse:
    quiet = qbool(request, "quiet", True)
    stream = JsonStream(request)
    try:
        loaded = await archive.load(_dist(request), request_chunks(request), quiet, stream.sink)
        for name in loaded:
            daemon_of(request).event("image", "load", name, {"name": name})
    except Exception as e:
        # dockerd answers 200 whatever happens and reports a failed load in the stream; the
        # clients turn that into their own error (the CLI exits 1, docker-py raises).
        await _in_band(stream, e)
    return await stream.close()


async def export(request: web.Request) -> web.StreamResponse:
    async with container_archive.export(daemon_of(request).containers, request.match_info["id"]) as chunks:
        return await _stream_tar(request, cast(AsyncGenerator[bytes, None], chunks), "application/octet-stream")


def setup(router: Router) -> None:
    router.add("POST", "/images/{name:.+}/push", push)
    router.add("POST", "/auth", auth)
    router.add("GET", "/images/get", save)
    router.add("GET", "/images/{name:.+}/get", save)
    router.add("POST", "/images/load", load)
    router.add("GET", "/containers/{id}/export", export)
    router.add("GET", "/distribution/{name:.+}/json", distribution_inspect)
