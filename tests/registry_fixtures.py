"""Real registries for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

    from tests.registry_fixtures import start_registry

    with start_registry(None, mode="anonymous") as reg:       # plain HTTP, no auth
        reg.host            # "127.0.0.1:PORT" (use as the registry part of references)
        reg.url             # "http://127.0.0.1:PORT"
    with start_registry(tmp, mode="htpasswd-tls") as reg:      # HTTPS + Basic auth
        reg.ca_cert         # CA that signed the server certificate (IP SAN 127.0.0.1)
        reg.certs_dir       # a certs.d directory: <certs_dir>/127.0.0.1:PORT/ca.crt
        reg.username, reg.password
    with start_registry(None, mode="token") as reg:            # plain HTTP + bearer tokens
        reg.token_url       # the issuer's realm, http://127.0.0.1:PORT2/token
        reg.token_requests  # what the issuer was asked, for assertions on token reuse

Each registry is its own process with its storage under `tmpdir` (a fresh temporary directory,
removed on stop, when `tmpdir` is None). `stop()` always terminates and reaps the process and the
token issuer; use the handle as a context manager or call `stop()` from a fixture finalizer.
`kill()` simulates a registry that goes away (SIGKILL), `blob_path()` finds a blob on disk so a test
can corrupt it. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.tls import make_ca

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "test-registry"
ISSUER = "test-issuer"

Mode = Literal["anonymous", "htpasswd-tls", "token"]
# (user or None for anonymous, repository name, requested actions) -> granted actions
TokenPolicy = Callable[[str | None, str, list[str]], list[str]]


def default_policy(user: str | None, repository: str, actions: list[str]) -> list[str]:
    """Authenticated users get what they ask for; anonymous users get nothing."""
    return list(actions) if user is not None else []


@dataclass
class RegistryHandle:
    mode: Mode
    host: str
    url: str
    storage_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    username: str = ""
    password: str = ""
    ca_cert: Path | None = None
    certs_dir: Path | None = None
    token_url: str = ""
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    _issuer: _TokenIssuer | None = None
    _owned_dir: Path | None = None

    def blob_path(self, digest: str) -> Path:
        algorithm, hexd = digest.split(":", 1)
        return self.storage_dir / "docker/registry/v2/blobs" / algorithm / hexd[:2] / hexd / "data"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """The registry vanishes mid-whatever (SIGKILL, no goodbye)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            try:
                if self._issuer is not None:
                    self._issuer.stop()
                    self._issuer = None
            finally:
                if self._owned_dir is not None:
                    shutil.rmtree(self._owned_dir, ignore_errors=True)
                    self._owned_dir = None

    def __enter__(self) -> RegistryHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(
    tmpdir: str | os.PathLike[str] | None,
    *,
    mode: Mode = "anonymous",
    username: str = "tester",
    password: str = "s3cret-pass",
    users: dict[str, str] | None = None,
    token_policy: TokenPolicy = default_policy,
    token_lifetime: int = 300,
) -> RegistryHandle:
    """Starts a registry and returns once `/v2/` answers.

    `users` (default {username: password}) are accepted by htpasswd and by the token issuer;
    `token_policy` decides which actions the issuer grants.
    """
    if not os.path.exists(REGISTRY_BIN):
        raise RuntimeError(f"{REGISTRY_BIN} is missing: apt-get install -y docker-registry")
    owned = Path(tempfile.mkdtemp(prefix="bocker-registry-")) if tmpdir is None else None
    base = owned or Path(tmpdir)  # type: ignore[arg-type]
    base.mkdir(parents=True, exist_ok=True)
    users = dict(users) if users is not None else {username: password}
    issuer: _TokenIssuer | None = None
    try:
        storage = base / "storage"
        storage.mkdir(exist_ok=True)
        auth_cfg: dict[str, Any] = {}
        tls_cfg: dict[str, Any] | None = None
        ca_path = certs_dir = None
        if mode == "htpasswd-tls":
            ca_path, cert_path, key_path = _make_tls(base)
            tls_cfg = {"certificate": str(cert_path), "key": str(key_path)}
            htpasswd = base / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                    for u, p in users.items()
                )
            )
            auth_cfg = {"htpasswd": {"realm": "test-realm", "path": str(htpasswd)}}
        elif mode == "token":
            key, cert_pem = _make_signing_key()
            bundle = base / "token-signer.pem"
            bundle.write_bytes(cert_pem)
            issuer = _TokenIssuer(key, cert_pem, users, token_policy, token_lifetime)
            issuer.start()
            auth_cfg = {
                "token": {
                    "realm": issuer.url,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(bundle),
                }
            }
        elif mode != "anonymous":
            raise ValueError(f"unknown registry mode {mode!r}")
        log_path = base / "registry.log"
        last_log = ""
        for _ in range(5):
            port = _free_port()
            host = f"127.0.0.1:{port}"
            http_cfg: dict[str, Any] = {"addr": host, "secret": secrets.token_hex(16)}
            if tls_cfg is not None:
                http_cfg["tls"] = tls_cfg
            config = {
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(storage)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": http_cfg,
                "health": {"storagedriver": {"enabled": False}},
            }
            if auth_cfg:
                config["auth"] = auth_cfg
            config_path = base / "config.yml"
            config_path.write_text(json.dumps(config))  # YAML is a superset of JSON
            if ca_path is not None:
                certs_dir = base / "certs.d"
                (certs_dir / host).mkdir(parents=True, exist_ok=True)
                shutil.copy(ca_path, certs_dir / host / "ca.crt")
            with open(log_path, "wb") as log:
                # A clean environment: distribution reads REGISTRY_* variables as config overrides.
                proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={"PATH": "/usr/bin:/bin"},
                    start_new_session=True,
                )
            scheme = "https" if tls_cfg else "http"
            handle = RegistryHandle(
                mode=mode,
                host=host,
                url=f"{scheme}://{host}",
                storage_dir=storage,
                log_path=log_path,
                process=proc,
                username=username if mode != "anonymous" else "",
                password=password if mode != "anonymous" else "",
                ca_cert=ca_path,
                certs_dir=certs_dir,
                token_url=issuer.url if issuer else "",
                token_requests=issuer.requests if issuer else [],
                _issuer=issuer,
                _owned_dir=owned,
            )
            if _wait_ready(handle):
                return handle
            last_log = handle.log()
            handle._issuer = handle._owned_dir = None  # still needed by the next attempt
            handle.stop()
            if "address already in use" not in last_log:
                break
        raise RuntimeError(f"registry did not start:\n{last_log}")
    except BaseException:
        if issuer is not None:
            issuer.stop()
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(h: RegistryHandle, timeout: float = 20.0) -> bool:
    host, port = h.host.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h.process.poll() is not None:
            return False
        conn: http.client.HTTPConnection
        if h.ca_cert is not None:
            ctx = ssl.create_default_context(cafile=str(h.ca_cert))
            conn = http.client.HTTPSConnection(host, int(port), timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", "/v2/")
            if conn.getresponse().status in (200, 401):
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    return False


# -- certificates -------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_tls(base: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (IP SAN) and localhost signed by it."""
    ca = make_ca(base)
    cert_path, key_path = ca.issue(base, "server", server=True)
    return ca.path, cert_path, key_path


def _make_signing_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A self-signed certificate for the token signer: the registry's rootcertbundle is this cert."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ca = make_ca(Path(tmp), cn="bocker token signer")
    return ca.key, ca.cert.public_bytes(serialization.Encoding.PEM)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: ec.EllipticCurvePrivateKey, cert_pem: bytes, claims: dict[str, Any]) -> str:
    """ES256 JWS with the signing certificate in `x5c`, as distribution's token auth verifies it."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# -- token issuer -------------------------------------------------------------------------------


class _TokenIssuer:
    """The distribution token spec's authorization server, in a thread with its own event loop."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        cert_pem: bytes,
        users: dict[str, str],
        policy: TokenPolicy,
        lifetime: int,
    ) -> None:
        self.key, self.cert_pem, self.users, self.policy, self.lifetime = (
            key,
            cert_pem,
            users,
            policy,
            lifetime,
        )
        self.requests: list[dict[str, Any]] = []
        self.refresh_tokens: dict[str, str] = {}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_get("/token", self._get)
            app.router.add_post("/token", self._post)
            runner = web.AppRunner(app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self.url = f"http://127.0.0.1:{port}/token"
            except BaseException as e:  # reported to start()'s caller
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="token-issuer", daemon=True)
        self._thread.start()
        ready.wait(20)
        if errors:
            raise errors[0]
        if not self.url:
            raise RuntimeError("token issuer did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _deny(self, message: str = "incorrect username or password") -> web.Response:
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": message}]},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="token"'},
        )

    def _issue(self, user: str | None, scopes: list[str], offline: bool) -> web.Response:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            granted = self.policy(user, name, actions) if typ == "repository" else []
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = sign_jwt(self.key, self.cert_pem, claims)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        if offline and user is not None:
            refresh = secrets.token_hex(16)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        return web.json_response(body)

    async def _get(self, request: web.Request) -> web.Response:
        user: str | None = None
        authz = request.headers.get("Authorization", "")
        scopes = request.query.getall("scope", [])
        self.requests.append(
            {
                "method": "GET",
                "scopes": scopes,
                "account": request.query.get("account"),
                "basic": authz.startswith("Basic "),
            }
        )
        if authz:
            if not authz.startswith("Basic "):
                return self._deny()
            try:
                u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
            except ValueError:
                return self._deny()
            if u not in self.users or not secrets.compare_digest(self.users[u], p):
                return self._deny()
            user = u
        return self._issue(user, scopes, request.query.get("offline_token") == "true")

    async def _post(self, request: web.Request) -> web.Response:
        form = await request.post()
        scopes = str(form.get("scope", "")).split()
        grant = form.get("grant_type")
        self.requests.append({"method": "POST", "scopes": scopes, "grant_type": grant})
        if grant == "refresh_token":
            user = self.refresh_tokens.get(str(form.get("refresh_token", "")))
            if user is None:
                return self._deny("invalid refresh token")
        elif grant == "password":
            user = str(form.get("username", ""))
            if self.users.get(user) != str(form.get("password", "")):
                return self._deny()
        else:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        return self._issue(user, scopes, str(form.get("access_type", "")) == "offline")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
