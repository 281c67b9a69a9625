"""HTTP to registries: one aiohttp session, TLS per host, redirects, and answering auth challenges.

Every request goes through `Transport.send`, which attaches what the endpoint's last challenge asked
for (a cached bearer token or Basic credentials), and on a 401 learns the challenge and retries once.
Redirects are followed by hand so that credentials never travel to another origin (blob storage).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from bocker_engine.errors import InvalidParameter, Unauthorized, Unavailable
from bocker_engine.registry.auth import (
    AuthConfig,
    Challenge,
    TokenCache,
    basic_header,
    parse_challenges,
    token_from_response,
)
from bocker_engine.registry.config import Endpoint, RegistryConfig

USER_AGENT = "bocker-engine/0.1"
MAX_REDIRECTS = 10
# Bodies we read whole (errors, tokens, manifests) are small; a hostile server must not make us
# buffer gigabytes.
MAX_SMALL_BODY = 4 << 20
_REDIRECTS = (301, 302, 303, 307, 308)

Body = bytes | Callable[[], AsyncIterator[bytes]] | None


class Unreachable(Unavailable):
    """The endpoint did not answer over HTTP at all (refused, TLS failure, reset, timeout).

    Callers fall back to the next endpoint on this, and only on this, as dockerd does.
    """


@dataclass(frozen=True)
class Scope:
    """Who is asking (credentials) and for what (token scopes), at which endpoint."""

    endpoint: Endpoint
    auth: AuthConfig | None
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistryError:
    """The first entry of a registry's `{"errors": [...]}` body, in Go's errcode wording."""

    status: int
    code: str  # MANIFEST_UNKNOWN, NAME_UNKNOWN, DENIED, UNAUTHORIZED, ... or ""
    message: str

    def __str__(self) -> str:
        if self.code:
            return f"{self.code.lower().replace('_', ' ')}: {self.message}"
        return f"received unexpected HTTP status: {status_line(self.status)}"


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def origin(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    return u.scheme, u.netloc


async def read_limited(resp: aiohttp.ClientResponse, limit: int = MAX_SMALL_BODY) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise InvalidParameter(f"response from {resp.url} too large: {resp.content_length} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        buf += chunk
        if len(buf) > limit:
            raise InvalidParameter(f"response from {resp.url} too large: more than {limit} bytes")
    return bytes(buf)


async def registry_error(resp: aiohttp.ClientResponse) -> RegistryError:
    """Reads (a bounded amount of) an error response; never raises for a malformed body."""
    code, message = "", ""
    try:
        body = json.loads(await read_limited(resp, 64 << 10))
        errs = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code = str(errs[0].get("code", ""))
            message = str(errs[0].get("message", ""))
    except (TimeoutError, ValueError, UnicodeDecodeError, InvalidParameter, aiohttp.ClientError):
        pass
    return RegistryError(resp.status, code, message)


class Transport:
    def __init__(
        self,
        config: RegistryConfig,
        *,
        resolver: AbstractResolver | None = None,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self._resolver = resolver
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._challenges: dict[str, list[Challenge]] = {}
        self.tokens = TokenCache()
        # Parallel layer downloads start together: one token request per key, not one each.
        self._token_locks: dict[tuple[str, str, tuple[str, ...], str], asyncio.Lock] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                # Up to 3 layer downloads per pull, several pulls at once, plus token and manifest requests.
                limit=64,
                limit_per_host=16,
                resolver=self._resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                # Blob bytes must reach the digest check exactly as stored, whatever a CDN claims.
                auto_decompress=False,
                # Cookies from one user's pull must not authenticate another's.
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ssl_for(self, endpoint: Endpoint, url: str) -> ssl.SSLContext | bool:
        u = urlsplit(url)
        if u.scheme != "https":
            return True  # ignored by aiohttp for plain http
        verify = endpoint.tls_verify if u.netloc == endpoint.netloc else not self.config.is_insecure(u.netloc)
        key = (u.netloc, verify)
        ctx = self._ssl.get(key)
        if ctx is None:
            # Loading the system CA store takes ~40 ms: not on the event loop.
            ctx = self._ssl[key] = await asyncio.to_thread(self.config.ssl_context, u.netloc, verify=verify)
        return ctx

    def may_send_credentials(self, endpoint: Endpoint, url: str) -> bool:
        """Credentials go over TLS, or in the clear only to the registry's own host.

        A plain-http mirror gets none: the credentials are Docker Hub's, not the mirror's.
        """
        u = urlsplit(url)
        if u.scheme == "https":
            return True
        if endpoint.mirror:
            return False
        return u.hostname == urlsplit(endpoint.url).hostname

    async def raw(
        self, endpoint: Endpoint, method: str, url: str, *, headers: dict[str, str] | None = None,
        data: Body = None, params: list[tuple[str, str]] | None = None, follow: bool = True,
    ) -> aiohttp.ClientResponse:
        """One request, following redirects; credentials are dropped when the origin changes."""
        h = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            body = data() if callable(data) else data
            try:
                resp = await self.session().request(
                    method, url, headers=h, data=body, params=params, allow_redirects=False,
                    ssl=await self.ssl_for(endpoint, url),
                )
            except InvalidParameter:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
                raise Unreachable(f'{method.capitalize()} "{url}": {describe(e)}') from e
            location = resp.headers.get("Location")
            if not (follow and resp.status in _REDIRECTS and location):
                return resp
            resp.release()
            target = urljoin(str(resp.url), location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise Unavailable(f'{method.capitalize()} "{url}": redirect to unsupported URL {target!r}')
            if origin(target) != origin(str(resp.url)):
                h.pop("Authorization", None)
            if resp.status == 303:
                method, data = "GET", None
            url, params = target, None
        raise Unavailable(f'{method.capitalize()} "{url}": stopped after {MAX_REDIRECTS} redirects')

    async def send(
        self, scope: Scope, method: str, url: str, *, headers: dict[str, str] | None = None,
        data: Body = None, params: list[tuple[str, str]] | None = None,
    ) -> aiohttp.ClientResponse:
        """A request with the authorization the endpoint wants; learns challenges from 401s."""
        fresh = False
        for attempt in range(2):
            h = dict(headers or {})
            authz = await self.authorization(scope, fresh=fresh)
            # Upload locations may point elsewhere: a token may follow over TLS, a password never.
            if authz and (
                origin(url) == origin(scope.endpoint.url)
                or (url.startswith("https://") and authz.startswith("Bearer "))
            ):
                h["Authorization"] = authz
            resp = await self.raw(scope.endpoint, method, url, headers=h, data=data, params=params)
            if resp.status != 401 or attempt or origin(str(resp.url)) != origin(scope.endpoint.url):
                return resp
            challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
            if not challenges:
                return resp
            known = self._challenges.get(scope.endpoint.url)
            if known == challenges and not authz:
                return resp  # nothing we could send would change the answer
            self._challenges[scope.endpoint.url] = challenges
            # A token we just sent was refused (revoked, or expired early): do not reuse it.
            fresh = bool(authz)
            resp.release()
        raise AssertionError("unreachable")

    def learn(self, endpoint: Endpoint, resp: aiohttp.ClientResponse) -> list[Challenge]:
        challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
        if challenges:
            self._challenges[endpoint.url] = challenges
        return challenges

    def sent_basic(self, scope: Scope) -> bool:
        """Whether requests in this scope carry Basic credentials (so a 401 means they are wrong)."""
        challenges = self._challenges.get(scope.endpoint.url, [])
        return (
            scope.auth is not None
            and bool(scope.auth.credentials())
            and not any(c.scheme == "bearer" for c in challenges)
            and any(c.scheme == "basic" for c in challenges)
            and self.may_send_credentials(scope.endpoint, scope.endpoint.url)
        )

    async def authorization(self, scope: Scope, *, fresh: bool = False) -> str | None:
        auth = scope.auth
        if auth is not None and auth.registrytoken:
            return "Bearer " + auth.registrytoken
        challenges = self._challenges.get(scope.endpoint.url, [])
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            token = await self.bearer_token(scope, bearer, fresh=fresh)
            return "Bearer " + token if token else None
        if any(c.scheme == "basic" for c in challenges) and auth is not None:
            creds = auth.credentials()
            if creds and self.may_send_credentials(scope.endpoint, scope.endpoint.url):
                return basic_header(*creds)
        return None

    async def bearer_token(self, scope: Scope, challenge: Challenge, *, fresh: bool = False) -> str | None:
        key = (challenge.realm, challenge.params.get("service", ""), tuple(sorted(scope.scopes)),
               scope.auth.fingerprint() if scope.auth else "")
        async with self._token_locks.setdefault(key, asyncio.Lock()):
            if not fresh:
                cached = self.tokens.get(key)
                if cached is not None:
                    return cached
            got = await self.fetch_token(scope, challenge)
            if got is None:
                return None
            token, expires_in, _ = got
            self.tokens.put(key, token, expires_in)
            return token

    async def fetch_token(
        self, scope: Scope, challenge: Challenge, *, offline: bool = False
    ) -> tuple[str, float, str] | None:
        """(token, expires_in, refresh_token) from the challenge's realm; None if anonymous is refused.

        Bad credentials raise Unauthorized.
        """
        realm = challenge.realm
        if urlsplit(realm).scheme not in ("http", "https") or not urlsplit(realm).netloc:
            raise Unavailable(f"registry {scope.endpoint.host} sent an invalid token realm {realm!r}")
        service = challenge.params.get("service", "")
        auth = scope.auth
        allowed = self.may_send_credentials(scope.endpoint, realm)
        creds = auth.credentials() if auth is not None and allowed else None
        refresh = auth.identitytoken if auth is not None and allowed else ""
        headers: dict[str, str] = {}
        if refresh:
            form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "bocker",
                    "access_type": "offline", "scope": " ".join(scope.scopes)}
            if service:
                form["service"] = service
            resp = await self.raw(scope.endpoint, "POST", realm, data=_form(form),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        else:
            params = [("service", service)] if service else []
            params += [("scope", s) for s in scope.scopes]
            if creds:
                params.append(("account", creds[0]))
                headers["Authorization"] = basic_header(*creds)
                if offline:
                    params += [("client_id", "bocker"), ("offline_token", "true")]
            resp = await self.raw(scope.endpoint, "GET", realm, headers=headers, params=params)
        try:
            if resp.status in (401, 403):
                err = await registry_error(resp)
                if creds or refresh:
                    detail = err.message or "incorrect username or password"
                    raise Unauthorized(f'Get "{realm}": unauthorized: {detail}')
                return None
            if resp.status != 200:
                raise Unavailable(f'Get "{realm}": token request failed: {status_line(resp.status)}')
            try:
                return token_from_response(json.loads(await read_limited(resp, 1 << 20)))
            except (ValueError, UnicodeDecodeError) as e:
                raise Unavailable(f'Get "{realm}": invalid token response: {e}') from e
        finally:
            resp.release()


def _form(d: dict[str, str]) -> bytes:
    return urlencode(d).encode()


def describe(e: BaseException) -> str:
    """Short, stable text for connection failures (aiohttp's repr-heavy messages vary)."""
    if isinstance(e, asyncio.TimeoutError):
        return "i/o timeout"
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: {e.certificate_error}"
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        reason = f"connect: {os.strerror(err.errno).lower()}" if err.errno else str(err.strerror or err)
        return f"dial tcp {e.host}:{e.port}: {reason}"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "connection closed by the server"
    text = str(e) or type(e).__name__
    return text
