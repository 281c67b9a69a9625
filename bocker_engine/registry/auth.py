"""Registry credentials and the two ways registries ask for them (RFC 7235 challenges).

`Basic` sends the credentials to the registry itself; `Bearer` (the distribution token spec) trades
them at an authorization server (the challenge's realm) for a short-lived token per set of scopes.
Tokens are cached per realm, service, scopes *and credentials*, so one API user's token is never
handed to another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from bocker_engine import jsonload
from bocker_engine.errors import InvalidParameter
from bocker_engine.registry.config import registry_hostname


@dataclass
class AuthConfig:
    username: str = ""
    password: str = ""
    auth: str = ""  # base64("user:pass"), what the CLI's config.json stores
    email: str = ""
    serveraddress: str = ""
    identitytoken: str = ""  # an OAuth refresh token from an earlier login
    registrytoken: str = ""  # a bearer token to send as it is

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AuthConfig:
        """POST /auth bodies and X-Registry-Auth JSON; Go decodes keys case-insensitively."""
        if not isinstance(d, dict):
            raise InvalidParameter("invalid auth configuration: not a JSON object")
        low = {str(k).lower(): v for k, v in d.items()}

        def s(key: str) -> str:
            v = low.get(key)
            if v is None:
                return ""
            if not isinstance(v, str):
                raise InvalidParameter(f"invalid auth configuration: {key} must be a string")
            return v

        return cls(
            username=s("username"),
            password=s("password"),
            auth=s("auth"),
            email=s("email"),
            serveraddress=s("serveraddress"),
            identitytoken=s("identitytoken"),
            registrytoken=s("registrytoken"),
        )

    @classmethod
    def from_header(cls, value: str | None) -> AuthConfig | None:
        """X-Registry-Auth: base64url JSON, padding optional; `{}` (e30=) and empty mean anonymous."""
        if value is None or not value.strip():
            return None
        d = _decode_b64_json(value.strip(), "X-Registry-Auth")
        if not isinstance(d, dict):
            raise InvalidParameter("invalid X-Registry-Auth header: not a JSON object")
        cfg = cls.from_json(d)
        return None if cfg.is_empty() else cfg

    def is_empty(self) -> bool:
        return not (self.username or self.password or self.auth or self.identitytoken or self.registrytoken)

    def credentials(self) -> tuple[str, str] | None:
        """Username and password, taken from `auth` when the explicit fields are empty."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                raw = base64.b64decode(self.auth + "=" * (-len(self.auth) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError) as e:
                raise InvalidParameter("invalid auth configuration: auth is not base64(user:password)") from e
            user, sep, pw = raw.partition(":")
            if not sep:
                raise InvalidParameter("invalid auth configuration: auth is not base64(user:password)")
            return user, pw
        return None

    def fingerprint(self) -> str:
        """Identifies the credentials in cache keys without keeping them readable there."""
        creds = self.credentials() or ("", "")
        material = "\0".join([creds[0], creds[1], self.identitytoken, self.registrytoken])
        return hashlib.sha256(material.encode()).hexdigest()[:32]


def auth_for(registry_config_header: str | None, domain: str) -> AuthConfig | None:
    """The credentials for `domain` from X-Registry-Config (build): a map of server -> AuthConfig."""
    if not registry_config_header or not registry_config_header.strip():
        return None
    d = _decode_b64_json(registry_config_header.strip(), "X-Registry-Config")
    if not isinstance(d, dict):
        raise InvalidParameter("invalid X-Registry-Config header: not a JSON object")
    for server, value in d.items():
        if registry_hostname(str(server)) == domain and isinstance(value, dict):
            cfg = AuthConfig.from_json(value)
            return None if cfg.is_empty() else cfg
    return None


def _decode_b64_json(value: str, what: str) -> Any:
    # The CLI sends URL-safe base64; older clients sent the standard alphabet. Accept both, with or
    # without padding.
    v = value.replace("-", "+").replace("_", "/")
    v += "=" * (-len(v) % 4)
    try:
        return jsonload.loads(base64.b64decode(v, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter(f"invalid {what} header: {e}") from e


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """WWW-Authenticate values to challenges; one header may carry several, comma separated."""
    out: list[Challenge] = []
    for h in headers:
        out.extend(_parse_one_header(h))
    return out


_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse_one_header(h: str) -> list[Challenge]:
    out: list[Challenge] = []
    i, n = 0, len(h)

    def skip_ws(i: int) -> int:
        while i < n and h[i] in " \t":
            i += 1
        return i

    def token(i: int) -> tuple[str, int]:
        j = i
        while j < n and h[j] in _TOKEN_CHARS:
            j += 1
        return h[i:j], j

    def quoted(i: int) -> tuple[str, int]:
        # i points just after the opening quote
        buf = []
        while i < n and h[i] != '"':
            if h[i] == "\\" and i + 1 < n:
                i += 1
            buf.append(h[i])
            i += 1
        return "".join(buf), i + 1

    scheme: str | None = None
    params: dict[str, str] = {}
    while i < n:
        i = skip_ws(i)
        if i < n and h[i] == ",":
            i += 1
            continue
        name, j = token(i)
        if not name:
            i += 1  # stray character: skip it rather than fail on a sloppy server
            continue
        k = skip_ws(j)
        if k < n and h[k] == "=":
            k = skip_ws(k + 1)
            if k < n and h[k] == '"':
                value, k = quoted(k + 1)
            else:
                # Sloppy servers leave URLs unquoted: take everything up to the next separator.
                e = k
                while e < n and h[e] not in ", \t":
                    e += 1
                value, k = h[k:e], e
            if scheme is not None:
                params[name.lower()] = value
            i = k
        else:
            if scheme is not None:
                out.append(Challenge(scheme, params))
            scheme, params = name.lower(), {}
            i = j
    if scheme is not None:
        out.append(Challenge(scheme, params))
    return out


def repository_scope(path: str, actions: str) -> str:
    return f"repository:{path}:{actions}"


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic()


class TokenCache:
    """Bearer tokens by (realm, service, scopes, credentials) until shortly before they expire."""

    # Ask again a little early so a token does not expire between the cache lookup and its use.
    MARGIN = 10.0

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...], str], _Token] = {}

    def get(self, key: tuple[str, str, tuple[str, ...], str]) -> str | None:
        t = self._tokens.get(key)
        if t is None:
            return None
        if time.monotonic() >= t.expires:
            del self._tokens[key]
            return None
        return t.value

    def put(self, key: tuple[str, str, tuple[str, ...], str], value: str, expires_in: float) -> None:
        # The spec says 60 seconds when the server gives none, and no less.
        lifetime = max(float(expires_in or 60), 60.0) - self.MARGIN
        self._tokens[key] = _Token(value, time.monotonic() + lifetime)

    def clear(self) -> None:
        self._tokens.clear()


def token_from_response(body: Any) -> tuple[str, float, str]:
    """(token, expires_in, refresh_token) from a token server's JSON answer."""
    if not isinstance(body, dict):
        raise ValueError("token response is not a JSON object")
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token response has neither token nor access_token")
    expires = body.get("expires_in")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        expires = 60
    refresh = body.get("refresh_token")
    return token, float(expires), refresh if isinstance(refresh, str) else ""


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
