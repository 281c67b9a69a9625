"""Image manifests and indexes (Docker schema 2, OCI), and choosing a platform from an index.

Platform matching follows containerd's `platforms.Only`: a host accepts its own platform first, then
the ones it can also run (arm64 runs arm/v8..v5, arm/v7 runs v6 and v5, amd64 runs 386).
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
from dataclasses import dataclass, field
from typing import Any

from bocker_engine.errors import InvalidParameter

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
# What we ask registries for, best first (dockerd's order).
ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX])

DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InvalidParameter(f"invalid digest format: {digest!r}")
    return digest


_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386",
}

# containerd's platforms package: what a one-word specifier may name.
_SPECIFIER_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_KNOWN_OS = frozenset((
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl", "netbsd",
    "openbsd", "plan9", "solaris", "windows", "zos",
))
_KNOWN_ARCH = frozenset((
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le", "loong64", "mips", "mipsle",
    "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64",
    "wasm",
))


def _go_quote(s: str) -> str:
    """Go's %q for the plain strings these messages hold."""
    return json.dumps(s)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, spec: str) -> Platform:
        """`linux/amd64`, `linux/arm64/v8`, `arm64` (os defaults to linux), `linux` (the host's
        architecture), with containerd's platforms.Parse rules and messages."""
        parts = spec.lower().split("/")
        for part in parts:
            if not _SPECIFIER_RE.match(part):
                raise InvalidParameter(
                    f"{_go_quote(part)} is an invalid component of {_go_quote(spec)}: platform specifier component "
                    f"must match {_go_quote(_SPECIFIER_RE.pattern)}: invalid argument"
                )
        # Kept as written (for messages); comparisons normalise.
        if len(parts) == 1:
            if parts[0] in _KNOWN_OS:
                return cls(parts[0], cls.host().architecture)
            if cls("linux", parts[0]).normalized().architecture in _KNOWN_ARCH:
                return cls("linux", parts[0])
            raise InvalidParameter(f"{_go_quote(spec)}: unknown operating system or architecture: invalid argument")
        if len(parts) > 3:
            raise InvalidParameter(f"{_go_quote(spec)}: cannot parse platform specifier: invalid argument")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        variant = ""
        if machine.startswith("armv"):
            variant = "v" + machine[4] if len(machine) > 4 and machine[4].isdigit() else ""
            machine = "arm"
        arch = _ARCH_ALIASES.get(machine, machine)
        if arch == "arm64":
            return cls("linux", arch, "v8")  # containerd's DefaultSpec says v8 for arm64 hosts
        return cls("linux", arch, variant).normalized()

    def normalized(self) -> Platform:
        """containerd's Normalize: aliases folded, default variants made explicit or dropped."""
        os_ = self.os.lower()
        arch = self.architecture.lower()
        variant = self.variant.lower()
        if arch in ("armhf",) and not variant:
            variant = "v7"
        elif arch == "armel" and not variant:
            variant = "v6"
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm":
            if variant in ("", "7"):
                variant = "v7"
            elif variant in ("5", "6", "8"):
                variant = "v" + variant
        elif arch == "arm64":
            if variant in ("8", "v8", "v8.0"):
                variant = ""
        elif arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(os_, arch, variant)

    def compatible(self) -> list[Platform]:
        """Platforms this one runs, in order of preference (containerd's platformVector)."""
        p = self.normalized()
        out = [p]
        if p.architecture == "amd64":
            level = _variant_number(p.variant)
            if level is not None and level > 1:
                out += [Platform(p.os, "amd64", f"v{v}" if v > 1 else "") for v in range(level - 1, 0, -1)]
            out.append(Platform(p.os, "386"))
        elif p.architecture == "arm":
            level = _variant_number(p.variant)
            if level is not None and level > 5:
                out += [Platform(p.os, "arm", f"v{v}") for v in range(level - 1, 4, -1)]
        elif p.architecture == "arm64":
            out += Platform(p.os, "arm", p.variant or "v8").compatible()
        return out

    def matches(self, other: Platform) -> bool:
        """Whether a host of this platform runs images built for `other`."""
        o = other.normalized()
        return any(c == o for c in self.compatible())

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def to_json(self) -> dict[str, str]:
        d = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        return d


