"""Auth header parsing, credentials decoding, platforms and index selection: no network."""

from __future__ import annotations

import base64
import json

import pytest

from bocker_engine.errors import InvalidParameter, Unavailable
from bocker_engine.registry.auth import (
    AuthConfig,
    Challenge,
    TokenCache,
    auth_for,
    parse_challenges,
    token_from_response,
)
from bocker_engine.registry.config import DOCKER_HUB_URL, Endpoint, RegistryConfig, registry_hostname
from bocker_engine.registry.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    Platform,
    compute_digest,
    parse,
)

# -- challenges ---------------------------------------------------------------------------------


def test_bearer_challenge() -> None:
    [c] = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"'
        ]
    )
    assert c == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/busybox:pull",
        },
    )


def test_basic_challenge_and_case() -> None:
    assert parse_challenges(['BASIC Realm="Registry Realm"']) == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_several_challenges_in_one_header_and_quoting() -> None:
    cs = parse_challenges(
        [
            'Basic realm="a, b", Bearer realm="https://x/token", service=svc, '
            'scope="repository:a/b:pull,push" , error="insufficient_scope"',
            "Bearer realm=http://unquoted/token",
        ]
    )
    assert [c.scheme for c in cs] == ["basic", "bearer", "bearer"]
    assert cs[0].realm == "a, b"
    assert cs[1].params == {
        "realm": "https://x/token",
        "service": "svc",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    assert cs[2].realm == "http://unquoted/token"


def test_escaped_quotes_and_garbage() -> None:
    assert parse_challenges([r'Bearer realm="a\"b"']) == [Challenge("bearer", {"realm": 'a"b'})]
    assert parse_challenges(["", "   "]) == []


# -- X-Registry-Auth / X-Registry-Config --------------------------------------------------------


def _b64url(d: object, pad: bool = True) -> str:
    s = base64.urlsafe_b64encode(json.dumps(d).encode()).decode()
    return s if pad else s.rstrip("=")


@pytest.mark.parametrize("pad", [True, False])
def test_x_registry_auth(pad: bool) -> None:
    # A password whose base64 needs the URL-safe alphabet.
    d = {"username": "u", "password": "p>>?~~", "serveraddress": "127.0.0.1:5000"}
    value = _b64url(d, pad)
    assert "=" not in value or pad
    cfg = AuthConfig.from_header(value)
    assert cfg == AuthConfig(username="u", password="p>>?~~", serveraddress="127.0.0.1:5000")
    assert cfg.credentials() == ("u", "p>>?~~")


def test_x_registry_auth_empty() -> None:
    assert AuthConfig.from_header("e30=") is None
    assert AuthConfig.from_header("e30") is None
    assert AuthConfig.from_header(None) is None
    assert AuthConfig.from_header("") is None
    with pytest.raises(InvalidParameter):
        AuthConfig.from_header("!!!not base64")
    with pytest.raises(InvalidParameter):
        AuthConfig.from_header(_b64url(["a list"]))


def test_auth_field_and_identity_token() -> None:
    cfg = AuthConfig.from_json({"auth": base64.b64encode(b"me:pa:ss").decode(), "ServerAddress": "x"})
    assert cfg.credentials() == ("me", "pa:ss") and cfg.serveraddress == "x"
    tok = AuthConfig.from_json({"identitytoken": "refresh"})
    assert tok.credentials() is None and not tok.is_empty()
    assert tok.fingerprint() != AuthConfig(identitytoken="other").fingerprint()
    with pytest.raises(InvalidParameter):
        AuthConfig.from_json({"username": 3})


def test_auth_for_registry_config() -> None:
    header = _b64url(
        {
            "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
            "127.0.0.1:5000": {"username": "local", "password": "l"},
        },
        pad=False,
    )
    hub = auth_for(header, "docker.io")
    local = auth_for(header, "127.0.0.1:5000")
    assert hub is not None and hub.username == "hub"
    assert local is not None and local.username == "local"
    assert auth_for(header, "quay.io") is None
    assert auth_for(None, "docker.io") is None


def test_registry_hostname() -> None:
    for s in ["", "docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"]:
        assert registry_hostname(s) == "docker.io"
    assert registry_hostname("https://127.0.0.1:5000/") == "127.0.0.1:5000"
    assert registry_hostname("quay.io") == "quay.io"


def test_token_response_and_cache() -> None:
    assert token_from_response({"access_token": "a", "expires_in": 300, "refresh_token": "r"}) == (
        "a",
        300.0,
        "r",
    )
    assert token_from_response({"token": "t"}) == ("t", 60.0, "")
    with pytest.raises(ValueError):
        token_from_response({"expires_in": 3})
    cache = TokenCache()
    key = ("realm", "svc", ("repository:a:pull",), "creds")
    cache.put(key, "tok", 300)
    assert cache.get(key) == "tok"
    assert cache.get(("realm", "svc", ("repository:a:pull",), "other creds")) is None
    cache.put(key, "tok", -5)  # servers that lie get the spec's 60 s minimum
    assert cache.get(key) == "tok"


# -- endpoints ----------------------------------------------------------------------------------


def test_insecure_rules() -> None:
    cfg = RegistryConfig(insecure=["10.1.2.3:5000", "myreg", "192.168.0.0/16"])
    assert (
        cfg.is_insecure("127.0.0.1:5000") and cfg.is_insecure("127.9.9.9") and cfg.is_insecure("[::1]:5000")
    )
    assert cfg.is_insecure("localhost:5000")
    assert cfg.is_insecure("10.1.2.3:5000") and not cfg.is_insecure("10.1.2.3:5001")
    assert cfg.is_insecure("myreg:443") and cfg.is_insecure("192.168.7.7:5000")
    assert not cfg.is_insecure("quay.io") and not cfg.is_insecure("docker.io")
    assert not RegistryConfig(loopback_insecure=False).is_insecure("127.0.0.1:5000")
    with pytest.raises(InvalidParameter):
        RegistryConfig(insecure=["10.0.0.0/99"])


def test_endpoints() -> None:
    cfg = RegistryConfig(mirrors=["http://127.0.0.1:5000/", "mirror.example"])
    assert cfg.pull_endpoints("docker.io") == [
        Endpoint("http://127.0.0.1:5000", "docker.io", mirror=True, tls_verify=False),
        Endpoint("https://mirror.example", "docker.io", mirror=True),
        Endpoint(DOCKER_HUB_URL, "docker.io"),
    ]
    assert cfg.push_endpoints("docker.io") == [Endpoint(DOCKER_HUB_URL, "docker.io")]
    assert cfg.pull_endpoints("quay.io") == [Endpoint("https://quay.io", "quay.io")]
    assert [e.url for e in cfg.pull_endpoints("127.0.0.1:5000")] == [
        "https://127.0.0.1:5000",
        "http://127.0.0.1:5000",
    ]
    pinned = RegistryConfig(mirrors=["http://127.0.0.1:5000"], mirror_fallback=False)
    assert [e.url for e in pinned.pull_endpoints("docker.io")] == ["http://127.0.0.1:5000"]
    with pytest.raises(Unavailable):
        RegistryConfig(mirror_fallback=False).pull_endpoints("docker.io")
    with pytest.raises(InvalidParameter):
        RegistryConfig(mirrors=["ftp://x"])


# -- platforms ----------------------------------------------------------------------------------


def test_platform_parse_and_str() -> None:
    assert Platform.parse("linux/amd64") == Platform("linux", "amd64")
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform.parse("arm64") == Platform("linux", "arm64")
    assert str(Platform.parse("Linux/ARM/v7")) == "linux/arm/v7"
    for bad in ["", "linux/", "a/b/c/d", "/amd64"]:
        with pytest.raises(InvalidParameter):
            Platform.parse(bad)


def test_platform_normalize_and_match() -> None:
    amd64, arm64 = Platform("linux", "amd64"), Platform("linux", "arm64", "v8")
    assert Platform("linux", "x86_64").normalized() == amd64
    assert Platform("linux", "aarch64", "8").normalized() == Platform("linux", "arm64")
    assert Platform("linux", "armhf").normalized() == Platform("linux", "arm", "v7")
    assert amd64.matches(Platform("linux", "amd64")) and amd64.matches(Platform("linux", "amd64", "v1"))
    assert amd64.matches(Platform("linux", "386")) and not amd64.matches(Platform("linux", "arm64"))
    assert arm64.matches(Platform("linux", "arm64")) and arm64.matches(Platform("linux", "arm64", "v8"))
    assert arm64.matches(Platform("linux", "arm", "v7")) and not arm64.matches(amd64)
    assert Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform("linux", "arm", "v6").matches(Platform("linux", "arm", "v7"))
    assert not amd64.matches(Platform("windows", "amd64"))


def test_host_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import bocker_engine.registry.manifest as m

    for machine, want in [
        ("x86_64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("i686", Platform("linux", "386")),
    ]:
        monkeypatch.setattr(m._platform, "machine", lambda machine=machine: machine)
        assert Platform.host() == want


# -- index selection and manifest parsing -------------------------------------------------------

D = "sha256:" + "a" * 64


def _entry(i: int, arch: str, variant: str = "", os: str = "linux") -> dict[str, object]:
    p = {"os": os, "architecture": arch}
    if variant:
        p["variant"] = variant
    return {"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{i:x}" * 64, "size": 100 + i, "platform": p}


def _index(*entries: dict[str, object], media_type: str = OCI_INDEX) -> Index:
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)}).encode()
    idx = parse(raw, "", compute_digest(raw))
    assert isinstance(idx, Index)
    return idx


