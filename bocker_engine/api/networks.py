"""/networks/...: list, inspect, create, remove, prune, connect, disconnect."""

from __future__ import annotations

from aiohttp import web

from bocker_engine.api.toolkit import Router, daemon_of, json_response, qbool
from bocker_engine.api.validation import read_body
from bocker_engine.engine import filters as flt
from bocker_engine.engine.networks import NetworkService
from bocker_engine.errors import InvalidParameter


def _svc(request: web.Request) -> NetworkService:
    return daemon_of(request).networks


def _event(request: web.Request, action: str, nid: str, name: str, extra: dict[str, str] | None = None) -> None:
    daemon_of(request).event("network", action, nid, {"name": name, "type": "bridge", **(extra or {})})


async def list_(request: web.Request) -> web.StreamResponse:
    return json_response(_svc(request).list_networks(flt.parse(request.query.get("filters"))))


async def inspect(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    return json_response(svc.inspect(svc.get(request.match_info["id"]), qbool(request, "verbose")))


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "NetworkCreate", {})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid network config")
    n, warning = await _svc(request).create(body)
    _event(request, "create", n.id, n.name)
    return json_response({"Id": n.id, "Warning": warning}, status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    n = await _svc(request).remove(request.match_info["id"])
    _event(request, "destroy", n.id, n.name)
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    ids = dict(svc.names)
    gone = await svc.prune(flt.parse(request.query.get("filters")))
    for name in gone:
        _event(request, "destroy", ids.get(name, ""), name)
    daemon_of(request).sources.pruned("network")
    return json_response({"NetworksDeleted": gone})


async def connect(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "NetworkConnect", {})
    if not isinstance(body, dict) or not body.get("Container"):
        raise InvalidParameter("a container is required")
    svc = _svc(request)
    n = svc.get(request.match_info["id"])
    await svc.connect(n.id, body["Container"], body.get("EndpointConfig"))
    c = daemon_of(request).containers.get(body["Container"])
    _event(request, "connect", n.id, n.name, {"container": c.id})
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, "NetworkDisconnect", {})
    if not isinstance(body, dict) or not body.get("Container"):
        raise InvalidParameter("a container is required")
    svc = _svc(request)
    n = svc.get(request.match_info["id"])
    await svc.disconnect(n.id, body["Container"], bool(body.get("Force")))
    c = daemon_of(request).containers.get(body["Container"])
    _event(request, "disconnect", n.id, n.name, {"container": c.id})
    return web.Response(status=200)


def setup(router: Router) -> None:
    router.add("GET", "/networks", list_)
    router.add("POST", "/networks/create", create)
    router.add("POST", "/networks/prune", prune)
    router.add("GET", "/networks/{id}", inspect)
    router.add("DELETE", "/networks/{id}", remove)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
