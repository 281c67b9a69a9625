"""/volumes: create, list, inspect, remove, prune (the `local` driver)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool
from bocker_engine.api.validation import read_body
from bocker_engine.engine import filters as flt
from bocker_engine.engine.volumes import VolumeService
from bocker_engine.errors import InvalidParameter


def _svc(request: web.Request) -> VolumeService:
    svc: VolumeService = daemon_of(request).volumes
    return svc


def _str_map(body: dict[str, object], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidParameter(f"invalid {key}: expected an object")
    return {str(k): str(v) for k, v in value.items()}


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "VolumeCreate", {})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid volume config")
    name = body.get("Name") or ""
    if not isinstance(name, str):
        raise InvalidParameter("invalid Name: expected a string")
    v = _svc(request).create(
        name, str(body.get("Driver") or ""), _str_map(body, "DriverOpts"), _str_map(body, "Labels")
    )
    return json_response(v.to_json(), status=201)


async def list_(request: web.Request) -> web.StreamResponse:
    filters = flt.parse(request.query.get("filters"))
    vols = _svc(request).list_volumes(filters)
    return json_response({"Volumes": [v.to_json() for v in vols], "Warnings": None})


async def inspect(request: web.Request) -> web.StreamResponse:
    return json_response(_svc(request).get(request.match_info["name"]).to_json())


async def remove(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    gone = svc.detach(request.match_info["name"], qbool(request, "force"))
    if gone:
        await asyncio.to_thread(svc.purge, gone)
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    filters = flt.parse(request.query.get("filters"))
    svc = _svc(request)
    deleted, gone = svc.prune(filters)
    reclaimed = 0
    for path in gone:
        reclaimed += await asyncio.to_thread(svc.purge, path)
    return json_response({"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def setup(router: Router) -> None:
    router.add("GET", "/volumes", list_)
    router.add("POST", "/volumes/create", create)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
