"""docker commit and docker build (the classic builder) through the stock CLI and docker-py."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import threading
from typing import Any

import pytest

from compat_tests.build_support import build, build_ctx, no_build_leftovers, prune_dangling  # noqa: F401 (autouse)
from tests.daemon import Daemon


def _inspect(dm: Daemon, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(dm.out("image", "inspect", ref))[0]
    return out


# ---- commit -------------------------------------------------------------------------------------


def test_commit_seed_workflow(dm: Daemon, images: list[str]) -> None:
    images.append("img:1")
    cid = dm.out(
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "rm /usr/bin/wget; echo '#!/bin/sh' > /usr/bin/wget && chmod +x /usr/bin/wget",
    ).strip()
    dm.out("wait", cid)
    out = dm.out("commit", "-c", 'CMD ["sh"]', "-c", "ENV X=1", "-m", "msg", "-a", "author", cid, "img:1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out)
    assert dm.out("run", "--rm", "img:1", "which", "wget").strip() == "/usr/bin/wget"
    info = _inspect(dm, "img:1")
    assert info["Config"]["Cmd"] == ["sh"]
    assert "X=1" in info["Config"]["Env"]
    assert info["Author"] == "author" and info["Comment"] == "msg"
    assert info["Parent"] == _inspect(dm, "busybox")["Id"]
    assert len(info["RootFS"]["Layers"]) == len(_inspect(dm, "busybox")["RootFS"]["Layers"]) + 1
    hist = dm.out("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", "img:1").splitlines()
    assert hist[0].startswith("sh -c rm /usr/bin/wget") and hist[0].endswith("|msg")


def test_commit_running_container_pauses_and_keeps_running(dm: Daemon, images: list[str]) -> None:
    images.append("live:1")
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "head -c 1048576 /dev/zero > /big; echo ready; sleep 300").strip()
    dm.wait_log(cid, "ready")
    dm.out("commit", cid, "live:1")
    assert dm.out("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", cid).strip() == "true false"
    assert dm.out("run", "--rm", "live:1", "wc", "-c", "/big").split()[0] == "1048576"
    dm.out("commit", "--pause=false", cid, "live:1")


def test_commit_without_changes_is_an_empty_layer(dm: Daemon, images: list[str]) -> None:
    images.append("same:1")
    cid = dm.out("create", "busybox", "true").strip()
    dm.out("commit", cid, "same:1")
    assert _inspect(dm, "same:1")["RootFS"]["Layers"] == _inspect(dm, "busybox")["RootFS"]["Layers"]


def test_commit_errors(dm: Daemon) -> None:
    r = dm.docker("commit", "nosuchcontainer", "x:1")
    assert r.returncode != 0 and "No such container" in r.stderr


def test_dockerpy_commit(dm: Daemon, images: list[str]) -> None:
    images.append("pycommit:2")
    c = dm.client.containers.run("busybox", "sh -c 'echo hi > /hi'", detach=True)
    c.wait()
    img = c.commit("pycommit", "2", changes=["LABEL a=b"], message="m")
    assert img.labels == {"a": "b"}
    assert dm.out("run", "--rm", "pycommit:2", "cat", "/hi").strip() == "hi"


def _rw_dir(dm: Daemon, cid: str) -> str:
    """Where the container's writable layer keeps its own files, on the host."""
    layerdb = os.path.join(dm.data_root, "image", dm.driver, "layerdb")
    with open(os.path.join(layerdb, "mounts", cid, "mount-id")) as f:
        mount_id = f.read().strip()
    if dm.driver == "btrfs":
        return os.path.join(dm.data_root, "btrfs", "subvolumes", mount_id)
    return os.path.join(dm.data_root, "overlay2", mount_id, "diff")


