"""docker build beyond a local context: --cache-from with pulled images, --platform, remote
contexts (a tarball URL, git), heredocs, and a build cancelled by the client hanging up."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from bocker_engine.registry.manifest import Platform
from compat_tests.build_support import build, build_ctx, no_build_leftovers, prune_dangling  # noqa: F401 (autouse)
from tests.daemon import DOCKER, Daemon, wait_until
from tests.registry_fixtures import RegistryHandle, start_registry

needs_registry = pytest.mark.skipif(
    not os.path.exists("/usr/bin/docker-registry"), reason="needs Debian's docker-registry package"
)


@pytest.fixture(scope="module")
def reg() -> Iterator[RegistryHandle]:
    with start_registry(None, mode="anonymous") as r:
        yield r


def _image_id(dm: Daemon, ref: str) -> str:
    return dm.out("image", "inspect", "--format", "{{.Id}}", ref).strip()


# ---- --cache-from -------------------------------------------------------------------------------

CACHED_DOCKERFILE = """FROM busybox
ENV GREETING=hello
COPY f /f
RUN cat /f > /copied && echo built >> /copied
CMD ["cat", "/copied"]
"""


@needs_registry
def test_cache_from_a_pulled_image(dm: Daemon, reg: RegistryHandle, images: list[str], tmp_path: Any) -> None:
    ref = f"{reg.host}/{dm.driver}/cachefrom:1"
    images.append(ref)
    ctx = build_ctx(tmp_path, {"Dockerfile": CACHED_DOCKERFILE, "f": "content\n"})
    build(dm, ctx, "-t", ref)
    built = _image_id(dm, ref)
    dm.out("push", ref)
    dm.out("rmi", ref)  # and its intermediate images: nothing of the build is left
    assert dm.docker("image", "inspect", built).returncode != 0
    dm.out("pull", ref)
    assert _image_id(dm, ref) == built

    # A pulled image has no parent links: without --cache-from every step runs again.
    r = build(dm, ctx)
    assert "Using cache" not in r.stdout
    assert "Running in" in r.stdout

    r = build(dm, ctx, "--cache-from", ref, "-t", "cachefrom:local")
    images.append("cachefrom:local")
    assert r.stdout.count(" ---> Using cache\n") == 4, r.stdout
    assert "Running in" not in r.stdout
    assert _image_id(dm, "cachefrom:local") == built
    assert dm.out("run", "--rm", "cachefrom:local") == "content\nbuilt\n"

    # docker-py's cache_from, and a changed step: the steps before it still come from the cache.
    img, logs = dm.client.images.build(path=ctx, cache_from=[ref], tag="cachefrom:py")
    images.append("cachefrom:py")
    assert img.id == built
    (tmp_path / "ctx" / "f").write_text("changed\n")
    r = build(dm, ctx, "--cache-from", ref, "-t", "cachefrom:changed")
    images.append("cachefrom:changed")
    assert r.stdout.count(" ---> Using cache\n") == 1, r.stdout  # ENV only
    assert dm.out("run", "--rm", "cachefrom:changed") == "changed\nbuilt\n"
    # An unknown --cache-from image is skipped (never pulled), and as with dockerd, local images
    # that are no ancestors of a --cache-from image are not used either: nothing is cached here,
    # though the build just before made every step locally.
    r = build(dm, ctx, "--cache-from", f"{reg.host}/{dm.driver}/nothing:here")
    assert "Using cache" not in r.stdout
    assert "Using cache" in build(dm, ctx).stdout


# ---- a client that hangs up --------------------------------------------------------------------


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


@pytest.mark.parametrize("kill_at", ["step output", "step line"])
def test_client_hanging_up_cancels_the_build(dm: Daemon, tmp_path: Any, kill_at: str) -> None:
    """Killed while the RUN's container runs, or as the RUN step starts (its container being
    created or started): either way nothing of the build is left."""
    layer_mounts = os.path.join(dm.base, "data", "image", dm.driver, "layerdb", "mounts")
    before_rw = sorted(os.listdir(layer_mounts))
    before_mounts = _mounts_under(dm.base)
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nCOPY f /f\nRUN echo step-started && sleep 30\n", "f": "x"})
    cli = subprocess.Popen([DOCKER, "build", "--no-cache", ctx], env=dm.env, stdout=subprocess.PIPE, text=True)
    until = "step-started\n" if kill_at == "step output" else "Step 3/3 : RUN echo step-started && sleep 30\n"
    try:
        assert cli.stdout is not None
        seen = ""
        for line in cli.stdout:  # bounded: the step prints at once and then sleeps 30 s
            seen += line
            if line == until:
                break
        assert until in seen, seen
        if kill_at == "step output":
            assert len(dm.out("ps", "-aq").split()) == 1  # the RUN step's container
        cli.send_signal(signal.SIGKILL)
    finally:
        cli.kill()
        cli.wait(timeout=30)

    # Well before the step's 30 s: its container is killed and removed, its layer and the build's
    # scratch layers and context are gone, nothing stays mounted.
    wait_until(lambda: dm.out("ps", "-aq").split() == [], 20, "the step's container removed")
    wait_until(lambda: sorted(os.listdir(layer_mounts)) == before_rw, 20, "the build's writable layers removed")
    wait_until(lambda: _mounts_under(dm.base) == before_mounts, 20, "the build's mounts gone")
    no_build_leftovers(dm)
    assert dm.out("run", "--rm", "busybox", "echo", "still serving") == "still serving\n"


# ---- --platform ---------------------------------------------------------------------------------


@needs_registry
def test_platform(dm: Daemon, reg: RegistryHandle, images: list[str], tmp_path: Any) -> None:
    host = Platform.host()
    # The host's platform: the local image is used, nothing is pulled.
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nRUN true\n"})
    r = build(dm, ctx, "--platform", f"{host.os}/{host.architecture}", "-t", "plat:host")
    images.append("plat:host")
    assert "Pulling" not in r.stdout
    assert json.loads(dm.out("image", "inspect", "plat:host"))[0]["Architecture"] == host.architecture

    # A single-platform image of the host's architecture, asked for another platform: dockerd
    # looks for that platform locally, pulls, and fails (the classic builder does not emulate).
    ref = f"{reg.host}/{dm.driver}/plat:1"
    dm.out("tag", "busybox", ref)
    images.append(ref)
    dm.out("push", ref)
    dm.out("rmi", ref)
    foreign = "linux/s390x" if host.architecture != "s390x" else "linux/arm64"
    wanted = f"does not match the specified platform: wanted {foreign}, actual: {host.os}/{host.architecture}"
    from_ref = build_ctx(tmp_path, {"Dockerfile": f"FROM {ref}\nRUN true\n"}, "c2")
    r = build(dm, from_ref, "--platform", foreign, check=False)
    assert r.returncode == 1 and wanted in r.stdout + r.stderr, r.stdout + r.stderr
    # FROM --platform (with a build arg) does the same, and wins over --platform.
    df = f"ARG P={foreign}\nFROM --platform=$P {ref}\nRUN true\n"
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": df}, "c3"), check=False)
    assert r.returncode == 1 and wanted in r.stdout + r.stderr, r.stdout + r.stderr
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": df}, "c3"), "--platform", str(host), check=False)
    assert r.returncode == 1 and wanted in r.stdout + r.stderr, r.stdout + r.stderr
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM --platform=linux/ busybox\n"}, "c4"), check=False)
    assert r.returncode == 1 and "failed to parse platform linux/: " in r.stdout + r.stderr, r.stdout + r.stderr
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM --platform=windows/amd64 scratch\n"}, "c5"), check=False)
    assert r.returncode == 1 and "operating system is not supported" in r.stdout + r.stderr
    # A bad --platform is the API's 400, before anything is built.
    r = build(dm, ctx, "--platform", "linux/", check=False)
    assert r.returncode == 1 and "Error response from daemon" in r.stderr and "invalid component" in r.stderr
    no_build_leftovers(dm)


# ---- remote contexts ----------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[Any, str]]:
    """A directory served over HTTP on the loopback: (its path, its base URL)."""
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _tar(files: Mapping[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tf.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


def _remote_build(dm: Daemon, remote: str) -> str:
    """POST /build?remote=... as is (docker-py only sends remote= for what looks like a URL):
    the status and the whole answer."""
    api = dm.api()
    resp = api._post(api._url("/build"), params={"remote": remote}, timeout=120)
    texts = []
    for line in resp.text.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            texts.append(line)
        else:
            texts.append(str(msg.get("error") or msg.get("message") or msg.get("stream") or ""))
    return f"{resp.status_code} " + "\n".join(texts)


def test_remote_tarball_context(dm: Daemon, images: list[str], served: tuple[Any, str]) -> None:
    root, url = served
    files = {"Dockerfile": 'FROM busybox\nCOPY hello /hello\nCMD ["cat", "/hello"]\n', "hello": "from a url\n"}
    (root / "ctx.tar.gz").write_bytes(_tar(files))
    (root / "Dockerfile").write_text("FROM busybox\nRUN echo only a dockerfile > /only\n")
    (root / "page.html").write_text("<html></html>")

    # The CLI downloads the context itself (and sends it as the body); docker-py sends remote=.
    r = dm.docker("build", "-t", "remote:cli", f"{url}/ctx.tar.gz", timeout=180)
    images.append("remote:cli")
    assert r.returncode == 0, r.stdout + r.stderr
    assert dm.out("run", "--rm", "remote:cli") == "from a url\n"
    img, logs = dm.client.images.build(path=f"{url}/ctx.tar.gz", tag="remote:py")
    images.append("remote:py")
    assert dm.out("run", "--rm", "remote:py") == "from a url\n"
    assert any("Downloading build context from remote url" in str(e.get("status", "")) for e in logs), logs
    # A bare Dockerfile (application/octet-stream that reads as text): no context around it.
    img, _ = dm.client.images.build(path=f"{url}/Dockerfile", tag="remote:text", rm=True)
    images.append("remote:text")
    assert dm.out("run", "--rm", "remote:text", "cat", "/only") == "only a dockerfile\n"

    # dockerd's errors.
    errors = {
        f"{url}/missing.tar": f"error downloading remote context {url}/missing.tar: failed to GET {url}/missing.tar "
        "with status 404 File not found",
        f"{url}/page.html": f"error detecting content type for remote {url}/page.html: "
        'unsupported Content-Type "text/html"',
        "ftp://127.0.0.1/x": "remoteURL (ftp://127.0.0.1/x) could not be recognized as URL",
        "client-session": "experimental session with v1 builder is no longer supported",
    }
    for remote, message in errors.items():
        text = _remote_build(dm, remote)
        assert message in text, (remote, text)
    no_build_leftovers(dm)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_remote_git_context(dm: Daemon, images: list[str], served: tuple[Any, str], tmp_path: Any) -> None:
    root, url = served
    work = tmp_path / "work"
    work.mkdir()

    def git(*args: str, cwd: Any = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)

    git("init", "-q", "-b", "main")
    (work / "sub").mkdir()
    (work / "sub" / "Dockerfile").write_text("FROM busybox\nCOPY data /data\n")
    (work / "sub" / "data").write_text("from git\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "ctx")
    git("clone", "-q", "--bare", str(work), str(root / "repo.git"))
    git("update-server-info", cwd=root / "repo.git")  # a dumb HTTP server: no shallow fetch

    img, _ = dm.client.images.build(path=f"{url}/repo.git#main:sub", tag="remote:git")
    images.append("remote:git")
    assert dm.out("run", "--rm", "remote:git", "cat", "/data") == "from git\n"
    out = _remote_build(dm, f"{url}/repo.git#no-such-branch")
    assert "error fetching: " in out, out
    out = _remote_build(dm, f"{url}/repo.git#main:../../..")
    assert "not within git root" in out, out
    no_build_leftovers(dm)


# ---- heredocs -----------------------------------------------------------------------------------


def test_heredocs_are_ignored_like_dockerds_classic_builder(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    """dockerd's classic builder parses heredocs (BuildKit's parser) but drops their bodies: a RUN
    runs its line alone (the shell sees an empty here-document), a COPY copies its path sources
    only. BuildKit is what gives them meaning."""
    df = (
        "FROM busybox\n"
        "RUN <<EOF\necho from-heredoc > /ran\nEOF\n"
        "RUN cat <<X > /catted\nbody\nX\n"
        "COPY <<EOF /file\nhello\nEOF\n"
        "COPY f <<EOF2 /d/\nxx\nEOF2\n"
    )
    images.append("heredoc:1")
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": df, "f": "f\n"}), "-t", "heredoc:1")
    assert "Step 5/5" in r.stdout, r.stdout
    script = (
        "test ! -e /ran && test -f /catted && test ! -s /catted && test ! -e /file"
        " && cat /d/f && test ! -e /d/EOF2 && echo ok"
    )
    assert dm.out("run", "--rm", "heredoc:1", "sh", "-c", script) == "f\nok\n"
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nCOPY f <<EOF\nx\nEOF\n", "f": ""}, "c2")
    r = build(dm, ctx, check=False)
    assert r.returncode == 1 and "COPY cannot accept a heredoc as a destination" in r.stdout + r.stderr