def test_index_selection() -> None:
    idx = _index(
        _entry(1, "arm", "v6"),
        _entry(2, "amd64"),
        _entry(3, "arm64", "v8"),
        _entry(4, "unknown", os="unknown"),
        _entry(5, "arm", "v7"),
    )
    assert idx.select(Platform("linux", "amd64")).size == 102  # type: ignore[union-attr]
    assert idx.select(Platform("linux", "arm64")).size == 103  # type: ignore[union-attr]
    assert idx.select(Platform("linux", "arm", "v7")).size == 105  # type: ignore[union-attr]
    assert idx.select(Platform("linux", "arm", "v6")).size == 101  # type: ignore[union-attr]
    assert idx.select(Platform("linux", "s390x")) is None
    # arm64 hosts fall back to 32-bit arm, best variant first
    only_arm = _index(_entry(1, "arm", "v6"), _entry(2, "arm", "v7"), media_type=DOCKER_MANIFEST_LIST)
    assert only_arm.select(Platform("linux", "arm64", "v8")).size == 102  # type: ignore[union-attr]
    # amd64 takes 386 only when there is nothing better
    assert _index(_entry(1, "386")).select(Platform("linux", "amd64")).size == 101  # type: ignore[union-attr]


def test_manifest_parsing() -> None:
    cfg = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D, "size": 5}
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": cfg,
            "layers": [dict(cfg, size=7, urls=["https://x/y"])],
        }
    ).encode()
    m = parse(raw, "application/json", compute_digest(raw))
    assert isinstance(m, Manifest) and m.media_type == DOCKER_MANIFEST
    assert m.layers[0].size == 7 and m.layers[0].urls == ["https://x/y"]
    # OCI manifests may omit mediaType: the header or the shape tells
    oci = json.dumps({"schemaVersion": 2, "config": cfg, "layers": []}).encode()
    assert parse(oci, "", "d").media_type == OCI_MANIFEST
    with pytest.raises(InvalidParameter, match="schema 1 not supported"):
        parse(json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "application/json", "d")
    for bad in [
        b"[]",
        b"{",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": cfg,
                "layers": [dict(cfg, digest="sha256:short")],
            }
        ).encode(),
        json.dumps(
            {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": dict(cfg, size=-1), "layers": []}
        ).encode(),
    ]:
        with pytest.raises(InvalidParameter):
            parse(bad, "", "d")