def _top_layer_dir(dm: Daemon, image: str) -> str:
    """The driver directory of the image's top layer, on the host."""
    top = _inspect(dm, image)["RootFS"]["Layers"]
    chain = top[0]
    for diff_id in top[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    layerdb = os.path.join(dm.data_root, "image", dm.driver, "layerdb")
    with open(os.path.join(layerdb, "sha256", chain.split(":")[1], "cache-id")) as f:
        cache = f.read().strip()
    if dm.driver == "btrfs":
        return os.path.join(dm.data_root, "btrfs", "subvolumes", cache)
    return os.path.join(dm.data_root, "overlay2", cache, "diff")


# Every path the change script touches, described the same way inside both containers.
_LIST = "cd / && for p in data data/* data/sub/* etc/passwd etc/group home home/app bin/busybox; do " \
    "if [ -e $p ] || [ -L $p ]; then stat -c '%n %F %a %u:%g %s %h' $p; " \
    "[ -d $p ] || [ -L $p ] || stat -c '%n %Y' $p; else echo \"$p gone\"; fi; done; " \
    "cat /data/a /data/hard /etc/passwd; readlink /data/sym"


def test_commit_tree_equals_container_tree(dm: Daemon, images: list[str]) -> None:
    """The committed layer holds what the container's tree holds: additions, changes, deletions
    (whiteouts), hard links, symlinks, fifos, owners, modes and xattrs; committing the same
    changes again gives the same layer."""
    images.extend(["tree:1", "tree:2", "tree:3"])
    script = (
        "mkdir -p /data/sub && echo a > /data/a && ln /data/a /data/hard && ln -s /data/a /data/sym"
        " && mkfifo /data/fifo && chmod 640 /data/a && echo f > /data/sub/f && chown -R 1000:50 /data/sub"
        " && echo 'x:x:7:7::/:/bin/sh' >> /etc/passwd && rm /etc/group && rm -r /home/app"
        " && echo ready && sleep 300"
    )
    cid = dm.out("run", "-d", "busybox", "sh", "-c", script).strip()
    dm.wait_log(cid, "ready")
    os.setxattr(os.path.join(_rw_dir(dm, cid), "data/sub/f"), "user.note", b"kept")
    changes = dm.out("diff", cid).splitlines()
    for line in ("A /data/sub/f", "D /etc/group", "D /home/app", "C /etc/passwd", "A /data/hard"):
        assert line in changes, changes
    before = dm.out("exec", cid, "sh", "-c", _LIST)
    assert "data/sub/f regular file 644 1000:50" in before and "data/hard regular file 640 0:0 2 2" in before
    dm.out("commit", cid, "tree:1")
    after = dm.out("run", "--rm", "tree:1", "sh", "-c", _LIST)
    assert after == before
    assert os.getxattr(os.path.join(_top_layer_dir(dm, "tree:1"), "data/sub/f"), "user.note") == b"kept"

    # Unchanged since: the same layer again (a new image: `created` differs).
    dm.out("commit", cid, "tree:2")
    assert _inspect(dm, "tree:2")["RootFS"]["Layers"] == _inspect(dm, "tree:1")["RootFS"]["Layers"]
    assert _inspect(dm, "tree:2")["Id"] != _inspect(dm, "tree:1")["Id"]

    # An xattr set on an image file, its mtime put back: only its ctime says it changed.
    path = os.path.join(_rw_dir(dm, cid), "bin/busybox")
    if dm.driver == "btrfs":  # overlay2 would need a copy-up first, which the container does
        st = os.lstat(path)
        os.setxattr(path, "user.note", b"on an image file")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert "C /bin/busybox" in dm.out("diff", cid).splitlines()
        dm.out("commit", cid, "tree:3")
        top = _top_layer_dir(dm, "tree:3")
        assert os.getxattr(os.path.join(top, "bin/busybox"), "user.note") == b"on an image file"
        assert _inspect(dm, "tree:3")["RootFS"]["Layers"][-1] != _inspect(dm, "tree:1")["RootFS"]["Layers"][-1]
    dm.out("rm", "-f", cid)


# ---- build: the basics --------------------------------------------------------------------------

DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM busybox
ENV A=1 B="two words"
WORKDIR /app
COPY hello.txt .
RUN echo built $A > /app/out \\
    && cat /app/hello.txt
LABEL k=v
CMD ["cat", "/app/out"]
"""


def test_build_output_run_and_cache(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("app:1")
    ctx = build_ctx(tmp_path, {"Dockerfile": DOCKERFILE, "hello.txt": "hello file\n"})
    r = build(dm, ctx, "-t", "app:1")
    out = r.stdout
    assert "Step 1/7 : FROM busybox\n" in out
    assert re.search(
        r"Step 5/7 : RUN echo built \$A > /app/out     && cat /app/hello.txt\n ---> Running in ([0-9a-f]{12})\n"
        r"hello file\nRemoving intermediate container \1\n ---> [0-9a-f]{12}\n",
        out,
    ), out
    built = re.search(r"Successfully built ([0-9a-f]{12})\n", out)
    assert built and "Successfully tagged app:1\n" in out
    assert _inspect(dm, "app:1")["Id"][7:19] == built.group(1)
    assert dm.out("run", "--rm", "app:1") == "built 1\n"
    info = _inspect(dm, "app:1")
    assert info["Config"]["WorkingDir"] == "/app"
    assert "B=two words" in info["Config"]["Env"]
    assert info["Config"]["Labels"] == {"k": "v"}
    hist = dm.out("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", "app:1").splitlines()
    assert hist[0] == '/bin/sh -c #(nop)  CMD ["cat" "/app/out"]|0B'
    assert hist[1] == "/bin/sh -c #(nop)  LABEL k=v|0B"
    assert hist[2].startswith("/bin/sh -c echo built $A > /app/out")
    assert re.fullmatch(r"/bin/sh -c #\(nop\) COPY file:[0-9a-f]{64} in /app/ \|11B", hist[3])
    assert hist[5] == "/bin/sh -c #(nop)  ENV A=1 B=two words|0B"
    no_build_leftovers(dm)
    # Everything cached the second time; a changed source misses from its step on.
    again = build(dm, ctx, "-t", "app:1").stdout
    assert again.count(" ---> Using cache\n") == 6 and "Running in" not in again
    assert re.search(r"Successfully built ([0-9a-f]{12})", again).group(1) == built.group(1)  # type: ignore[union-attr]
    (tmp_path / "ctx" / "hello.txt").write_text("changed\n")
    changed = build(dm, ctx, "-t", "app:1").stdout
    assert changed.count(" ---> Using cache\n") == 2 and "changed\n" in changed
    nocache = build(dm, ctx, "--no-cache", "-t", "app:1").stdout
    assert "Using cache" not in nocache


def test_build_quiet_stdin_and_tar(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    r = dm.docker("build", "-q", "-", input="FROM busybox\nLABEL quiet=1\n")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.stdout)
    images.append(r.stdout.strip())
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nCOPY f /f\n", "f": "from tar\n"})
    tar = subprocess.run(["tar", "-C", ctx, "-c", "."], capture_output=True, check=True).stdout
    images.append("fromtar:1")
    r2 = subprocess.run(
        ["docker", "build", "-t", "fromtar:1", "-"], input=tar, env=dm.env, capture_output=True, timeout=120
    )
    assert r2.returncode == 0, r2.stderr
    assert dm.out("run", "--rm", "fromtar:1", "cat", "/f") == "from tar\n"


def test_build_failure_exit_code_and_cleanup(dm: Daemon, tmp_path: Any) -> None:
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo before\nRUN false\n"})
    r = build(dm, ctx, check=False)
    assert r.returncode == 1
    assert "The command '/bin/sh -c false' returned a non-zero code: 1" in r.stderr
    ctx2 = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nRUN exit 7\n"})
    assert build(dm, ctx2, check=False).returncode == 7
    no_build_leftovers(dm)


def test_build_errors(dm: Daemon, tmp_path: Any) -> None:
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nFOO bar\n"}), check=False)
    assert r.returncode != 0 and "unknown instruction: FOO" in r.stderr
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nCOPY missing /x\n"}), check=False)
    assert r.returncode != 0 and "missing" in r.stderr
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM nosuchimage:here\n"}), check=False)
    assert r.returncode != 0
    no_build_leftovers(dm)


# ---- instructions -------------------------------------------------------------------------------


def test_build_every_config_instruction(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("cfg:1")
    df = """\
FROM busybox
MAINTAINER someone
ARG V=default
ENV E=$V
EXPOSE 80 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGKILL
HEALTHCHECK --interval=5s --retries=3 CMD true
USER 1000:1000
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo triggered > /tmp/onbuild
ENTRYPOINT ["/bin/echo"]
CMD ["hello"]
"""
    build(dm, build_ctx(tmp_path, {"Dockerfile": df}), "-t", "cfg:1", "--build-arg", "V=given")
    cfg = _inspect(dm, "cfg:1")["Config"]
    assert "E=given" in cfg["Env"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGKILL"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 3}
    assert cfg["User"] == "1000:1000"
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/onbuild"]
    assert cfg["Entrypoint"] == ["/bin/echo"] and cfg["Cmd"] == ["hello"]
    assert _inspect(dm, "cfg:1")["Author"] == "someone"
    assert dm.out("run", "--rm", "cfg:1") == "hello\n"
    # ONBUILD triggers run in a child build and are not inherited further.
    images.append("child:1")
    child = build(dm, build_ctx(tmp_path, {"Dockerfile": "FROM cfg:1\nUSER root\n"}), "-t", "child:1").stdout
    assert "# Executing 1 build trigger" in child
    assert dm.out("run", "--rm", "--entrypoint", "cat", "child:1", "/tmp/onbuild") == "triggered\n"
    assert _inspect(dm, "child:1")["Config"]["OnBuild"] is None
    # The trigger's RUN container had the image's VOLUME: removed with it, like dockerd's builder.
    assert dm.out("volume", "ls", "-q") == ""


def test_build_run_forms_env_user_workdir(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("runs:1")
    df = """\
FROM busybox
ENV GREETING=hi
WORKDIR /w
RUN ["sh", "-c", "echo exec $GREETING > exec.txt"]
RUN echo shell $(pwd) > shell.txt
USER nobody
RUN id -u > /tmp/uid
SHELL ["/bin/sh", "-c", "echo custom-shell; eval \\"$1\\"", "sh"]
RUN true
"""
    r = build(dm, build_ctx(tmp_path, {"Dockerfile": df}), "-t", "runs:1")
    assert "custom-shell" in r.stdout
    assert (
        dm.out("run", "--rm", "runs:1", "cat", "/w/exec.txt", "/w/shell.txt", "/tmp/uid")
        == "exec hi\nshell /w\n65534\n"
    )


def test_build_copy_add_variants(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("copies:1")
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w:gz") as tf:
        data = b"inside the archive\n"
        ti = tarfile.TarInfo("arch/inner.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    files: dict[str, str | bytes] = {
        "Dockerfile": """\
FROM busybox
COPY *.txt /globbed/
COPY dir /copied-dir
COPY --chown=nobody:nogroup --chmod=640 a.txt /owned
ADD stuff.tar.gz /extracted/
COPY stuff.tar.gz /notextracted/
COPY ["b.txt", "/json form/"]
""",
        "a.txt": "a\n",
        "b.txt": "b\n",
        "dir/sub/deep.txt": "deep\n",
        "stuff.tar.gz": tar_buf.getvalue(),
    }
    build(dm, build_ctx(tmp_path, files), "-t", "copies:1")
    script = (
        "ls /globbed; cat /copied-dir/sub/deep.txt; stat -c '%U:%G %a' /owned; cat /extracted/arch/inner.txt; "
        "ls /notextracted; cat '/json form/b.txt'"
    )
    out = dm.out("run", "--rm", "copies:1", "sh", "-c", script)
    assert out == "a.txt\nb.txt\ndeep\nnobody:nogroup 640\ninside the archive\nstuff.tar.gz\nb\n"


def test_build_context_cannot_escape(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("escape:1")
    ctx = build_ctx(
        tmp_path,
        {
            "Dockerfile": "FROM busybox\nCOPY link/passwd /stolen\nCOPY ../../../etc/hostname /up\n",
            "etc/hostname": "ctx-host\n",
            "etc/passwd": "ctx-passwd\n",
        },
    )
    os.symlink("/etc", os.path.join(ctx, "link"))
    build(dm, ctx, "-t", "escape:1")
    # The symlink and `..` resolve inside the context, never to the host's /etc.
    assert dm.out("run", "--rm", "escape:1", "cat", "/stolen", "/up") == "ctx-passwd\nctx-host\n"


def test_dockerignore(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("ign:1")
    files = {
        "Dockerfile": "FROM busybox\nCOPY . /ctx\n",
        ".dockerignore": "*.log\n!keep.log\nsecret\n**/tmp\n",
        "a.log": "x",
        "keep.log": "k",
        "secret/key": "s",
        "src/tmp/t": "t",
        "src/main": "m",
    }
    build(dm, build_ctx(tmp_path, files), "-t", "ign:1")
    listing = dm.out("run", "--rm", "ign:1", "find", "/ctx", "-type", "f").split()
    assert sorted(listing) == ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/keep.log", "/ctx/src/main"]


def test_multistage_target_args_labels_tags(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.extend(["ms:a", "ms:b", "ms:base"])
    df = """\
ARG BASE=busybox
FROM --platform=linux/amd64 ${BASE} AS base
ARG MSG=default
RUN echo "$MSG" > /msg
FROM base AS second
RUN echo second > /second
FROM busybox
COPY --from=base /msg /from-stage
COPY --from=1 /second /from-index
COPY --from=busybox /bin/busybox /from-image
"""
    files = {"other/Dockerfile.custom": df}
    ctx = build_ctx(tmp_path, files)
    r = build(
        dm,
        ctx,
        "-f",
        os.path.join(ctx, "other/Dockerfile.custom"),
        "--build-arg",
        "MSG=given",
        "--label",
        "lk=lv",
        "-t",
        "ms:a",
        "-t",
        "ms:b",
    )
    assert "Successfully tagged ms:a" in r.stdout and "Successfully tagged ms:b" in r.stdout
    assert dm.out("run", "--rm", "ms:a", "cat", "/from-stage", "/from-index") == "given\nsecond\n"
    assert _inspect(dm, "ms:a")["Config"]["Labels"] == {"lk": "lv"}
    build(dm, ctx, "-f", os.path.join(ctx, "other/Dockerfile.custom"), "--target", "base", "-t", "ms:base")
    assert dm.out("run", "--rm", "ms:base", "cat", "/msg") == "default\n"
    r = build(dm, ctx, "-f", os.path.join(ctx, "other/Dockerfile.custom"), "--build-arg", "UNUSED=1", "-t", "ms:base")
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in r.stdout


def test_add_url_from_local_server(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("url:1")
    served = tmp_path / "srv"
    served.mkdir()
    (served / "file.txt").write_text("over http\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/file.txt"
        build(dm, build_ctx(tmp_path, {"Dockerfile": f"FROM busybox\nADD {url} /downloaded/\n"}), "-t", "url:1")
    finally:
        srv.shutdown()
    assert dm.out("run", "--rm", "url:1", "cat", "/downloaded/file.txt") == "over http\n"


def test_scratch_and_reproducible(dm: Daemon, tmp_path: Any) -> None:
    ctx = build_ctx(tmp_path, {"Dockerfile": 'FROM scratch\nCOPY f /f\nCMD ["/f"]\n', "f": "data\n"})
    ids = []
    for _ in range(2):
        out = build(dm, ctx, "-q", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000").stdout.strip()
        ids.append(out)
        info = _inspect(dm, out)
        assert info["Created"] == "2023-11-14T22:13:20Z"
        dm.docker("rmi", out)
    assert ids[0] == ids[1]


def test_run_containers_get_the_build_network_and_limits(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("lim:1")
    df = (
        "FROM busybox\nRUN cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null"
        " > /mem; ip -o link show | grep -c eth0 > /eth || true\n"
    )
    build(dm, build_ctx(tmp_path, {"Dockerfile": df}), "--memory", "64m", "--network", "none", "-t", "lim:1")
    assert dm.out("run", "--rm", "lim:1", "cat", "/mem").strip() == str(64 * 1024 * 1024)
    assert dm.out("run", "--rm", "lim:1", "cat", "/eth").strip() == "0"


# ---- docker-py ----------------------------------------------------------------------------------


def test_dockerpy_build(dm: Daemon, images: list[str], tmp_path: Any) -> None:
    images.append("pybuild:1")
    ctx = build_ctx(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo from-py > /py\n"})
    img, logs = dm.client.images.build(path=ctx, tag="pybuild:1", rm=True)
    assert "pybuild:1" in img.tags
    assert any("Successfully built" in (chunk.get("stream") or "") for chunk in logs)
    assert dm.out("run", "--rm", "pybuild:1", "cat", "/py") == "from-py\n"
    import docker

    with pytest.raises(docker.errors.BuildError) as e:
        dm.client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 3\n"), rm=True)
    assert "returned a non-zero code: 3" in str(e.value)
