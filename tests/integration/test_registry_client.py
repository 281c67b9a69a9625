"""The registry client against real registries (Debian's docker-registry) and a few fake servers.

Images are made here (a gzip layer tar and a config JSON), pushed with the client, and pulled back.
Every client uses a resolver that refuses all name lookups: nothing may leave 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import socket
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bocker_engine.errors import InvalidParameter, NotFound, Unauthorized, Unavailable
from bocker_engine.registry.auth import AuthConfig
from bocker_engine.registry.client import Registry
from bocker_engine.registry.config import Endpoint, RegistryConfig
from bocker_engine.registry.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Platform,
)
from bocker_engine.registry.reference import Reference, parse
from tests.registry_fixtures import RegistryHandle, start_registry

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/docker-registry"), reason="needs Debian's docker-registry package"
)


class NoDNS(AbstractResolver):
    """Refuses every name lookup and remembers it: IP literals never reach a resolver in aiohttp."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        raise OSError(f"name lookups are not allowed in tests: {host}")

    async def close(self) -> None:
        pass


# -- fixtures -----------------------------------------------------------------------------------


def _policy(user: str | None, repo: str, actions: list[str]) -> list[str]:
    if user == "tester":
        return actions
    if user == "reader" or repo.startswith("public/"):
        return [a for a in actions if a == "pull"]
    return []


@pytest.fixture(scope="module")
def anon() -> Iterator[RegistryHandle]:
    with start_registry(None, mode="anonymous") as reg:
        yield reg


@pytest.fixture(scope="module")
def tls() -> Iterator[RegistryHandle]:
    with start_registry(None, mode="htpasswd-tls") as reg:
        yield reg


@pytest.fixture(scope="module")
def tok() -> Iterator[RegistryHandle]:
    with start_registry(
        None, mode="token", users={"tester": "s3cret-pass", "reader": "read-only"}, token_policy=_policy
    ) as reg:
        yield reg


@pytest.fixture
async def make_client() -> AsyncIterator[Any]:
    made: list[Registry] = []

    def make(config: RegistryConfig | None = None, **kw: Any) -> Registry:
        kw.setdefault("resolver", NoDNS())
        r = Registry(config or RegistryConfig(), **kw)
        r.retry_delay = 0.05
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


@pytest.fixture
async def client(make_client: Any) -> Registry:
    r: Registry = make_client()
    return r


# -- image building -----------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer tar and its diff ID (digest of the uncompressed tar)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    return gzip.compress(tar, mtime=0), sha(tar)


def make_config(diff_ids: list[str], arch: str = "amd64", variant: str = "") -> bytes:
    cfg: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if variant:
        cfg["variant"] = variant
    return json.dumps(cfg).encode()