def _variant_number(variant: str) -> int | None:
    v = variant[1:] if variant.startswith("v") else variant
    return int(v) if v.isdigit() else None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: list[str] = field(default_factory=list)
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> Descriptor:
        if not isinstance(d, dict):
            raise InvalidParameter("invalid descriptor: not a JSON object")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidParameter(f"invalid descriptor size: {size!r}")
        media_type = d.get("mediaType", "")
        if not isinstance(media_type, str):
            raise InvalidParameter("invalid descriptor mediaType")
        plat = None
        p = d.get("platform")
        if isinstance(p, dict):
            plat = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
        urls = d.get("urls") or []
        annotations = d.get("annotations") or {}
        if not isinstance(urls, list) or not isinstance(annotations, dict):
            raise InvalidParameter("invalid descriptor urls or annotations")
        return cls(media_type, check_digest(d.get("digest", "")), size,
                   [str(u) for u in urls], plat, {str(k): str(v) for k, v in annotations.items()})

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        return d


@dataclass
class Manifest:
    """An image manifest as fetched, with `raw` exactly the bytes whose digest is `digest`."""

    digest: str
    media_type: str
    raw: bytes
    config: Descriptor
    layers: list[Descriptor]
    # Set when the manifest was chosen from a list/index: what the tag points at (RepoDigests).
    index_digest: str | None = None
    platform: Platform | None = None


@dataclass
class Index:
    digest: str
    media_type: str
    raw: bytes
    manifests: list[Descriptor]

    def select(self, want: Platform) -> Descriptor | None:
        """The entry a `want` host runs best, first in index order among equally good ones."""
        entries = [m for m in self.manifests if m.platform is not None]
        for candidate in want.compatible():
            for m in entries:
                assert m.platform is not None
                if m.platform.normalized() == candidate:
                    return m
        return None


def detect_media_type(body: Any, content_type: str) -> str:
    """A manifest's type: its own mediaType field, else the response header, else its shape."""
    declared = body.get("mediaType") if isinstance(body, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in MANIFEST_TYPES + INDEX_TYPES + SCHEMA1_TYPES:
        return ct
    if isinstance(body, dict):
        if body.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1_SIGNED
        if "manifests" in body:
            return OCI_INDEX
        if "layers" in body and "config" in body:
            return OCI_MANIFEST
    return ct


def parse(raw: bytes, content_type: str, digest: str) -> Manifest | Index:
    """Raises InvalidParameter for anything but schema 2 / OCI manifests and indexes."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter(f"invalid manifest: {e}") from e
    if not isinstance(body, dict):
        raise InvalidParameter("invalid manifest: not a JSON object")
    media_type = detect_media_type(body, content_type)
    if media_type in SCHEMA1_TYPES or body.get("schemaVersion") == 1:
        raise InvalidParameter(
            "Docker Image manifest version 2, schema 1 not supported: support has been removed; "
            "suggest the author of the image to upgrade it to the OCI Format or "
            "Docker Image manifest v2, schema 2"
        )
    if body.get("schemaVersion") != 2:
        raise InvalidParameter(f"invalid manifest: unsupported schemaVersion {body.get('schemaVersion')!r}")
    if media_type in INDEX_TYPES:
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise InvalidParameter("invalid manifest list: manifests is not a list")
        return Index(digest, media_type, raw, [Descriptor.from_json(e) for e in entries])
    if media_type in MANIFEST_TYPES:
        layers = body.get("layers")
        if not isinstance(layers, list):
            raise InvalidParameter("invalid manifest: layers is not a list")
        return Manifest(digest, media_type, raw, Descriptor.from_json(body.get("config")),
                        [Descriptor.from_json(layer) for layer in layers])
    raise InvalidParameter(f"unsupported manifest media type {media_type!r}")
