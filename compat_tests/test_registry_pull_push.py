"""Pull, push and login through the stock CLI and docker-py against real registries on 127.0.0.1.

The registries are Debian's docker-registry (tests/registry_fixtures.py): anonymous, htpasswd
behind TLS, and bearer tokens. Images are made from busybox-static here and pushed by our own
push; multi-arch indexes and OCI manifests are pushed with the registry client, and skopeo
cross-checks the formats. Nothing talks to anything but 127.0.0.1: docker.io names are only ever
pulled by a daemon pinned to a loopback mirror (--registry-mirrors-only).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bocker_engine.registry.client import Registry
from bocker_engine.registry.config import RegistryConfig
from bocker_engine.registry.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from bocker_engine.registry.reference import parse
from tests.daemon import Daemon
from tests.images import busybox_rootfs_tar
from tests.registry_fixtures import RegistryHandle, start_registry

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/docker-registry"), reason="needs Debian's docker-registry package"
)

HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reg() -> Iterator[RegistryHandle]:
    with start_registry(None, mode="anonymous") as r:
        yield r


def make_image(dm: Daemon, name: str, images: list[str], files: dict[str, bytes] | None = None) -> str:
    """A busybox image whose layer no other image has (a marker file), tagged `name`."""
    extra = {"marker.txt": uuid.uuid4().hex.encode(), **(files or {})}
    with tempfile.NamedTemporaryFile(suffix=".tar", dir="/var/tmp") as f:
        f.write(busybox_rootfs_tar(extra))
        f.flush()
        dm.out("import", "--change", 'CMD ["sh"]', f.name, name)
    images.append(name)
    return name


def repo(reg: RegistryHandle, dm: Daemon, name: str) -> str:
    # One registry serves both storage drivers' daemons: keep their repositories apart.
    return f"{reg.host}/{dm.driver}/{name}"


def image_ids(dm: Daemon) -> set[str]:
    return set(dm.out("images", "-aq", "--no-trunc").split())


def layer_count(dm: Daemon) -> int:
    return len(os.listdir(os.path.join(dm.data_root, "image", dm.driver, "layerdb", "sha256")))


def inspect(dm: Daemon, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(dm.out("image", "inspect", ref))[0]
    return out


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- images pushed with the registry client ------------------------------------------------------


async def _upload(reg: Registry, ref_s: str, blobs: list[bytes]) -> None:
    ref = parse(ref_s)
    ep = await reg.push_endpoint(ref, None)

    async def once(b: bytes) -> Any:
        yield b

    for b in blobs:
        await reg.upload_blob(ep, ref, once(b), None, digest=sha(b), size=len(b))


async def _put(reg: Registry, ref_s: str, media_type: str, raw: bytes) -> str:
    ref = parse(ref_s)
    ep = await reg.push_endpoint(ref, None)
    return await reg.put_manifest(ep, ref, media_type, raw)


def client_push(
    name: str, arch: str = HOST_ARCH, *, oci: bool = False, tag: bool = True, variant: str = ""
) -> tuple[bytes, str]:
    """Push a one-layer busybox image built here; returns (manifest, digest)."""
    tar = busybox_rootfs_tar({"arch.txt": arch.encode(), "marker.txt": uuid.uuid4().hex.encode()})
    layer = gzip.compress(tar, mtime=0)
    config_d: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
    }
    if variant:
        config_d["variant"] = variant
    config = json.dumps(config_d).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "size": len(config), "digest": sha(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER, "size": len(layer), "digest": sha(layer)}
            ],
        }
    ).encode()

    async def go() -> str:
        r = Registry(RegistryConfig())
        try:
            await _upload(r, name, [layer, config])
            target = name if tag else f"{name.rsplit(':', 1)[0]}@{sha(manifest)}"
            return await _put(r, target, OCI_MANIFEST if oci else DOCKER_MANIFEST, manifest)
        finally:
            await r.close()

    return manifest, asyncio.run(go())


# -- push, pull, run --------------------------------------------------------------------------


def test_push_rmi_pull_run_cli(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = make_image(dm, repo(reg, dm, "cli/box:1"), images)
    r = dm.docker("push", name)
    assert r.returncode == 0, r.stderr
    assert f"The push refers to repository [{name.rsplit(':', 1)[0]}]" in r.stdout
    assert "Pushed" in r.stdout
    digest = r.stdout.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    assert inspect(dm, name)["RepoDigests"] == [f"{name.rsplit(':', 1)[0]}@{digest}"]
    # Pushing again finds everything in place and yields the same manifest.
    r = dm.docker("push", name)
    assert r.returncode == 0 and "Layer already exists" in r.stdout and digest in r.stdout, r.stdout

    before = layer_count(dm)
    dm.out("rmi", name)
    assert layer_count(dm) == before - 1
    r = dm.docker("pull", name)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {digest}" in r.stdout
    assert f"Status: Downloaded newer image for {name}" in r.stdout
    assert inspect(dm, name)["RepoDigests"] == [f"{name.rsplit(':', 1)[0]}@{digest}"]
    assert dm.out("run", "--rm", name, "cat", "/marker.txt")
    r = dm.docker("pull", name)
    assert "Status: Image is up to date for " + name in r.stdout
    out = dm.out("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
    assert f"{name.rsplit(':', 1)[0]} 1 {digest}" in out.splitlines()


def test_pull_by_digest_and_all_tags(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    base = repo(reg, dm, "tags/box")
    one = make_image(dm, f"{base}:one", images)
    two = make_image(dm, f"{base}:two", images)
    dm.out("push", one)
    dm.out("push", two)
    digest = inspect(dm, one)["RepoDigests"][0].split("@")[1]
    dm.out("rmi", one, two)
    r = dm.docker("pull", f"{base}@{digest}")
    assert r.returncode == 0, r.stderr
    assert f"Status: Downloaded newer image for {base}@{digest}" in r.stdout
    images.append(f"{base}@{digest}")
    out = dm.out("images", "--digests", "--format", "{{.Tag}} {{.Digest}}", base)
    assert f"<none> {digest}" in out.splitlines()
    r = dm.docker("pull", "-a", base)
    assert r.returncode == 0, r.stderr
    assert f"Status: Downloaded newer image for {base}" in r.stdout
    tags = dm.out("images", "--format", "{{.Tag}}", base).split()
    assert {"one", "two"} <= set(tags)


def test_run_pulls_a_missing_image(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = make_image(dm, repo(reg, dm, "autopull/box:1"), images)
    dm.out("push", name)
    dm.out("rmi", name)
    r = dm.docker("run", "--rm", name, "cat", "/marker.txt")
    assert r.returncode == 0, r.stderr
    assert f"Unable to find image '{name}' locally" in r.stderr
    assert len(r.stdout.strip()) == 32
    dm.out("rmi", name)
    assert len(dm.client.containers.run(name, "cat /marker.txt", remove=True).strip()) == 32


def test_unknown_image(dm: Daemon, reg: RegistryHandle) -> None:
    name = repo(reg, dm, "nobody/here:1")
    r = dm.docker("pull", name)
    assert r.returncode != 0
    msg = f"pull access denied for {name.rsplit(':', 1)[0]}, repository does not exist or may require 'docker login'"
    assert msg in r.stderr
    r = dm.docker("run", "--rm", name)
    assert r.returncode == 125 and msg in r.stderr
    r = dm.docker("pull", repo(reg, dm, "cli/box:no-such-tag"))
    assert r.returncode != 0 and "not found" in r.stderr


def test_dockerpy_push_pull(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = make_image(dm, repo(reg, dm, "py/box:v1"), images)
    repository = name.rsplit(":", 1)[0]
    events = list(dm.client.images.push(repository, tag="v1", stream=True, decode=True))
    aux = [e["aux"] for e in events if "aux" in e]
    assert aux and aux[0]["Tag"] == "v1" and aux[0]["Digest"].startswith("sha256:"), events
    assert not [e for e in events if "error" in e]
    dm.client.images.remove(name)
    stream = list(dm.client.api.pull(repository, tag="v1", stream=True, decode=True))
    statuses = [e.get("status", "") for e in stream]
    for expected in ("Pulling fs layer", "Download complete", "Pull complete"):
        assert expected in statuses, statuses
    assert any(e.get("status") == "Downloading" and e.get("progressDetail", {}).get("total") for e in stream)
    img = dm.client.images.pull(repository, tag="v1")
    assert img.attrs["RepoDigests"] == [f"{repository}@{aux[0]['Digest']}"]
    assert dm.client.images.get_registry_data(name).id == aux[0]["Digest"]


def test_cross_repository_mount(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    src = make_image(dm, repo(reg, dm, "mount/src:1"), images)
    dm.out("push", src)
    dm.out("rmi", src)
    dm.out("pull", src)  # the layer now comes from mount/src in this registry
    dst = repo(reg, dm, "mount/dst:1")
    dm.out("tag", src, dst)
    images.append(dst)
    r = dm.docker("push", dst)
    assert r.returncode == 0, r.stderr
    assert f"Mounted from {dm.driver}/mount/src" in r.stdout


# -- formats ----------------------------------------------------------------------------------


def test_multi_arch_index(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = repo(reg, dm, "multi/box:1")
    base = name.rsplit(":", 1)[0]
    amd, amd_d = client_push(name, "amd64", tag=False, oci=True)
    arm, arm_d = client_push(name, "arm64", tag=False, oci=True, variant="v8")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": amd_d,
                    "size": len(amd),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": arm_d,
                    "size": len(arm),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
            ],
        }
    ).encode()

    async def put() -> str:
        r = Registry(RegistryConfig())
        try:
            return await _put(r, name, OCI_INDEX, index)
        finally:
            await r.close()

    index_digest = asyncio.run(put())
    images.append(name)
    r = dm.docker("pull", "--platform", "linux/arm64", name)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {index_digest}" in r.stdout
    info = inspect(dm, name)
    assert info["Architecture"] == "arm64" and f"{base}@{index_digest}" in info["RepoDigests"]
    if HOST_ARCH not in ("amd64", "arm64"):
        return
    dm.out("rmi", name)
    dm.out("pull", name)
    assert inspect(dm, name)["Architecture"] == HOST_ARCH
    assert dm.out("run", "--rm", name, "cat", "/arch.txt") == HOST_ARCH
    r = dm.docker("pull", "--platform", "linux/s390x", name)
    assert r.returncode != 0 and "no matching manifest for linux/s390x" in r.stderr


def test_oci_manifest(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = repo(reg, dm, "oci/box:1")
    _, digest = client_push(name, oci=True)
    img = dm.client.images.pull(name.rsplit(":", 1)[0], tag="1")
    images.append(name)
    assert img.attrs["RepoDigests"] == [f"{name.rsplit(':', 1)[0]}@{digest}"]
    assert dm.client.containers.run(name, "cat /arch.txt", remove=True) == HOST_ARCH.encode()


# -- failures ---------------------------------------------------------------------------------


def test_corrupted_blob(dm: Daemon, reg: RegistryHandle, images: list[str]) -> None:
    name = make_image(dm, repo(reg, dm, "corrupt/box:1"), images)
    dm.out("push", name)
    dm.out("rmi", name)
    manifest_digest = ""

    async def layer_digest() -> str:
        nonlocal manifest_digest
        r = Registry(RegistryConfig())
        try:
            _, m = await r.resolve(parse(name), None)
            manifest_digest = m.digest
            return m.layers[0].digest
        finally:
            await r.close()

    blob = reg.blob_path(asyncio.run(layer_digest()))
    good = blob.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    blob.write_bytes(bytes(bad))
    before_ids, before_layers = image_ids(dm), layer_count(dm)
    r = dm.docker("pull", name)
    assert r.returncode != 0
    assert "verification failed" in r.stderr or "digest" in r.stderr, r.stderr
    assert image_ids(dm) == before_ids
    assert layer_count(dm) == before_layers
    assert dm.docker("image", "inspect", name).returncode != 0
    blob.write_bytes(good)
    r = dm.docker("pull", name)
    assert r.returncode == 0, r.stderr
    assert manifest_digest in r.stdout


def test_registry_goes_away_mid_pull(dm: Daemon, images: list[str], tmp_path: Path) -> None:
    storage = tmp_path / "reg"
    # A big, incompressible layer (stored uncompressed) so that the pull is still running when the
    # registry is killed.
    tar_path = tmp_path / "big.tar"
    import tarfile

    with tarfile.open(tar_path, "w") as tf:
        for i in range(6):
            data = tmp_path / f"f{i}"
            with open(data, "wb") as f:
                for _ in range(32):
                    f.write(os.urandom(1 << 20))
            tf.add(data, arcname=f"big/f{i}")
            data.unlink()
    layer = tar_path.read_bytes()
    config = json.dumps(
        {"architecture": HOST_ARCH, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha(config)},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": len(layer), "digest": sha(layer)}
            ],
        }
    ).encode()

    def serve() -> RegistryHandle:
        return start_registry(storage)

    r1 = serve()
    try:
        name = f"{r1.host}/{dm.driver}/gone/big:1"

        async def push() -> None:
            c = Registry(RegistryConfig())
            c.upload_chunk_size = 64 << 20
            try:
                await _upload(c, name, [config])
                ref = parse(name)
                ep = await c.push_endpoint(ref, None)

                async def chunks() -> Any:
                    for i in range(0, len(layer), 8 << 20):
                        yield layer[i : i + (8 << 20)]

                await c.upload_blob(ep, ref, chunks(), None)
                await _put(c, name, DOCKER_MANIFEST, manifest)
            finally:
                await c.close()

        asyncio.run(push())
        before_ids, before_layers = image_ids(dm), layer_count(dm)
        api = dm.api()
        t0 = time.monotonic()
        killed = False
        errors = []
        for event in api.pull(name.rsplit(":", 1)[0], tag="1", stream=True, decode=True):
            if not killed and event.get("status") == "Downloading":
                r1.kill()
                killed = True
            if "error" in event:
                errors.append(event["error"])
        api.close()
        assert killed and errors, "the pull finished before the registry went away"
        assert time.monotonic() - t0 < 60
        assert image_ids(dm) == before_ids and layer_count(dm) == before_layers
    finally:
        r1.stop()
    r2 = serve()  # same storage, new port
    try:
        name2 = f"{r2.host}/{dm.driver}/gone/big:1"
        images.append(name2)
        r = dm.docker("pull", name2)
        assert r.returncode == 0, r.stderr
    finally:
        r2.stop()


# -- authentication ---------------------------------------------------------------------------


def test_login_htpasswd_tls(dm: Daemon, images: list[str]) -> None:
    with start_registry(None, mode="htpasswd-tls") as tls:
        r = dm.docker("login", tls.host, "-u", tls.username, "-p", "wrong")
        assert r.returncode != 0 and "401 Unauthorized" in r.stderr, r.stderr
        r = dm.docker("login", tls.host, "-u", tls.username, "--password-stdin", input=tls.password)
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
        try:
            name = make_image(dm, f"{tls.host}/private/box:1", images)
            dm.out("push", name)
            dm.out("rmi", name)
            dm.out("pull", name)
            assert dm.out("run", "--rm", name, "echo", "ok") == "ok\n"
        finally:
            dm.docker("logout", tls.host)
        assert dm.client.login(tls.username, tls.password, registry=tls.host)["Status"] == "Login Succeeded"


def test_token_auth(dm: Daemon, images: list[str]) -> None:
    with start_registry(None, mode="token") as tok:
        name = f"{tok.host}/private/box:1"
        r = dm.docker("pull", name)
        assert r.returncode != 0 and "pull access denied" in r.stderr, r.stderr
        r = dm.docker("run", "--rm", name)
        assert r.returncode == 125 and "pull access denied" in r.stderr
        r = dm.docker("login", tok.host, "-u", tok.username, "--password-stdin", input=tok.password)
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
        try:
            make_image(dm, name, images)
            r = dm.docker("push", name)
            assert r.returncode == 0, r.stderr
            dm.out("rmi", name)
            assert dm.out("run", "--rm", name, "echo", "ok") == "ok\n"
        finally:
            dm.docker("logout", tok.host)


# -- other tools, mirrors ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")
def test_skopeo_cross_check(dm: Daemon, reg: RegistryHandle, images: list[str], tmp_path: Path) -> None:
    ours = make_image(dm, repo(reg, dm, "skopeo/ours:1"), images)
    dm.out("push", ours)
    skopeo = ["skopeo", "--insecure-policy"]
    r = subprocess.run(
        [*skopeo, "copy", "--src-tls-verify=false", f"docker://{ours}", f"oci:{tmp_path / 'oci'}:ours"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "ours"
    # And the other way round: an archive from our save, pushed by skopeo, pulled by us.
    archive = tmp_path / "saved.tar"
    theirs_src = make_image(dm, "skopeo-src:1", images)
    dm.out("save", theirs_src, "-o", str(archive))
    theirs = repo(reg, dm, "skopeo/theirs:1")
    r = subprocess.run(
        [*skopeo, "copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{theirs}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    images.append(theirs)
    r = dm.docker("pull", theirs)
    assert r.returncode == 0, r.stderr
    assert dm.out("run", "--rm", theirs, "cat", "/marker.txt") == dm.out(
        "run", "--rm", theirs_src, "cat", "/marker.txt"
    )


def test_mirror_only_daemon(dm: Daemon, reg: RegistryHandle) -> None:
    """docker.io names go to the mirror and nowhere else (the daemon cannot fall back to Hub)."""
    mirrored = f"{reg.host}/library/busybox:latest"
    dm.out("tag", "busybox", mirrored)
    try:
        dm.out("push", mirrored)
    finally:
        dm.docker("rmi", mirrored)
    other = Daemon(dm.driver, extra_args=["--registry-mirror", reg.url, "--registry-mirrors-only"])
    try:
        other.start()
        r = other.docker("pull", "busybox")
        assert r.returncode == 0, r.stderr + other.log()
        assert "Status: Downloaded newer image for busybox:latest" in r.stdout
        assert "docker.io/library/busybox:latest" in r.stdout
        assert other.out("run", "--rm", "busybox", "echo", "mirrored") == "mirrored\n"
        assert other.client.images.pull("busybox", tag="latest").tags == ["busybox:latest"]
        r = other.docker("pull", "no-such-image-here")
        assert r.returncode != 0 and "pull access denied for no-such-image-here" in r.stderr
    finally:
        other.cleanup()