async def chunks_of(data: bytes, n: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for c in it:
        out += c
    return bytes(out)


class Image:
    def __init__(self, layer: bytes, config: bytes, manifest: bytes, media_type: str) -> None:
        self.layer, self.config, self.manifest, self.media_type = layer, config, manifest, media_type
        self.digest = sha(manifest)


async def push_image(
    reg: Registry,
    ref: Reference,
    auth: AuthConfig | None = None,
    *,
    oci: bool = False,
    arch: str = "amd64",
    variant: str = "",
    content: bytes | None = None,
    tag: bool = True,
) -> Image:
    layer, diff_id = make_layer({"hello.txt": content or f"hello from {ref} {arch}\n".encode()})
    config = make_config([diff_id], arch, variant)
    ep = await reg.push_endpoint(ref, auth)
    progress: list[int] = []
    d, n = await reg.upload_blob(ep, ref, chunks_of(layer), auth, on_progress=progress.append)
    assert (d, n) == (sha(layer), len(layer))
    assert progress and progress[-1] == len(layer) and progress == sorted(progress)
    await reg.upload_blob(ep, ref, chunks_of(config), auth, digest=sha(config), size=len(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [{"mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER, "digest": d, "size": n}],
        }
    ).encode()
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    target = ref if tag else ref.with_digest(sha(manifest))
    assert await reg.put_manifest(ep, target, media_type, manifest, auth) == sha(manifest)
    return Image(layer, config, manifest, media_type)


# -- round trips --------------------------------------------------------------------------------


async def test_push_pull_schema2_chunked(anon: RegistryHandle, client: Registry) -> None:
    client.upload_chunk_size = 64 << 10  # several PATCHes with Content-Range
    ref = parse(f"{anon.host}/me/app:v1")
    content = os.urandom(300 << 10)  # incompressible, so the layer spans several chunks
    img = await push_image(client, ref, content=content)
    ep, m = await client.resolve(ref, None)
    assert ep.url == anon.url and not ep.mirror  # https was tried first and fell back for 127.0.0.1
    assert (m.digest, m.media_type, m.raw) == (img.digest, DOCKER_MANIFEST, img.manifest)
    assert m.index_digest is None
    assert m.config.digest == sha(img.config)
    assert await read_all(client.open_blob(ep, ref, m.config, None)) == img.config
    assert await read_all(client.open_blob(ep, ref, m.layers[0], None)) == img.layer
    assert await client.blob_exists(ep, ref, m.layers[0].digest, None)
    assert not await client.blob_exists(ep, ref, sha(b"nothing"), None)
    # by digest, too
    _, by_digest = await client.resolve(ref.with_digest(img.digest), None)
    assert by_digest.raw == img.manifest
    assert "v1" in await client.tags(ref, None)


async def test_push_pull_oci_monolithic(anon: RegistryHandle, client: Registry) -> None:
    client.monolithic_max = 1 << 20
    ref = parse(f"{anon.host}/me/oci:1")
    layer, diff_id = make_layer({"a": b"a" * 1000})
    ep = await client.push_endpoint(ref, None)
    assert await client.upload_blob(ep, ref, chunks_of(layer), None, digest=sha(layer), size=len(layer)) == (
        sha(layer),
        len(layer),
    )
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        await client.upload_blob(ep, ref, chunks_of(layer), None, digest=sha(b"other"), size=len(layer))
    img = await push_image(client, ref, oci=True)
    _, m = await client.resolve(ref, None)
    assert m.media_type == OCI_MANIFEST and m.digest == img.digest
    assert m.layers[0].media_type == OCI_LAYER_GZIP


@pytest.mark.parametrize("index_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
async def test_multi_arch_index(anon: RegistryHandle, client: Registry, index_type: str) -> None:
    ref = parse(f"{anon.host}/me/multi-{'oci' if index_type == OCI_INDEX else 'docker'}:latest")
    oci = index_type == OCI_INDEX
    amd = await push_image(client, ref, oci=oci, arch="amd64", tag=False)
    arm = await push_image(client, ref, oci=oci, arch="arm64", variant="v8", tag=False)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                {
                    "mediaType": amd.media_type,
                    "digest": amd.digest,
                    "size": len(amd.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": arm.media_type,
                    "digest": arm.digest,
                    "size": len(arm.manifest),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
            ],
        }
    ).encode()
    ep = await client.push_endpoint(ref, None)
    await client.put_manifest(ep, ref, index_type, index)
    _, m = await client.resolve(ref, None, Platform.parse("linux/amd64"))
    assert m.digest == amd.digest and m.index_digest == sha(index)
    _, m = await client.resolve(ref, None, Platform.parse("linux/arm64"))
    assert m.digest == arm.digest and m.platform == Platform("linux", "arm64", "v8")
    _, m = await client.resolve(ref, None)  # the host's platform
    host = Platform.host()
    if host.architecture in ("amd64", "arm64"):
        assert m.digest == (amd if host.architecture == "amd64" else arm).digest
    with pytest.raises(
        NotFound, match=r"^no matching manifest for linux/s390x in the manifest list entries$"
    ):
        await client.resolve(ref, None, Platform.parse("linux/s390x"))


async def test_unknown_repository_and_tag(anon: RegistryHandle, client: Registry) -> None:
    ref = parse(f"{anon.host}/nobody/here:latest")
    with pytest.raises(NotFound) as e:
        await client.resolve(ref, None)
    assert e.value.message == (
        f"pull access denied for {anon.host}/nobody/here, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied"
    )
    await push_image(client, parse(f"{anon.host}/me/tagged:one"))
    with pytest.raises(NotFound) as e:
        await client.resolve(parse(f"{anon.host}/me/tagged:nope"), None)
    assert (
        e.value.message
        == f"manifest for {anon.host}/me/tagged:nope not found: manifest unknown: manifest unknown"
    )


# -- digest verification ------------------------------------------------------------------------


def _tamper(path: Path) -> None:
    """Flips one byte in the middle: same size, different digest."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)


async def test_corrupted_blob_is_rejected_at_the_end(anon: RegistryHandle, client: Registry) -> None:
    ref = parse(f"{anon.host}/me/corrupt:1")
    img = await push_image(client, ref, content=os.urandom(50000))
    ep, m = await client.resolve(ref, None)
    _tamper(anon.blob_path(m.layers[0].digest))
    got = bytearray()
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        async for chunk in client.open_blob(ep, ref, m.layers[0], None):
            got += chunk
    assert len(got) == len(img.layer)  # the whole stream arrived; only the final check fails


async def test_manifest_body_must_match_digest(anon: RegistryHandle, client: Registry) -> None:
    ref = parse(f"{anon.host}/me/badmanifest:1")
    img = await push_image(client, ref)
    _tamper(anon.blob_path(img.digest))
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        await client.resolve(ref.with_digest(img.digest), None)
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        await client.resolve(ref, None)  # by tag: Docker-Content-Digest disagrees with the body


# -- token auth ---------------------------------------------------------------------------------


async def test_token_auth(tok: RegistryHandle, client: Registry) -> None:
    creds = AuthConfig(username="tester", password="s3cret-pass")
    ref = parse(f"{tok.host}/team/app:1")
    img = await push_image(client, ref, creds)
    with pytest.raises(NotFound, match="^pull access denied for 127.0.0.1:"):
        await client.resolve(ref, None)
    tok.token_requests.clear()
    ep, m = await client.resolve(ref, creds)
    assert m.digest == img.digest
    assert await read_all(client.open_blob(ep, ref, m.layers[0], creds)) == img.layer
    _, again = await client.resolve(ref, creds)
    assert again.digest == img.digest
    pulls = [r for r in tok.token_requests if r["scopes"] == ["repository:team/app:pull"]]
    assert len(pulls) == 1 and pulls[0]["basic"] and pulls[0]["account"] == "tester"  # token reused
    # the same scope with other credentials must not reuse tester's token
    reader = AuthConfig(username="reader", password="read-only")
    _, m2 = await client.resolve(ref, reader)
    assert m2.digest == img.digest
    assert len([r for r in tok.token_requests if r["scopes"] == ["repository:team/app:pull"]]) == 2
    with pytest.raises(Unauthorized):
        await push_image(client, parse(f"{tok.host}/team/other:1"), reader)
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        await client.resolve(ref, AuthConfig(username="tester", password="wrong"))


async def test_token_login_and_identity_token(tok: RegistryHandle, client: Registry) -> None:
    status, identity = await client.login(
        AuthConfig(username="tester", password="s3cret-pass", serveraddress=tok.host)
    )
    assert status == "Login Succeeded" and identity
    with pytest.raises(Unauthorized) as e:
        await client.login(AuthConfig(username="tester", password="nope", serveraddress=tok.host))
    assert e.value.message == f"login attempt to {tok.url}/v2/ failed with status: 401 Unauthorized"
    ref = parse(f"{tok.host}/team/refresh:1")
    img = await push_image(client, ref, AuthConfig(identitytoken=identity))
    _, m = await client.resolve(ref, AuthConfig(identitytoken=identity))
    assert m.digest == img.digest
    assert any(r.get("grant_type") == "refresh_token" for r in tok.token_requests)


async def test_anonymous_pull_where_policy_allows(tok: RegistryHandle, client: Registry) -> None:
    ref = parse(f"{tok.host}/public/thing:1")
    img = await push_image(client, ref, AuthConfig(username="tester", password="s3cret-pass"))
    ep, m = await client.resolve(ref, None)
    assert m.digest == img.digest
    assert await read_all(client.open_blob(ep, ref, m.config, None)) == img.config


async def test_cross_repository_mount(tok: RegistryHandle, client: Registry) -> None:
    creds = AuthConfig(username="tester", password="s3cret-pass")
    src, dst = parse(f"{tok.host}/team/src:1"), parse(f"{tok.host}/team/dst:1")
    img = await push_image(client, src, creds)
    ep = await client.push_endpoint(dst, creds)
    layer = sha(img.layer)
    assert not await client.blob_exists(ep, dst, layer, creds)
    tok.token_requests.clear()
    assert await client.mount_blob(ep, dst, layer, "team/src", creds)
    assert sorted(tok.token_requests[-1]["scopes"]) == [
        "repository:team/dst:pull,push",
        "repository:team/src:pull",
    ]
    assert await client.blob_exists(ep, dst, layer, creds)
    assert not await client.mount_blob(ep, dst, sha(b"never pushed"), "team/src", creds)


# -- htpasswd over TLS --------------------------------------------------------------------------


async def test_htpasswd_tls_with_generated_ca(tls: RegistryHandle, make_client: Any) -> None:
    assert tls.certs_dir is not None
    strict = RegistryConfig(certs_dir=str(tls.certs_dir), loopback_insecure=False)
    client: Registry = make_client(strict)
    creds = AuthConfig(username=tls.username, password=tls.password, serveraddress=tls.host)
    assert await client.login(creds) == ("Login Succeeded", "")
    ref = parse(f"{tls.host}/secure/app:1")
    img = await push_image(client, ref, creds)
    ep, m = await client.resolve(ref, creds)
    assert ep.url == tls.url and ep.tls_verify
    assert await read_all(client.open_blob(ep, ref, m.layers[0], creds)) == img.layer
    with pytest.raises(Unauthorized) as e:
        await client.login(AuthConfig(username=tls.username, password="bad", serveraddress=tls.host))
    assert e.value.message == f"login attempt to {tls.url}/v2/ failed with status: 401 Unauthorized"
    with pytest.raises(Unauthorized):
        await client.resolve(ref, AuthConfig(username=tls.username, password="bad"))
    with pytest.raises(NotFound, match="pull access denied"):
        await client.resolve(ref, None)
    # Without the CA, verification fails (and there is no plain-http fallback for a secure registry).
    no_ca: Registry = make_client(RegistryConfig(certs_dir="/nonexistent", loopback_insecure=False))
    with pytest.raises(Unavailable, match="certificate"):
        await no_ca.resolve(ref, creds)
    # Like dockerd, loopback registries are insecure by default: TLS without verification works.
    lax: Registry = make_client(RegistryConfig(certs_dir="/nonexistent"))
    ep, m = await lax.resolve(ref, creds)
    assert ep.url == tls.url and not ep.tls_verify and m.digest == img.digest


# -- mirrors ------------------------------------------------------------------------------------


async def test_mirror_without_fallback(anon: RegistryHandle, make_client: Any) -> None:
    pusher: Registry = make_client()
    img = await push_image(pusher, parse(f"{anon.host}/library/busybox:latest"))
    guard = NoDNS()
    client: Registry = make_client(RegistryConfig(mirrors=[anon.url], mirror_fallback=False), resolver=guard)
    ref = parse("busybox")
    ep, m = await client.resolve(ref, None)
    assert ep == Endpoint(anon.url, "docker.io", mirror=True, tls_verify=False)
    assert m.digest == img.digest
    assert await read_all(client.open_blob(ep, ref, m.layers[0], None)) == img.layer
    with pytest.raises(NotFound, match="^pull access denied for nosuchimage,"):
        await client.resolve(parse("nosuchimage"), None)
    assert guard.lookups == []  # docker.io was never even looked up

    # With fallback (dockerd's behaviour) a miss goes on to Docker Hub: the guard stops it at DNS.
    fallback: Registry = make_client(RegistryConfig(mirrors=[anon.url]), resolver=guard)
    with pytest.raises(Unavailable):
        await fallback.resolve(parse("nosuchimage"), None)
    assert guard.lookups == ["registry-1.docker.io"]
    with pytest.raises(Unavailable, match="no registry mirror"):
        await make_client(RegistryConfig(mirror_fallback=False)).resolve(parse("busybox"), None)


# -- registries that misbehave ------------------------------------------------------------------


async def test_registry_killed_mid_blob(make_client: Any) -> None:
    with start_registry(None, mode="anonymous") as reg:
        client: Registry = make_client()
        ref = parse(f"{reg.host}/big/blob:1")
        ep = await client.push_endpoint(ref, None)
        big = os.urandom(24 << 20)
        digest, size = await client.upload_blob(ep, ref, chunks_of(big, 1 << 20), None)
        stream = client.open_blob(ep, ref, Descriptor(DOCKER_LAYER, digest, size), None)
        first = await stream.__anext__()
        assert first
        reg.kill()

        async def drain() -> None:
            async for _ in stream:
                pass

        with pytest.raises(Unavailable, match="gave up"):
            await asyncio.wait_for(drain(), 30)


class FakeRegistry:
    """A tiny aiohttp server on 127.0.0.1 whose answers each test sets."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.requests: list[web.Request] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeRegistry:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append(request)
            return await handler(request)

        self.app.middlewares.append(record)
        # Handlers that stall on purpose must not hold up teardown.
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fakes() -> AsyncIterator[Any]:
    made: list[FakeRegistry] = []

    async def make(routes: list[web.RouteDef]) -> FakeRegistry:
        f = FakeRegistry()
        f.app.add_routes(routes)
        made.append(await f.start())
        return f

    yield make
    for f in made:
        await f.stop()


BLOB = os.urandom(3 << 20)


async def test_blob_download_resumes_with_range(fakes: Any, client: Registry) -> None:
    calls: list[str | None] = []

    async def blob(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        calls.append(rng)
        if rng is None:
            resp = web.StreamResponse(headers={"Content-Length": str(len(BLOB))})
            await resp.prepare(request)
            await resp.write(BLOB[: len(BLOB) // 3])
            assert request.transport is not None
            request.transport.close()  # the connection drops a third of the way in
            return resp
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        return web.Response(
            status=206,
            body=BLOB[start:],
            headers={"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"},
        )

    fake = await fakes([web.get("/v2/x/blobs/{digest}", blob)])
    ref = parse(f"{fake.host}/x")
    ep = Endpoint(fake.url, fake.host, tls_verify=False)
    assert (
        await read_all(client.open_blob(ep, ref, Descriptor(DOCKER_LAYER, sha(BLOB), len(BLOB)), None))
        == BLOB
    )
    assert calls[0] is None and calls[1] is not None and calls[1] != "bytes=0-"


async def test_stalled_blob_times_out(fakes: Any, make_client: Any) -> None:
    async def blob(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(BLOB))})
        await resp.prepare(request)
        await resp.write(BLOB[:1000])
        await asyncio.sleep(30)
        return resp

    fake = await fakes([web.get("/v2/x/blobs/{digest}", blob)])
    client: Registry = make_client(read_timeout=0.5)
    client.blob_retries = 1
    ep = Endpoint(fake.url, fake.host, tls_verify=False)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(
            read_all(
                client.open_blob(
                    ep, parse(f"{fake.host}/x"), Descriptor(DOCKER_LAYER, sha(BLOB), len(BLOB)), None
                )
            ),
            20,
        )


async def test_redirect_to_storage_drops_credentials(fakes: Any, client: Registry) -> None:
    storage_seen: list[str | None] = []

    async def stored(request: web.Request) -> web.Response:
        storage_seen.append(request.headers.get("Authorization"))
        return web.Response(body=BLOB)

    storage = await fakes([web.get("/bucket/blob", stored)])

    async def blob(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic dTpw":  # u:p
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        raise web.HTTPTemporaryRedirect(f"{storage.url}/bucket/blob")

    fake = await fakes([web.get("/v2/x/blobs/{digest}", blob)])
    ep = Endpoint(fake.url, fake.host, tls_verify=False)
    got = await read_all(
        client.open_blob(
            ep,
            parse(f"{fake.host}/x"),
            Descriptor(DOCKER_LAYER, sha(BLOB), len(BLOB)),
            AuthConfig(username="u", password="p"),
        )
    )
    assert got == BLOB and storage_seen == [None]


async def test_manifest_header_digest_and_schema1(fakes: Any, client: Registry) -> None:
    good = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": sha(b"{}"), "size": 2},
            "layers": [],
        }
    ).encode()
    schema1 = json.dumps({"schemaVersion": 1, "name": "x", "tag": "old", "fsLayers": []}).encode()

    async def manifest(request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if ref == "lying":
            return web.Response(
                body=good,
                content_type=DOCKER_MANIFEST,
                headers={"Docker-Content-Digest": sha(b"something else")},
            )
        if ref == "old":
            return web.Response(
                body=schema1,
                headers={"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
            )
        return web.Response(body=good, content_type=DOCKER_MANIFEST)

    fake = await fakes([web.get("/v2/x/manifests/{ref}", manifest)])
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        await client.resolve(parse(f"{fake.host}/x:lying"), None)
    with pytest.raises(InvalidParameter, match="schema 1 not supported"):
        await client.resolve(parse(f"{fake.host}/x:old"), None)
    with pytest.raises(InvalidParameter, match="digest mismatch"):
        await client.resolve(parse(f"{fake.host}/x@{sha(b'not the body')}"), None)
    ep, m = await client.resolve(parse(f"{fake.host}/x:fine"), None)
    assert m.digest == sha(good) and ep.url == fake.url
