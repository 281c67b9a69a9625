"""Registry HTTP API v2 operations: resolve manifests, stream blobs, push blobs and manifests, log in.

Everything a registry sends is untrusted until its digest checks out: manifests are verified before
they are parsed into anything the engine acts on, and blob streams raise at their end (before the
caller may commit what it wrote) if the bytes do not match the descriptor.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote, urljoin

import aiohttp
from aiohttp.abc import AbstractResolver

from bocker_engine.errors import EngineError, InvalidParameter, NotFound, System, Unauthorized, Unavailable
from bocker_engine.registry.auth import AuthConfig, basic_header, repository_scope
from bocker_engine.registry.config import Endpoint, RegistryConfig, registry_hostname
from bocker_engine.registry.manifest import (
    ACCEPT,
    Descriptor,
    Index,
    Manifest,
    Platform,
    check_digest,
    compute_digest,
    parse,
)
from bocker_engine.registry.reference import DEFAULT_TAG, Reference
from bocker_engine.registry.transport import (
    MAX_SMALL_BODY,
    Scope,
    Transport,
    Unreachable,
    read_limited,
    registry_error,
    status_line,
)

T = TypeVar("T")

_DENIED_CODES = {"NAME_UNKNOWN", "DENIED", "UNAUTHORIZED"}
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")
_RETRYABLE = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError, Unreachable)


def pull_access_denied(ref: Reference) -> NotFound:
    return NotFound(
        f"pull access denied for {ref.familiar_name}, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied"
    )


class Registry:
    # Attempts to resume a blob download (with Range) after the connection breaks.
    blob_retries = 3
    retry_delay = 0.5
    # Chunked uploads send PATCHes of this size; each is buffered so it can be replayed on a 401.
    upload_chunk_size = 16 << 20
    # Blobs up to this size whose digest is known go in a single PUT.
    monolithic_max = 1 << 20

    def __init__(
        self,
        config: RegistryConfig,
        *,
        resolver: AbstractResolver | None = None,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self._t = Transport(config, resolver=resolver, connect_timeout=connect_timeout,
                            read_timeout=read_timeout)

    async def close(self) -> None:
        await self._t.close()

    # -- login ---------------------------------------------------------------------------------

    async def login(self, auth: AuthConfig) -> tuple[str, str]:
        """Checks credentials against the registry's /v2/; returns (status, identity token)."""
        domain = registry_hostname(auth.serveraddress)
        return await _first_reachable(self.config.push_endpoints(domain), lambda ep: self._login_at(ep, auth))

    async def _login_at(self, ep: Endpoint, auth: AuthConfig) -> tuple[str, str]:
        url = f"{ep.url}/v2/"
        failed = Unauthorized(f"login attempt to {url} failed with status: 401 Unauthorized")
        resp = await self._t.raw(ep, "GET", url)
        resp.release()
        if resp.status == 200:
            return "Login Succeeded", ""
        if resp.status != 401:
            raise Unavailable(f"login attempt to {url} failed with status: {status_line(resp.status)}")
        challenges = self._t.learn(ep, resp)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        scope = Scope(ep, auth)
        identity = ""
        if bearer is not None:
            try:
                got = await self._t.fetch_token(scope, bearer, offline=True)
            except Unauthorized as e:
                raise failed from e
            if got is None:
                raise failed
            token, _, identity = got
            headers = {"Authorization": "Bearer " + token}
        else:
            creds = auth.credentials()
            if not creds or not self._t.may_send_credentials(ep, url):
                raise failed
            headers = {"Authorization": basic_header(*creds)}
        resp = await self._t.raw(ep, "GET", url, headers=headers)
        resp.release()
        if resp.status != 200:
            raise Unauthorized(f"login attempt to {url} failed with status: {status_line(resp.status)}")
        return "Login Succeeded", identity

    # -- pull ------------------------------------------------------------------------------------

    async def resolve(
        self, ref: Reference, auth: AuthConfig | None, platform: Platform | None = None
    ) -> tuple[Endpoint, Manifest]:
        """The image manifest `ref` names for `platform` (default: this host), and where it was found."""
        want = platform or Platform.host()
        return await self._on_pull_endpoints(ref, lambda ep: self._resolve_at(ep, ref, auth, want))

    async def tags(self, ref: Reference, auth: AuthConfig | None) -> list[str]:
        return (await self._on_pull_endpoints(ref, lambda ep: self._tags_at(ep, ref, auth)))[1]

    async def _on_pull_endpoints(
        self, ref: Reference, op: Callable[[Endpoint], Awaitable[T]]
    ) -> tuple[Endpoint, T]:
        last: EngineError | None = None
        for ep in self.config.pull_endpoints(ref.domain):
            try:
                return ep, await op(ep)
            except Unreachable as e:
                last = e
            except EngineError as e:
                # dockerd moves on from a mirror on any registry error (a cache miss looks like 404).
                if not ep.mirror:
                    raise
                last = e
        assert last is not None
        raise last

    async def _resolve_at(
        self, ep: Endpoint, ref: Reference, auth: AuthConfig | None, want: Platform
    ) -> Manifest:
        scope = Scope(ep, auth, (repository_scope(ref.path, "pull"),))
        top = await self._fetch_manifest(scope, ref, ref.digest or ref.tag or DEFAULT_TAG, ref.digest)
        current = top
        # An index may point at another index (rare); two levels is all anyone builds.
        for _ in range(2):
            if isinstance(current, Manifest):
                break
            desc = current.select(want)
            if desc is None:
                raise NotFound(f"no matching manifest for {want} in the manifest list entries")
            current = await self._fetch_manifest(scope, ref, desc.digest, desc.digest, desc.size)
            if isinstance(current, Manifest):
                current.index_digest = top.digest
                current.platform = desc.platform
        if not isinstance(current, Manifest):
            raise InvalidParameter(f"manifest list for {ref.familiar()} nests too deeply")
        return current

    async def _fetch_manifest(
        self, scope: Scope, ref: Reference, reference: str, expect: str | None, size: int | None = None
    ) -> Manifest | Index:
        url = f"{scope.endpoint.url}/v2/{ref.path}/manifests/{reference}"
        resp = await self._t.send(scope, "GET", url, headers={"Accept": ACCEPT})
        try:
            if resp.status != 200:
                raise await self._pull_error(scope, ref, resp)
            raw = await read_limited(resp, MAX_SMALL_BODY)
            content_type = resp.headers.get("Content-Type", "")
            header_digest = resp.headers.get("Docker-Content-Digest", "")
        except (TimeoutError, aiohttp.ClientError) as e:
            raise Unreachable(f'Get "{url}": {e}') from e
        finally:
            resp.release()
        if expect is not None:
            check_digest(expect)
            actual = compute_digest(raw, expect.split(":", 1)[0])
            if actual != expect:
                raise InvalidParameter(
                    f"manifest verification failed for digest {expect}: digest mismatch (content is {actual})"
                )
        if header_digest and ":" in header_digest:
            algorithm = header_digest.split(":", 1)[0]
            if algorithm in ("sha256", "sha512") and compute_digest(raw, algorithm) != header_digest:
                raise InvalidParameter(
                    f"manifest verification failed for {ref.familiar()}: digest mismatch "
                    f"(registry says {header_digest}, content is {compute_digest(raw, algorithm)})"
                )
        if size is not None and len(raw) != size:
            raise InvalidParameter(f"manifest {reference}: size mismatch ({len(raw)} bytes, expected {size})")
        return parse(raw, content_type, expect or compute_digest(raw))

    async def _pull_error(self, scope: Scope, ref: Reference, resp: aiohttp.ClientResponse) -> EngineError:
        err = await registry_error(resp)
        if err.status == 401 and self._t.sent_basic(scope):
            # The registry checks Basic credentials itself: a 401 means they are wrong.
            return Unauthorized(f"{ref.familiar()}: unauthorized: authentication required")
        if err.code in _DENIED_CODES or err.status in (401, 403):
            return pull_access_denied(ref)
        if err.status == 404:
            # Registries answer MANIFEST_UNKNOWN for a repository that does not exist at all; dockerd
            # users expect "pull access denied" then, as Docker Hub says it.
            if ref.digest is None and not await self._repo_exists(scope, ref):
                return pull_access_denied(ref)
            detail = str(err) if err.code else "manifest unknown: manifest unknown"
            return NotFound(f"manifest for {ref.familiar()} not found: {detail}")
        if err.status >= 500:
            return Unavailable(str(err))
        return InvalidParameter(str(err))

    async def _repo_exists(self, scope: Scope, ref: Reference) -> bool:
        url = f"{scope.endpoint.url}/v2/{ref.path}/tags/list"
        resp = await self._t.send(scope, "GET", url, params=[("n", "1")])
        try:
            if resp.status == 200:
                return True
            err = await registry_error(resp)
            return not (err.code in _DENIED_CODES or err.status in (401, 403, 404))
        finally:
            resp.release()

    async def _tags_at(self, ep: Endpoint, ref: Reference, auth: AuthConfig | None) -> list[str]:
        scope = Scope(ep, auth, (repository_scope(ref.path, "pull"),))
        url: str | None = f"{ep.url}/v2/{ref.path}/tags/list"
        out: list[str] = []
        pages = 0
        while url is not None and pages < 1000:
            pages += 1
            resp = await self._t.send(scope, "GET", url)
            try:
                if resp.status != 200:
                    raise await self._pull_error(scope, ref.with_tag(None), resp)
                body = _json(await read_limited(resp))
                link = resp.headers.get("Link", "")
            finally:
                resp.release()
            tags = body.get("tags") if isinstance(body, dict) else None
            out += [t for t in (tags or []) if isinstance(t, str)]
            m = re.match(r'^\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            url = urljoin(url, m.group(1)) if m else None
        return out

    async def open_blob(
        self, endpoint: Endpoint, ref: Reference, desc: Descriptor, auth: AuthConfig | None
    ) -> AsyncIterator[bytes]:
        """Streams a blob, resuming with Range after a broken connection.

        The data is untrusted until the iterator finishes: it raises InvalidParameter at the end (or
        as soon as too many bytes arrive) if the size or digest does not match `desc`.
        """
        check_digest(desc.digest)
        scope = Scope(endpoint, auth, (repository_scope(ref.path, "pull"),))
        url = f"{endpoint.url}/v2/{ref.path}/blobs/{desc.digest}"
        algorithm = desc.digest.split(":", 1)[0]
        hasher = hashlib.new(algorithm)
        received = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                resp = await self._t.send(scope, "GET", url, headers=headers)
                try:
                    skip = await self._blob_response_start(resp, ref, desc, received)
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        if skip:
                            drop = min(skip, len(chunk))
                            chunk, skip = chunk[drop:], skip - drop
                            if not chunk:
                                continue
                        received += len(chunk)
                        if received > desc.size:
                            raise InvalidParameter(
                                f"filesystem layer verification failed for digest {desc.digest}: "
                                f"size mismatch (more than {desc.size} bytes)"
                            )
                        hasher.update(chunk)
                        yield chunk
                finally:
                    resp.release()
                if received < desc.size:
                    raise aiohttp.ClientPayloadError(
                        f"connection closed after {received} of {desc.size} bytes"
                    )
                break
            except _RETRYABLE as e:
                if received == desc.size:
                    break  # everything arrived; only the end of the exchange was lost
                failures += 1
                if failures > self.blob_retries:
                    raise Unavailable(
                        f"error pulling blob {desc.digest} from {endpoint.host}: {e} "
                        f"(gave up after {failures} attempts, {received} of {desc.size} bytes)"
                    ) from e
                await asyncio.sleep(self.retry_delay * 2 ** (failures - 1))
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if received != desc.size or actual != desc.digest:
            raise InvalidParameter(
                f"filesystem layer verification failed for digest {desc.digest}: digest mismatch "
                f"(got {actual}, {received} bytes)"
            )

    async def _blob_response_start(
        self, resp: aiohttp.ClientResponse, ref: Reference, desc: Descriptor, offset: int
    ) -> int:
        """How many leading bytes of this response we already have (a server may ignore Range)."""
        if resp.status == 200:
            return offset
        if resp.status == 206 and offset:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise Unavailable(f"blob {desc.digest}: registry resumed the download at the wrong offset")
            return 0
        err = await registry_error(resp)
        if resp.status == 404:
            raise NotFound(f"blob {desc.digest} not found in {ref.familiar_name}: {err}")
        if resp.status in (401, 403):
            raise pull_access_denied(ref)
        if resp.status >= 500:
            raise Unreachable(f"blob {desc.digest}: {err}")
        raise InvalidParameter(f"blob {desc.digest}: {err}")

    # -- push ------------------------------------------------------------------------------------

    async def push_endpoint(self, ref: Reference, auth: AuthConfig | None) -> Endpoint:
        """The first of the registry's own endpoints that answers /v2/ (never a mirror)."""
        return await _first_reachable(self.config.push_endpoints(ref.domain), self._ping)

    async def _ping(self, ep: Endpoint) -> Endpoint:
        resp = await self._t.raw(ep, "GET", f"{ep.url}/v2/")
        resp.release()
        if resp.status == 401:
            self._t.learn(ep, resp)
        elif resp.status >= 500:
            raise Unavailable(f'Get "{ep.url}/v2/": {status_line(resp.status)}')
        return ep

    def _push_scope(self, ep: Endpoint, ref: Reference, auth: AuthConfig | None, *extra: str) -> Scope:
        return Scope(ep, auth, (repository_scope(ref.path, "pull,push"), *extra))

    async def blob_exists(
        self, endpoint: Endpoint, ref: Reference, digest: str, auth: AuthConfig | None
    ) -> bool:
        check_digest(digest)
        resp = await self._t.send(self._push_scope(endpoint, ref, auth), "HEAD",
                                  f"{endpoint.url}/v2/{ref.path}/blobs/{digest}")
        resp.release()
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise await _push_error(resp)

    async def mount_blob(
        self, endpoint: Endpoint, ref: Reference, digest: str, from_repo: str, auth: AuthConfig | None
    ) -> bool:
        """Cross-repository mount; `from_repo` is a path in the same registry (or `<domain>/<path>`)."""
        check_digest(digest)
        if from_repo.startswith(ref.domain + "/"):
            from_repo = from_repo[len(ref.domain) + 1:]
        scope = self._push_scope(endpoint, ref, auth, repository_scope(from_repo, "pull"))
        resp = await self._t.send(scope, "POST", f"{endpoint.url}/v2/{ref.path}/blobs/uploads/",
                                  params=[("mount", digest), ("from", from_repo)])
        try:
            if resp.status == 201:
                return True
            if resp.status == 202:
                # The registry could not mount and opened an upload session instead: do not leak it.
                location = resp.headers.get("Location")
                if location:
                    await self._cancel_upload(scope, urljoin(str(resp.url), location))
                return False
            if resp.status in (401, 403) or resp.status >= 500:
                raise await _push_error(resp)
            return False
        finally:
            resp.release()

    async def upload_blob(
        self, endpoint: Endpoint, ref: Reference, chunks: AsyncIterator[bytes], auth: AuthConfig | None,
        *, digest: str | None = None, size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> tuple[str, int]:
        """Uploads a blob; returns (digest, size) as computed from the bytes sent.

        `on_progress` gets the number of bytes sent so far. A known `digest` that the bytes do not
        match aborts the upload before the registry stores anything.
        """
        if digest is not None:
            check_digest(digest)
        algorithm = digest.split(":", 1)[0] if digest else "sha256"
        scope = self._push_scope(endpoint, ref, auth)
        location = await self._start_upload(scope, ref)
        hasher = hashlib.new(algorithm)
        sent = 0
        try:
            if digest is not None and size is not None and size <= self.monolithic_max:
                data = bytearray()
                async for c in chunks:
                    data += c
                    if len(data) > size:
                        raise InvalidParameter(f"blob {digest}: more than the expected {size} bytes")
                hasher.update(data)
                sent = len(data)
                _check_blob(digest, size, f"{algorithm}:{hasher.hexdigest()}", sent)
                await self._finish_upload(scope, location, digest, bytes(data))
                if on_progress is not None:
                    on_progress(sent)
                return digest, sent
            buf = bytearray()
            async for c in chunks:
                hasher.update(c)
                buf += c
                while len(buf) >= self.upload_chunk_size:
                    part = bytes(buf[: self.upload_chunk_size])
                    del buf[: self.upload_chunk_size]
                    location = await self._patch(scope, location, part, sent, on_progress)
                    sent += len(part)
            if buf:
                location = await self._patch(scope, location, bytes(buf), sent, on_progress)
                sent += len(buf)
            actual = f"{algorithm}:{hasher.hexdigest()}"
            _check_blob(digest or actual, size if size is not None else sent, actual, sent)
            await self._finish_upload(scope, location, actual, b"")
            return actual, sent
        except BaseException:
            await self._cancel_upload(scope, location)
            raise

    async def _start_upload(self, scope: Scope, ref: Reference) -> str:
        resp = await self._t.send(scope, "POST", f"{scope.endpoint.url}/v2/{ref.path}/blobs/uploads/")
        try:
            location = resp.headers.get("Location")
            if resp.status != 202 or not location:
                raise await _push_error(resp)
            return urljoin(str(resp.url), location)
        finally:
            resp.release()

    async def _patch(
        self, scope: Scope, location: str, part: bytes, offset: int, on_progress: Callable[[int], None] | None
    ) -> str:
        step = 256 << 10

        async def body() -> AsyncIterator[bytes]:
            # Sliced so progress moves while a large chunk is on the wire; a fresh generator per attempt
            # lets the transport replay the chunk after a 401.
            view = memoryview(part)
            for i in range(0, len(part), step):
                yield bytes(view[i:i + step])
                if on_progress is not None:
                    on_progress(offset + min(i + step, len(part)))

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(part)),
                   "Content-Range": f"{offset}-{offset + len(part) - 1}"}
        resp = await self._t.send(scope, "PATCH", location, headers=headers, data=body)
        try:
            new_location = resp.headers.get("Location")
            if resp.status != 202 or not new_location:
                raise await _push_error(resp)
            m = _RANGE_RE.match(resp.headers.get("Range", ""))
            if m and int(m.group(1)) != offset + len(part) - 1:
                raise System(f"upload to {scope.endpoint.host}: registry has {int(m.group(1)) + 1} bytes, "
                             f"expected {offset + len(part)}")
            return urljoin(str(resp.url), new_location)
        finally:
            resp.release()

    async def _finish_upload(self, scope: Scope, location: str, digest: str, data: bytes) -> None:
        url = location + ("&" if "?" in location else "?") + "digest=" + quote(digest, safe="")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        resp = await self._t.send(scope, "PUT", url, headers=headers, data=data)
        try:
            if resp.status not in (201, 204):
                raise await _push_error(resp)
        finally:
            resp.release()

    async def _cancel_upload(self, scope: Scope, location: str) -> None:
        try:
            resp = await asyncio.wait_for(self._t.send(scope, "DELETE", location), 10)
            resp.release()
        except (TimeoutError, EngineError, aiohttp.ClientError, OSError):
            pass  # best effort: the registry expires abandoned uploads on its own

    async def put_manifest(
        self, endpoint: Endpoint, ref: Reference, media_type: str, raw: bytes, auth: AuthConfig | None = None
    ) -> str:
        """PUT to the tag (or digest) of `ref`; returns the manifest's digest."""
        digest = compute_digest(raw)
        if ref.digest is not None and compute_digest(raw, ref.digest.split(":", 1)[0]) != ref.digest:
            raise InvalidParameter(f"manifest does not match digest {ref.digest}")
        reference = ref.digest or ref.tag or DEFAULT_TAG
        resp = await self._t.send(self._push_scope(endpoint, ref, auth), "PUT",
                                  f"{endpoint.url}/v2/{ref.path}/manifests/{reference}",
                                  headers={"Content-Type": media_type}, data=raw)
        try:
            if resp.status not in (200, 201, 202):
                raise await _push_error(resp)
            said = resp.headers.get("Docker-Content-Digest", "")
        finally:
            resp.release()
        if said and said.startswith("sha256:") and said != digest:
            raise System(f"registry stored manifest as {said}, expected {digest}")
        return digest


async def _first_reachable(endpoints: list[Endpoint], op: Callable[[Endpoint], Awaitable[T]]) -> T:
    last: Unreachable | None = None
    for ep in endpoints:
        try:
            return await op(ep)
        except Unreachable as e:
            last = e
    assert last is not None
    raise last


async def _push_error(resp: aiohttp.ClientResponse) -> EngineError:
    err = await registry_error(resp)
    if err.status in (401, 403) or err.code in ("DENIED", "UNAUTHORIZED"):
        return Unauthorized(str(err) if err.code else "denied: requested access to the resource is denied")
    if err.code in ("NAME_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN") or err.status == 404:
        return NotFound(str(err))
    if err.status >= 500:
        return Unavailable(str(err))
    return InvalidParameter(str(err))


def _check_blob(expected: str, size: int, actual: str, sent: int) -> None:
    if actual != expected or sent != size:
        raise InvalidParameter(f"blob upload: digest mismatch: expected {expected} ({size} bytes), "
                               f"got {actual} ({sent} bytes)")


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
