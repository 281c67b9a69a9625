"""Remote build contexts (`remote=` on POST /build), as dockerd's builder/remotecontext does.

A URL is downloaded: a tar (maybe compressed) is the context, a text/plain body the Dockerfile
alone. A git URL is fetched with the `git` binary into the context directory, the way dockerd's
gitutil does it (init, fetch of one ref, shallow unless a dumb HTTP server, checkout, submodules),
with protocol.file disabled and the ref never taken for an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import EngineError, InvalidParameter, NotFound
from bocker_engine.progress import Message, ProgressSink

CLIENT_SESSION = "client-session"
# dockerd's acceptableRemoteMIME.
_ACCEPTABLE_MIME = re.compile(
    r"(?:application/(?:(?:x\-)?tar|octet\-stream|((?:x\-)?(?:gzip|bzip2?|xz)))|(?:text/plain))"
)
# dockerd's urlPathWithFragmentSuffix (its "." matches any character, kept as it is).
_GIT_SUFFIX = re.compile(r".git(?:#.+)?$")
PREAMBLE = 1024


class RemoteError(EngineError):
    """A failed download, with dockerd's status for it."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def is_git_url(s: str) -> bool:
    if is_url(s) and _GIT_SUFFIX.search(s):
        return True
    return s.startswith(("git://", "github.com/", "git@"))


def check(remote: str) -> None:
    """The errors dockerd gives before anything is fetched."""
    if remote == CLIENT_SESSION:
        raise InvalidParameter(
            "experimental session with v1 builder is no longer supported, use builder version v2 (BuildKit) instead"
        )
    if not is_git_url(remote) and not is_url(remote):
        raise InvalidParameter(f"remoteURL ({remote}) could not be recognized as URL")


# ---- URLs ---------------------------------------------------------------------------------------


def _detect(preamble: bytes) -> str:
    """Go's http.DetectContentType for what matters here: archives, else text or binary."""
    if preamble.startswith(b"\x1f\x8b"):
        return "application/x-gzip"
    if preamble.startswith(b"BZh"):
        return "application/x-bzip2"
    if preamble.startswith(b"\xfd7zXZ\x00"):
        return "application/x-xz"
    if len(preamble) >= 262 and preamble[257:262] == b"ustar":
        return "application/x-tar"
    if any(b < 0x20 and b not in b"\t\n\r\x0c\x1b" for b in preamble):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def content_type(header: str, preamble: bytes) -> tuple[str, str]:
    """(the accepted MIME type, "") or ("", dockerd's error) for a response's Content-Type."""
    ct = header
    if not ct or ct == "application/octet-stream":
        ct = _detect(preamble)
    m = _ACCEPTABLE_MIME.search(ct)
    if m is None:
        return "", f'unsupported Content-Type "{header}"'
    return m.group(0), ""


class Download:
    """The body of a URL, checked like dockerd's downloadRemote (status, content type):

    async with Download(url, progress) as d:   # d.mime: "text/plain" or an archive type
        async for chunk in d.chunks(): ...
    """

    def __init__(self, url: str, progress: ProgressSink) -> None:
        self.url = url
        self.progress = progress
        self.mime = ""
        self._preamble = b""
        self._session: Any = None
        self._resp: Any = None

    async def __aenter__(self) -> Download:
        import aiohttp

        url = self.url
        self._session = aiohttp.ClientSession()
        try:
            try:
                self._resp = resp = await self._session.get(url)
            except aiohttp.ClientError as e:
                raise RemoteError(f"error downloading remote context {url}: {e}") from None
            if resp.status >= 400:
                body = (await resp.read()).decode("utf-8", "replace").strip()
                code = resp.status if resp.status in (400, 401, 403, 404) else 500
                raise RemoteError(
                    f"error downloading remote context {url}: failed to GET {url} with status "
                    f"{resp.status} {resp.reason}: {body}",
                    code,
                )
            while len(self._preamble) < PREAMBLE:
                data = await resp.content.read(PREAMBLE - len(self._preamble))
                if not data:
                    break
                self._preamble += data
            if not self._preamble:
                raise RemoteError(f"error detecting content type for remote {url}: empty response")
            self.mime, err = content_type(resp.headers.get("Content-Type", ""), self._preamble)
            if err:
                raise RemoteError(f"error detecting content type for remote {url}: {err}")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            self._resp.release()
        await self._session.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        import aiohttp

        done = len(self._preamble)
        total = self._resp.content_length or 0
        yield self._preamble
        try:
            async for chunk in self._resp.content.iter_chunked(1 << 20):
                done += len(chunk)
                yield chunk
        except aiohttp.ClientError as e:
            raise RemoteError(f"error downloading remote context {self.url}: {e}") from None
        self.progress(
            Message(
                status=f"Downloading build context from remote url: {self.url}",
                current=done,
                total=total or done,
                detail=True,
            )
        )


# ---- git ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitRemote:
    remote: str
    ref: str
    subdir: str


def parse_git_url(url: str) -> GitRemote:
    """dockerd's parseRemoteURL: `#ref:subdir` fragments, `github.com/` as https."""
    if url.startswith("github.com/"):
        url = "https://" + url
    remote, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    if not ref:
        ref = "master"
    if ref.startswith("-"):
        raise InvalidParameter(f"invalid refspec: {ref}")
    return GitRemote(remote, ref, subdir)


async def _supports_shallow(remote: str) -> bool:
    """Smart HTTP servers and every other transport do; a dumb HTTP server does not."""
    if not is_url(remote):
        return True
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(remote + "/info/refs?service=git-upload-pack") as resp,
        ):
            return (
                resp.status == 200 and resp.headers.get("Content-Type") == "application/x-git-upload-pack-advertisement"
            )
    except (aiohttp.ClientError, ValueError):
        return False


async def _git(cwd: str, *args: str) -> tuple[int, str]:
    """One git command; killed with its helpers (remote-http, fetch-pack) when the build is
    cancelled, so nothing writes into the context directory after it is removed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": cwd,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "protocol.file.allow=never",
        *args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace").strip()


async def clone(url: str, root: str) -> str:
    """Fetch `url` into `root`; returns the context directory (root or its subdir)."""
    if shutil.which("git") is None:
        raise InvalidParameter("unable to find 'git': exec: \"git\": executable file not found in $PATH")
    g = parse_git_url(url)
    code, out = await _git(root, "init")
    if code:
        raise InvalidParameter(f"failed to init repo at {root}: {out}")
    code, out = await _git(root, "remote", "add", "origin", g.remote)
    if code:
        raise InvalidParameter(f"failed add origin repo at {g.remote}: {out}")
    shallow = ["--depth", "1"] if await _supports_shallow(g.remote) else []
    code, out = await _git(root, "fetch", *shallow, "origin", "--", g.ref)
    if code:
        raise InvalidParameter(f"error fetching: {out}")
    code, out = await _git(root, "checkout", g.ref)
    if code and (await _git(root, "checkout", "FETCH_HEAD"))[0]:
        raise InvalidParameter(f"error checking out {g.ref}: {out}")
    code, out = await _git(root, "submodule", "update", "--init", "--recursive", "--depth=1")
    if code:
        raise InvalidParameter(f"error initializing submodules: {out}")
    if not g.subdir:
        return root
    real_root = os.path.realpath(root)
    ctx = os.path.realpath(os.path.join(root, g.subdir))
    if os.path.commonpath([ctx, real_root]) != real_root:
        raise InvalidParameter(f'error setting git context, "{g.subdir}" not within git root')
    if not os.path.isdir(ctx):
        raise NotFound(f"error setting git context, not a directory: {ctx}")
    return ctx
