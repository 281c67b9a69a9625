"""Images through the CLI: import, list, inspect, history, tag, rmi, prune (issue 2)."""

from __future__ import annotations

import json
import re
import subprocess

from tests.daemon import Daemon
from tests.images import busybox_rootfs_tar


def _id(dm: Daemon, ref: str) -> str:
    return dm.out("image", "inspect", "-f", "{{.Id}}", ref).strip()


def test_import_from_file_and_stdin_with_changes(dm: Daemon, busybox_tar: str) -> None:
    out = dm.out("import", "-c", 'CMD ["sh", "-c", "echo from-cmd"]', "-c", "ENV GREETING=hi",
                 "-c", "WORKDIR /tmp", "-m", "my message", busybox_tar, "imp:v1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out)
    assert dm.out("run", "--rm", "imp:v1") == "from-cmd\n"
    assert dm.out("run", "--rm", "imp:v1", "sh", "-c", "echo $GREETING; pwd").split() == ["hi", "/tmp"]
    info = json.loads(dm.out("image", "inspect", "imp:v1"))[0]
    assert info["Config"]["Cmd"] == ["sh", "-c", "echo from-cmd"]
    assert "GREETING=hi" in info["Config"]["Env"]
    assert info["Comment"] == "my message"
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert info["Id"] == out.strip()
    with open(busybox_tar, "rb") as f:
        r = subprocess.run(["docker", "import", "-", "imp-stdin:latest"], env=dm.env, stdin=f,
                           capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Same content, same changes => a different config (creation time), but same layer.
    layers = json.loads(dm.out("image", "inspect", "imp-stdin"))[0]["RootFS"]["Layers"]
    assert layers == info["RootFS"]["Layers"]
    dm.out("rmi", "imp:v1", "imp-stdin")


def test_import_gzip_and_bad_input(dm: Daemon, tmp_path: object) -> None:
    import gzip
    import os

    path = os.path.join(str(tmp_path), "rootfs.tar.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(busybox_rootfs_tar()))
    dm.out("import", path, "gz:1")
    assert dm.out("run", "--rm", "gz:1", "echo", "ok") == "ok\n"
    dm.out("rmi", "gz:1")
    r = dm.docker("import", "-", "bad:1", input="this is not a tar")
    assert r.returncode != 0
    assert dm.docker("image", "inspect", "bad:1").returncode == 1
    r = dm.docker("import", path, "Bad:Name")
    assert r.returncode != 0 and "invalid reference format" in r.stderr


def test_images_list_filters(dm: Daemon) -> None:
    dm.out("tag", "busybox", "me/box:1")
    dm.out("tag", "busybox", "me/box:2")
    lines = dm.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert {"busybox:latest", "me/box:1", "me/box:2"} <= set(lines)
    assert sorted(dm.out("images", "me/box", "--format", "{{.Tag}}").split()) == ["1", "2"]
    assert dm.out("images", "-f", "reference=me/*:1", "--format", "{{.Repository}}:{{.Tag}}").split() == ["me/box:1"]
    assert dm.out("images", "-f", "dangling=true", "-q") == ""
    assert _id(dm, "me/box:1")[7:19] in dm.out("images", "-q")
    r = dm.docker("images", "-f", "bogus=1")
    assert r.returncode == 1 and "invalid filter 'bogus'" in r.stderr
    dm.out("rmi", "me/box:1", "me/box:2")


def test_inspect_history_tag_resolution(dm: Daemon) -> None:
    img = _id(dm, "busybox")
    for ref in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", img, img[7:], img[7:19]):
        assert _id(dm, ref) == img, ref
    hist = dm.out("history", "--no-trunc", "--format", "{{.ID}} {{.Comment}}", "busybox").splitlines()
    assert hist[0].startswith(img)
    dm.out("tag", img[7:19], "short:tag")
    assert _id(dm, "short:tag") == img
    r = dm.docker("tag", "busybox", "UPPER:case")
    assert r.returncode != 0
    r = dm.docker("image", "inspect", "nosuch")
    assert r.returncode == 1 and "No such image: nosuch" in r.stderr
    dm.out("rmi", "short:tag")


def test_rmi_semantics(dm: Daemon, busybox_tar: str) -> None:
    img = dm.out("import", busybox_tar, "del:1").strip()
    dm.out("tag", "del:1", "del:2")
    out = dm.out("rmi", "del:1")
    assert out.strip() == "Untagged: del:1"
    dm.out("create", "--name", "holder", "del:2", "true")
    r = dm.docker("rmi", "del:2")
    assert r.returncode == 1
    assert 'conflict: unable to remove repository reference "del:2" (must force) - container' in r.stderr
    # Forced: untagged and deleted even though a stopped container was made from it (dockerd does
    # the same); the container keeps its layers and still runs.
    out = dm.out("rmi", "-f", "del:2")
    assert "Untagged: del:2" in out and f"Deleted: {img}" in out
    assert dm.docker("image", "inspect", img).returncode == 1
    assert dm.out("start", "-a", "holder") == ""
    dm.out("rm", "holder")


def test_rmi_in_use_by_running(dm: Daemon, busybox_tar: str) -> None:
    img = dm.out("import", busybox_tar, "busy:1").strip()
    dm.out("run", "-d", "--name", "running-user", "busy:1", "sleep", "60")
    r = dm.docker("rmi", "-f", img)
    assert r.returncode == 1 and "image is being used by running container" in r.stderr
    dm.out("rm", "-f", "running-user")
    dm.out("rmi", "busy:1")


def test_prune_dangling(dm: Daemon, busybox_tar: str) -> None:
    img = dm.out("import", busybox_tar, "dang:1").strip()
    dm.out("import", busybox_tar, "dang:1")  # moves the tag: the first image is now dangling
    assert img[7:19] in dm.out("images", "-f", "dangling=true", "-q")
    out = dm.out("image", "prune", "-f")
    assert img in out
    assert dm.docker("image", "inspect", img).returncode == 1
    dm.out("rmi", "dang:1")


def test_layers_are_shared_and_collected(dm: Daemon, busybox_tar: str) -> None:
    before = len(dm.out("images", "-aq").split())
    a = dm.out("import", "-c", "CMD true", busybox_tar, "share:a").strip()
    b = dm.out("import", "-c", "CMD false", busybox_tar, "share:b").strip()
    assert a != b
    la = json.loads(dm.out("image", "inspect", "share:a"))[0]["RootFS"]["Layers"]
    lb = json.loads(dm.out("image", "inspect", "share:b"))[0]["RootFS"]["Layers"]
    assert la == lb
    dm.out("rmi", "share:a", "share:b")
    assert len(dm.out("images", "-aq").split()) == before
