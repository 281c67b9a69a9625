"""How POST /build fails, as dockerd's postBuild does: an error before any output is the HTTP
status (the CLI prints "Error response from daemon: ...", docker-py raises APIError), one after
the first step started stays in the 200 stream (the CLI prints the message, docker-py raises
BuildError). With -q dockerd holds the output back and applies the same rule to what it held.
The expected statuses and messages are dockerd 20.10's, taken from a real one."""

from __future__ import annotations

import io
import subprocess
import tarfile
from typing import Any

import docker
import pytest

from compat_tests.build_support import build_ctx, prune_dangling  # noqa: F401 (autouse)
from tests.daemon import Daemon


def _tar(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _ctx(tmp_path: Any, dockerfile: str) -> str:
    return build_ctx(tmp_path, {"Dockerfile": dockerfile})


# (Dockerfile or None for none in the context, build params, status, message)
BEFORE_OUTPUT = [
    ("FROM busybox\nFOO bar\n", {}, 400, "dockerfile parse error line 2: unknown instruction: FOO"),
    ("", {}, 400, "the Dockerfile (Dockerfile) cannot be empty"),
    ("# only a comment\n", {}, 400, "failed to parse Dockerfile: file with no instructions"),
    ("FROM busybox\n", {"target": "nope"}, 400, "failed to reach build target nope in Dockerfile"),
    ("FROM busybox AS 1x\n", {}, 400,
     'dockerfile parse error line 1: invalid name for build stage: "1x", name can\'t start with a number or contain '
     "symbols"),
    ("FROM busybox\nONBUILD ONBUILD RUN true\n", {}, 400,
     "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ENV A=b\nFROM busybox\n", {}, 400, "no build stage in current context"),
    ("# escape=x\nFROM busybox\n", {}, 400,
     "failed to parse Dockerfile: invalid escape token 'x' does not match ` or \\"),
    (None, {}, 500, "Cannot locate specified Dockerfile: Dockerfile"),
    ("FROM busybox\n", {"dockerfile": "sub/Other"}, 500, "Cannot locate specified Dockerfile: sub/Other"),
]


@pytest.mark.parametrize("quiet", [False, True])
def test_errors_before_output_are_the_http_status(dm: Daemon, quiet: bool) -> None:
    api = dm.api()
    for dockerfile, params, status, message in BEFORE_OUTPUT:
        files = {} if dockerfile is None else {"Dockerfile": dockerfile}
        with pytest.raises(docker.errors.APIError) as e:
            for _ in api.build(fileobj=_tar(files), custom_context=True, quiet=quiet, decode=True, **params):
                pass
        assert (e.value.status_code, e.value.explanation) == (status, message), dockerfile
        assert not isinstance(e.value, docker.errors.BuildError)


def test_docker_py_high_level_raises_api_error(dm: Daemon) -> None:
    with pytest.raises(docker.errors.APIError) as e:
        dm.client.images.build(fileobj=io.BytesIO(b"FROM busybox\nFOO bar\n"))
    assert e.value.status_code == 400
    assert e.value.explanation == "dockerfile parse error line 2: unknown instruction: FOO"
    with pytest.raises(docker.errors.BuildError) as e2:
        dm.client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN false\n"))
    assert e2.value.msg == "The command '/bin/sh -c false' returned a non-zero code: 1"


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_prints_the_daemon_error(dm: Daemon, tmp_path: Any, quiet: bool) -> None:
    flags = ["-q"] if quiet else []
    for dockerfile, args, message in [
        ("FROM busybox\nFOO bar\n", [], "dockerfile parse error line 2: unknown instruction: FOO"),
        ("", [], "the Dockerfile (Dockerfile) cannot be empty"),
        ("FROM busybox\n", ["--target", "nope"], "failed to reach build target nope in Dockerfile"),
    ]:
        r = dm.docker("build", *flags, *args, _ctx(tmp_path, dockerfile), timeout=120)
        assert r.returncode == 1
        assert f"Error response from daemon: {message}\n" in r.stderr, r.stderr
        assert "Step 1/" not in r.stdout + r.stderr
    # A context without a Dockerfile (the CLI checks a directory itself, not a tar on stdin; a
    # Python PAX tar is not one for the CLI, which then sends it as a Dockerfile).
    empty = tmp_path / "empty"
    empty.mkdir()
    tar = subprocess.run(["tar", "-C", str(empty), "-c", "."], capture_output=True, check=True).stdout
    r2 = subprocess.run(["docker", "build", *flags, "-"], input=tar, env=dm.env, capture_output=True, timeout=120)
    assert r2.returncode == 1
    assert b"Error response from daemon: Cannot locate specified Dockerfile: Dockerfile\n" in r2.stderr, r2.stderr


def test_errors_after_output_stay_in_the_stream(dm: Daemon, tmp_path: Any) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nRUN false\n")
    r = dm.docker("build", ctx, timeout=120)
    assert r.returncode == 1
    assert "Step 2/2 : RUN false" in r.stdout
    assert "The command '/bin/sh -c false' returned a non-zero code: 1" in r.stderr
    assert "Error response from daemon" not in r.stderr
    # -q: the held output is replayed before the error, and the CLI prints both on stderr.
    r = dm.docker("build", "-q", ctx, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert "Step 1/2 : FROM busybox\n" in r.stderr and " ---> Running in " in r.stderr, r.stderr
    assert r.stderr.rstrip().endswith("The command '/bin/sh -c false' returned a non-zero code: 1"), r.stderr
    # An error that is not a RUN's exit carries no code (dockerd's FormatError of a plain error).
    api = dm.api()
    chunks = list(api.build(fileobj=_tar({"Dockerfile": "FROM busybox\nCOPY nofile /\n"}), custom_context=True,
                            decode=True))
    assert chunks[0] == {"stream": "Step 1/2 : FROM busybox\n"}
    assert chunks[-1]["errorDetail"] == {"message": chunks[-1]["error"]}
    assert chunks[-1]["error"].startswith("COPY failed: file not found in build context")


def test_quiet_success_sends_only_the_image_id(dm: Daemon, images: list[str]) -> None:
    api = dm.api()
    chunks = list(api.build(fileobj=_tar({"Dockerfile": "FROM busybox\nLABEL q=1\n"}), custom_context=True,
                            quiet=True, tag="quiet-only:1", decode=True))
    images.append("quiet-only:1")
    assert len(chunks) == 1, chunks
    image_id = chunks[0]["stream"].strip()
    assert image_id.startswith("sha256:") and dm.client.images.get("quiet-only:1").id == image_id


def test_bad_query_parameters_are_400(dm: Daemon) -> None:
    api = dm.api()
    with pytest.raises(docker.errors.APIError) as e:
        for _ in api.build(fileobj=_tar({"Dockerfile": "FROM busybox\n"}), custom_context=True,
                           platform="linux//"):
            pass
    assert e.value.status_code == 400 and "invalid component" in e.value.explanation
    resp = api._post(api._url("/build"), params={"buildargs": "{x"}, data=_tar({"Dockerfile": "FROM busybox\n"}),
                     headers={"Content-Type": "application/x-tar"})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("error reading build args: ")
