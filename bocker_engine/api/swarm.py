"""Swarm endpoints, answered as a dockerd that is in no swarm answers them.

Clients treat a 503 from these as "no swarm" (docker-py's Swarm model, compose, test
teardowns that force-leave); a 404 breaks them. Every method on every swarm path answers
like moby's cluster package when the node has not joined: `errNoManager` for manager
actions, `errNoSwarm` for leave.
"""

from __future__ import annotations

from aiohttp import web

from bocker_engine.api.app import Router
from bocker_engine.errors import Unavailable

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm '
    "and try again."
)
NOT_IN_SWARM = "This node is not part of a swarm"

# Paths below each resource that dockerd serves; all methods get the same answer.
_PATHS = [
    "/swarm",
    "/swarm/init",
    "/swarm/join",
    "/swarm/update",
    "/swarm/unlockkey",
    "/swarm/unlock",
    *(
        path
        for resource in ("nodes", "services", "tasks", "secrets", "configs")
        for path in (
            f"/{resource}",
            f"/{resource}/create",
            f"/{resource}/{{id}}",
            f"/{resource}/{{id}}/update",
            f"/{resource}/{{id}}/logs",
        )
    ),
]


async def not_a_manager(request: web.Request) -> web.StreamResponse:
    raise Unavailable(NOT_A_MANAGER)


async def leave(request: web.Request) -> web.StreamResponse:
    raise Unavailable(NOT_IN_SWARM)


def setup(router: Router) -> None:
    router.add("*", "/swarm/leave", leave)
    for path in _PATHS:
        router.add("*", path, not_a_manager)
