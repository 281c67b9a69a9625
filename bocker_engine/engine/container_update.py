"""`docker update`: change a container's resource limits and restart policy.

dockerd's rules (daemon/update.go, container.UpdateContainer): zero / empty / null fields mean
"unchanged"; the request is validated like a create; the merge refuses to mix --cpus with a CFS
period or quota already set (and the reverse), and a memory limit above the memory+swap limit
unless both change. A running (or paused) container gets the new limits live, through the same
cgroup code as a start; if the kernel refuses, what was written is rolled back and the stored
configuration stays as it was. A stopped container only has hostconfig.json rewritten, and its
next start applies it. A new restart policy applies from the next exit (engine/restart.py).
"""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING, Any

from bocker_engine.engine.container_config import VALID_RESTART
from bocker_engine.errors import Conflict, EngineError, InvalidParameter, System
from bocker_engine.runtime.cgroup_snapshot import update_or_roll_back
from bocker_engine.runtime.cgroups import Resources

if TYPE_CHECKING:
    from bocker_engine.engine.container import Container
    from bocker_engine.engine.containers import ContainerService

INT_FIELDS = (
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "CpuShares",
    "NanoCpus",
    "CpuPeriod",
    "CpuQuota",
    "BlkioWeight",
)
STR_FIELDS = ("CpusetCpus", "CpusetMems")


def _int(body: dict[str, Any], key: str) -> int:
    v = body.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidParameter(f"json: cannot unmarshal {type(v).__name__} into Go struct field .{key} of type int64")
    return v


def parse_request(body: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The resource fields that change (non-zero; PidsLimit when present) and the restart policy
    (None when its name is empty)."""
    if not isinstance(body, dict):
        raise InvalidParameter("invalid update config: expected a JSON object")
    changes: dict[str, Any] = {}
    for key in INT_FIELDS:
        if v := _int(body, key):
            changes[key] = v
    for key in STR_FIELDS:
        s = body.get(key)
        if s is not None and not isinstance(s, str):
            raise InvalidParameter(f"json: cannot unmarshal into Go struct field .{key} of type string")
        if s:
            changes[key] = s
    if body.get("PidsLimit") is not None:
        # Both 0 and -1 (any negative, historically) mean "unlimited" on update.
        changes["PidsLimit"] = max(_int(body, "PidsLimit"), 0)
    rp = body.get("RestartPolicy")
    if rp is not None and not isinstance(rp, dict):
        raise InvalidParameter("json: cannot unmarshal into Go struct field .RestartPolicy")
    policy = None
    if rp and rp.get("Name"):
        policy = {"Name": rp["Name"], "MaximumRetryCount": _int(rp, "MaximumRetryCount")}
        _validate_restart(policy)
    return changes, policy


def _validate_restart(policy: dict[str, Any]) -> None:
    name, count = policy["Name"], policy["MaximumRetryCount"]
    if name not in VALID_RESTART:
        raise InvalidParameter(f"invalid restart policy '{name}'")
    if name != "on-failure" and count:
        msg = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        raise InvalidParameter(msg + (" and cannot be negative" if count < 0 else ""))
    if count < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")


def merge(hc: dict[str, Any], changes: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
    """The new host config (a copy), or Conflict in dockerd's words."""
    had = {k: hc.get(k) or 0 for k in ("NanoCpus", "CpuPeriod", "CpuQuota", "Memory", "MemorySwap")}
    new = {k: changes.get(k, 0) for k in had}
    if new["NanoCpus"] > 0 and had["CpuPeriod"] > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if new["NanoCpus"] > 0 and had["CpuQuota"] > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if new["CpuPeriod"] > 0 and had["NanoCpus"] > 0:
        raise Conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if new["CpuQuota"] > 0 and had["NanoCpus"] > 0:
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    # dockerd stores memory+swap as twice the memory when a create sets memory alone.
    had_swap = had["MemorySwap"] or (2 * had["Memory"] if had["Memory"] > 0 else 0)
    if new["Memory"] and new["Memory"] > had_swap and not new["MemorySwap"]:
        raise Conflict(
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
        )
    out = copy.deepcopy(hc)
    out.update(changes)
    if policy is not None:
        if hc.get("AutoRemove") and policy["Name"] != "no":
            raise Conflict("Restart policy cannot be updated because AutoRemove is enabled for the container")
        out["RestartPolicy"] = policy
    return out


def _cannot_update(c: Container, e: EngineError) -> EngineError:
    return type(e)(f"Cannot update container {c.id}: {e}")


async def update(svc: ContainerService, ref: str, body: Any) -> list[str]:
    changes, policy = parse_request(body)
    res = Resources.from_host_config(changes)
    warnings = await asyncio.to_thread(svc.cgroups.validate, res, update=True)
    c = svc.get(ref)
    # The container lock orders this after a start in progress, so a starting container gets
    # either the old limits and then this update, or the new ones from its start.
    async with c.lock:
        if c.state.removing or c.state.Dead:
            raise System(f'Cannot update container {c.id}: container is marked for removal and cannot be "update"')
        try:
            new_hc = merge(c.host_config, changes, policy)
        except Conflict as e:
            raise _cannot_update(c, e) from None
        if c.state.Running and not c.state.Restarting:
            try:
                await asyncio.to_thread(update_or_roll_back, svc.cgroups, c.id, res)
            except EngineError as e:
                if c.state.Running:
                    raise _cannot_update(c, e) from None
                # It exited meanwhile: its cgroup is gone, and the next start applies the config.
        old_hc, c.host_config = c.host_config, new_hc
        try:
            svc.save_host_config(c)
        except BaseException:
            c.host_config = old_hc
            raise
    svc.on_event("update", c, {})
    return warnings
