"""What the `docker build` tests share: a context on disk, a CLI build, the check that a build
left nothing behind, and the clean-up of the dangling images builds leave."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.daemon import Daemon


def build_ctx(tmp_path: Any, files: Mapping[str, str | bytes], name: str = "ctx") -> str:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    for fname, data in files.items():
        p = root / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(root)


def build(dm: Daemon, ctx: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = dm.docker("build", *args, ctx, timeout=180)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def no_build_leftovers(dm: Daemon) -> None:
    assert dm.out("ps", "-aq").split() == []
    mounts = os.path.join(dm.base, "data", "image", dm.driver, "layerdb", "mounts")
    assert [m for m in os.listdir(mounts) if m.startswith("build-")] == []
    builds = os.path.join(dm.base, "data", "image", dm.driver, "layerdb", "tmp", "builds")
    assert not os.path.isdir(builds) or os.listdir(builds) == []


@pytest.fixture(autouse=True)
def prune_dangling(dm: Daemon) -> Iterator[None]:
    """Builds leave dangling intermediate images (as dockerd's do); other tests expect none."""
    yield
    dm.clean_containers()
    for _ in range(20):
        dm.out("image", "prune", "-f")
        if not dm.out("images", "-q", "--filter", "dangling=true"):
            break
