"""Image references, parsed and normalised like github.com/distribution/reference.

`busybox` is `docker.io/library/busybox:latest` in full and `busybox:latest` in familiar form;
the CLI sends the full form, docker-py what the user typed, and both must land on the same image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bocker_engine.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
# A whole reference, loosely split so that errors can say which part is wrong.
_REFERENCE_RE = re.compile(rf"^(?P<name>[^@]+?)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>[^@]+))?$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name: docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Repository name as users write it: busybox, me/app, 127.0.0.1:5000/app."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_PREFIX) and "/" not in self.path[len(OFFICIAL_PREFIX) :]:
                return self.path[len(OFFICIAL_PREFIX) :]
            return self.path
        return self.name

    def __str__(self) -> str:
        return self._render(self.name)

    def familiar(self) -> str:
        return self._render(self.familiar_name)

    def _render(self, name: str) -> str:
        out = name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def tagged_or_latest(self) -> Reference:
        """Docker's TagNameOnly: a bare name means :latest; a digest reference stays as it is."""
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, DEFAULT_TAG, None)
        return self

    @property
    def repository(self) -> str:
        """Name without the domain, as registries see it: library/busybox."""
        return self.path


def split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1 :]
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(ref: str) -> Reference:
    """ParseNormalizedNamed: `busybox`, `busybox:1`, `me/app@sha256:...`, `host:5000/a/b:tag`."""
    if not ref:
        raise InvalidParameter("invalid reference format")
    if _HEX64_RE.match(ref):
        raise InvalidParameter(f"invalid repository name ({ref}), cannot specify 64-byte hexadecimal strings")
    m = _REFERENCE_RE.match(ref)
    if not m:
        raise InvalidParameter("invalid reference format")
    name, tag, digest = m.group("name"), m.group("tag"), m.group("digest")
    # `host:5000/app` matched "5000/app" as a tag: a tag cannot contain '/', so the regex
    # already refused that split; but `host:5000` alone is a name with tag "5000".
    domain, path = split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise InvalidParameter("invalid reference format")
    if path.lower() != path and _PATH_RE.match(path.lower()):
        raise InvalidParameter(f"invalid reference format: repository name ({path}) must be lowercase")
    if not _PATH_RE.match(path):
        raise InvalidParameter("invalid reference format")
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise InvalidParameter(
            f"invalid reference format: repository name must not be more than {NAME_TOTAL_MAX} characters"
        )
    if digest is not None and not _DIGEST_RE.match(digest):
        raise InvalidParameter("invalid reference format")
    return Reference(domain, path, tag, digest)


def parse_name(repo: str) -> Reference:
    """A repository name that must carry neither tag nor digest (tag/commit `repo=`)."""
    r = parse(repo)
    if r.tag is not None or r.digest is not None:
        raise InvalidParameter("invalid reference format")
    return r


def parse_repo_tag(repo: str, tag: str | None) -> Reference:
    """`repo` and `tag` query parameters (tag, commit, import, pull) to one tagged reference.

    The CLI may put the tag inside `repo` (`repo=x:v1`); an explicit `tag` wins, and a tag
    that looks like a digest selects by digest (`docker pull x@sha256:...` sends tag=sha256:...).
    """
    r = parse(repo)
    if tag:
        if ":" in tag and _DIGEST_RE.match(tag):
            return r.with_digest(tag)
        if not _TAG_RE.match(tag):
            raise InvalidParameter(f"invalid tag format: {tag}" if tag else "invalid reference format")
        return r.with_tag(tag)
    return r.tagged_or_latest()


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def is_digest(s: str) -> bool:
    return bool(_DIGEST_RE.match(s))
