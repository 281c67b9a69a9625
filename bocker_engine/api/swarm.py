"""Swarm endpoints, answered as a dockerd that is in no swarm answers them.

Clients treat a 503 from these as "no swarm" (docker-py's Swarm model, compose, test
teardowns that force-leave); a 404 breaks them. Every method on every swarm path answers
like moby's cluster package when the node has not joined: `errNoManager` for manager
actions, `errNoSwarm` for leave.
"""

from __future__ import annotations

from aiohttp import web

from bocker_engine.api.toolkit import Router
from bocker_engine.errors import Unavailable

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm '
    "and try again."
)
NOT_IN_SWARM = "This node is not part of a swarm"

# dockerd's swarm routes (the v1.44 swagger's), method, path and operation.
ROUTES = [
    ("GET", "/swarm", "SwarmInspect"),
    ("POST", "/swarm/init", "SwarmInit"),
    ("POST", "/swarm/join", "SwarmJoin"),
    ("POST", "/swarm/leave", "SwarmLeave"),
    ("POST", "/swarm/update", "SwarmUpdate"),
    ("GET", "/swarm/unlockkey", "SwarmUnlockkey"),
    ("POST", "/swarm/unlock", "SwarmUnlock"),
    ("GET", "/nodes", "NodeList"),
    ("GET", "/nodes/{id}", "NodeInspect"),
    ("DELETE", "/nodes/{id}", "NodeDelete"),
    ("POST", "/nodes/{id}/update", "NodeUpdate"),
    ("GET", "/services", "ServiceList"),
    ("POST", "/services/create", "ServiceCreate"),
    ("GET", "/services/{id}", "ServiceInspect"),
    ("DELETE", "/services/{id}", "ServiceDelete"),
    ("POST", "/services/{id}/update", "ServiceUpdate"),
    ("GET", "/services/{id}/logs", "ServiceLogs"),
    ("GET", "/tasks", "TaskList"),
    ("GET", "/tasks/{id}", "TaskInspect"),
    ("GET", "/tasks/{id}/logs", "TaskLogs"),
    ("GET", "/secrets", "SecretList"),
    ("POST", "/secrets/create", "SecretCreate"),
    ("GET", "/secrets/{id}", "SecretInspect"),
    ("DELETE", "/secrets/{id}", "SecretDelete"),
    ("POST", "/secrets/{id}/update", "SecretUpdate"),
    ("GET", "/configs", "ConfigList"),
    ("POST", "/configs/create", "ConfigCreate"),
    ("GET", "/configs/{id}", "ConfigInspect"),
    ("DELETE", "/configs/{id}", "ConfigDelete"),
    ("POST", "/configs/{id}/update", "ConfigUpdate"),
]


async def not_a_manager(request: web.Request) -> web.StreamResponse:
    raise Unavailable(NOT_A_MANAGER)


async def leave(request: web.Request) -> web.StreamResponse:
    raise Unavailable(NOT_IN_SWARM)


def setup(router: Router) -> None:
    for method, path, _ in ROUTES:
        router.add(method, path, leave if path == "/swarm/leave" else not_a_manager)
