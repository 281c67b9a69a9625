"""Registry-facing endpoints: pull (images/create?fromImage), push, /auth, save, load, export."""

from __future__ import annotations

from aiohttp import web

from bocker_engine.api.app import Router
from bocker_engine.errors import NotImplementedYet


async def pull(request: web.Request) -> web.StreamResponse:
    raise NotImplementedYet("pulling images from registries is not implemented yet")


def setup(router: Router) -> None:
    pass
