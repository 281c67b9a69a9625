"""`docker system df [-v]`, docker-py `client.df()`, `docker system prune`, container and image
prune with `until` and `label`/`label!` filters (issue 12)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.daemon import Daemon

MIB = 1024 * 1024


def _image_id(dm: Daemon, ref: str) -> str:
    iid: str = json.loads(dm.out("image", "inspect", ref))[0]["Id"]
    return iid


def test_df_images_containers_sizes(dm: Daemon, images: list[str], busybox_tar: str) -> None:
    # A second image sharing busybox's only layer: all of it is shared.
    dm.out("import", busybox_tar, "dfshare:1")
    images.append("dfshare:1")
    dm.out("run", "--name", "dfw", "busybox", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=2")
    df: dict[str, Any] = dm.client.df()
    bb = _image_id(dm, "busybox")
    by_id = {i["Id"]: i for i in df["Images"]}
    assert by_id[bb]["Containers"] == 1
    assert by_id[bb]["SharedSize"] == by_id[bb]["Size"] > 0
    assert by_id[bb]["RepoTags"] and "busybox:latest" in by_id[bb]["RepoTags"]
    # Each layer once, however many images use it.
    assert df["LayersSize"] >= by_id[bb]["Size"] and df["LayersSize"] < sum(i["Size"] for i in df["Images"])
    (c,) = [c for c in df["Containers"] if c["Names"] == ["/dfw"]]
    assert 2 * MIB <= c["SizeRw"] < 3 * MIB and c["SizeRootFs"] == c["SizeRw"] + by_id[bb]["Size"]
    assert df["Volumes"] == [] and df["BuildCache"] == []
    only = dm.client.api._result(dm.client.api._get(dm.client.api._url("/system/df"), params={"type": "image"}), True)
    assert only["Containers"] is None and only["Images"]
    out = dm.out("system", "df")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["TYPE", "TOTAL"]
    assert [ln.split()[0] for ln in lines[1:]] == ["Images", "Containers", "Local", "Build"]
    verbose = dm.out("system", "df", "-v")
    assert "dfw" in verbose and "Images space usage:" in verbose and "Containers space usage:" in verbose


def test_container_prune_until_and_labels_reclaims_real_space(dm: Daemon) -> None:
    dm.out("run", "--name", "pra", "--label", "pr=1", "busybox", "dd", "if=/dev/zero", "of=/f", "bs=1M", "count=1")
    dm.out("run", "--name", "prb", "--label", "pr=1", "--label", "keep=yes", "busybox", "true")
    dm.out("run", "--name", "prc", "busybox", "true")
    api = dm.api()
    # Created just now: not older than an hour.
    r = api.prune_containers(filters={"until": "1h", "label": "pr=1"})
    assert r["ContainersDeleted"] is None and r["SpaceReclaimed"] == 0
    future = str(int(time.time()) + 60)
    r = api.prune_containers(filters={"until": future, "label": ["pr=1"], "label!": ["keep=yes"]})
    pra = dm.client.containers.list(all=True, filters={"name": "prb"})
    assert [c.name for c in pra] == ["prb"]
    assert len(r["ContainersDeleted"]) == 1 and r["SpaceReclaimed"] >= MIB
    out = dm.out("container", "prune", "-f", "--filter", "label=keep")
    assert "Total reclaimed space" in out
    names = {c.name for c in dm.client.containers.list(all=True)}
    assert "prb" not in names and "prc" in names
    api.close()


def test_image_prune_label_until_and_system_prune(dm: Daemon, images: list[str], busybox_tar: str) -> None:
    dm.out("import", "-c", "LABEL prune=me", "-c", "LABEL team=x", busybox_tar, "prunable:1")
    dm.out("import", "-c", "LABEL prune=me", "-c", "LABEL keep=1", busybox_tar, "prunable:2")
    images.extend(["prunable:1", "prunable:2"])
    api = dm.api()
    r = api.prune_images(filters={"dangling": False, "label": "prune=me", "until": "1h"})
    assert r["ImagesDeleted"] is None
    until = str(time.time() + 60)
    r = api.prune_images(filters={"dangling": False, "label": "prune=me", "label!": "keep=1", "until": until})
    assert [d for d in r["ImagesDeleted"] if "Untagged" in d] == [{"Untagged": "prunable:1"}]
    assert dm.docker("image", "inspect", "prunable:2").returncode == 0
    assert dm.docker("image", "inspect", "busybox").returncode == 0
    # system prune -a with a label only touches what carries it; build prune answers like dockerd.
    dm.out("create", "--name", "sysprune", "--label", "prune=me", "busybox", "true")
    out = dm.out("system", "prune", "-a", "-f", "--filter", "label=prune=me")
    assert "Total reclaimed space" in out
    assert dm.docker("image", "inspect", "prunable:2").returncode != 0
    assert dm.docker("inspect", "sysprune").returncode != 0
    assert dm.docker("image", "inspect", "busybox").returncode == 0
    r = api._result(api._post(api._url("/build/prune")), True)
    assert r == {"CachesDeleted": None, "SpaceReclaimed": 0}
    api.close()
