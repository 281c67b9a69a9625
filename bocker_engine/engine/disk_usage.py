"""`docker system df`: what images, containers, volumes and the build cache hold on disk.

Images as dockerd counts them: Size is the image's whole chain, SharedSize what of it is in
layers other images use too, Containers how many containers use it; LayersSize counts each layer
that an image uses once. Containers with SizeRw (their own layer) and SizeRootFs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bocker_engine.errors import InvalidParameter

if TYPE_CHECKING:
    from bocker_engine.engine.containers import ContainerService
    from bocker_engine.engine.images import ImageService

TYPES = ("container", "image", "volume", "build-cache")

# The volume service plugs in here: a coroutine answering dockerd's Volume objects with UsageData.
VolumeUsage = Callable[[], Awaitable[list[dict[str, Any]]]]


async def _no_volumes() -> list[dict[str, Any]]:
    return []


def image_usage(images: ImageService, containers: ContainerService) -> tuple[int, list[dict[str, Any]]]:
    layers_of = {
        iid: [layer.chain_id for layer in images.layers.ancestry(img.top_layer)] for iid, img in images.images.items()
    }
    refs: Counter[str] = Counter()
    for chains in layers_of.values():
        refs.update(set(chains))
    sizes = {chain: images.layers.get(chain).size for chain in refs}
    used: Counter[str] = Counter(c.image_id for c in containers.containers.values())
    out = []
    for iid, img in sorted(images.images.items(), key=lambda kv: -kv[1].created_unix):
        s = images.summary(img, used.get(iid, 0))
        s["SharedSize"] = sum(sizes[ch] for ch in set(layers_of[iid]) if refs[ch] > 1)
        out.append(s)
    return sum(sizes.values()), out


async def disk_usage(
    images: ImageService,
    containers: ContainerService,
    types: list[str],
    volumes: VolumeUsage = _no_volumes,
) -> dict[str, Any]:
    for t in types:
        if t not in TYPES:
            raise InvalidParameter(f"unknown object type: {t}")
    wanted = set(types) if types else set(TYPES)
    out: dict[str, Any] = {"LayersSize": 0, "Images": None, "Containers": None, "Volumes": None, "BuildCache": None}
    if "image" in wanted:
        out["LayersSize"], out["Images"] = image_usage(images, containers)
    if "container" in wanted:
        out["Containers"] = await containers.list_containers(True, -1, True, {})
    if "volume" in wanted:
        out["Volumes"] = await volumes()
    if "build-cache" in wanted:
        out["BuildCache"] = []  # no builder yet: nothing cached
    return out
