"""docker build beyond a local context: --cache-from with pulled images, --platform, remote
contexts (a tarball URL, git), heredocs, and a build cancelled by the client hanging up."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.daemon import DOCKER, Daemon, wait_until
from tests.registry_fixtures import RegistryHandle, start_registry

needs_registry = pytest.mark.skipif(
    not os.path.exists("/usr/bin/docker-registry"), reason="needs Debian's docker-registry package"
)


@pytest.fixture(scope="module")
def reg() -> Iterator[RegistryHandle]:
    with start_registry(None, mode="anonymous") as r:
        yield r


@pytest.fixture(autouse=True)
def _prune_dangling(dm: Daemon) -> Iterator[None]:
    """Builds leave dangling intermediate images (as dockerd's do); other tests expect none."""
    yield
    dm.clean_containers()
    for _ in range(20):
        dm.out("image", "prune", "-f")
        if not dm.out("images", "-q", "--filter", "dangling=true"):
            break


def _ctx(tmp_path: Any, files: Mapping[str, str | bytes], name: str = "ctx") -> str:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    for fname, data in files.items():
        p = root / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(root)


def _build(dm: Daemon, ctx: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = dm.docker("build", *args, ctx, timeout=180)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _image_id(dm: Daemon, ref: str) -> str:
    return dm.out("image", "inspect", "--format", "{{.Id}}", ref).strip()


def _no_build_leftovers(dm: Daemon) -> None:
    assert dm.out("ps", "-aq").split() == []
    mounts = os.path.join(dm.base, "data", "image", dm.driver, "layerdb", "mounts")
    assert [m for m in os.listdir(mounts) if m.startswith("build-")] == []
    builds = os.path.join(dm.base, "data", "image", dm.driver, "layerdb", "tmp", "builds")
    assert not os.path.isdir(builds) or os.listdir(builds) == []


# ---- --cache-from -------------------------------------------------------------------------------

CACHED_DOCKERFILE = """FROM busybox
ENV GREETING=hello
COPY f /f
RUN cat /f > /copied && echo built >> /copied
CMD ["cat", "/copied"]
"""


@needs_registry
def test_cache_from_a_pulled_image(dm: Daemon, reg: RegistryHandle, images: list[str], tmp_path: Any) -> None:
    ref = f"{reg.host}/{dm.driver}/cachefrom:1"
    images.append(ref)
    ctx = _ctx(tmp_path, {"Dockerfile": CACHED_DOCKERFILE, "f": "content\n"})
    _build(dm, ctx, "-t", ref)
    built = _image_id(dm, ref)
    dm.out("push", ref)
    dm.out("rmi", ref)  # and its intermediate images: nothing of the build is left
    assert dm.docker("image", "inspect", built).returncode != 0
    dm.out("pull", ref)
    assert _image_id(dm, ref) == built

    # A pulled image has no parent links: without --cache-from every step runs again.
    r = _build(dm, ctx)
    assert "Using cache" not in r.stdout
    assert "Running in" in r.stdout

    r = _build(dm, ctx, "--cache-from", ref, "-t", "cachefrom:local")
    images.append("cachefrom:local")
    assert r.stdout.count(" ---> Using cache\n") == 4, r.stdout
    assert "Running in" not in r.stdout
    assert _image_id(dm, "cachefrom:local") == built
    assert dm.out("run", "--rm", "cachefrom:local") == "content\nbuilt\n"

    # docker-py's cache_from, and a changed step: the steps before it still come from the cache.
    img, logs = dm.client.images.build(path=ctx, cache_from=[ref], tag="cachefrom:py")
    images.append("cachefrom:py")
    assert img.id == built
    (tmp_path / "ctx" / "f").write_text("changed\n")
    r = _build(dm, ctx, "--cache-from", ref, "-t", "cachefrom:changed")
    images.append("cachefrom:changed")
    assert r.stdout.count(" ---> Using cache\n") == 1, r.stdout  # ENV only
    assert dm.out("run", "--rm", "cachefrom:changed") == "changed\nbuilt\n"
    # An unknown --cache-from image is skipped (never pulled), and as with dockerd, local images
    # that are no ancestors of a --cache-from image are not used either: nothing is cached here,
    # though the build just before made every step locally.
    r = _build(dm, ctx, "--cache-from", f"{reg.host}/{dm.driver}/nothing:here")
    assert "Using cache" not in r.stdout
    assert "Using cache" in _build(dm, ctx).stdout
