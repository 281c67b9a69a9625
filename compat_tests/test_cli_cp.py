"""`docker cp` and docker-py's put_archive/get_archive (issue 8): the archive endpoints.

Without `docker exec` (another part of issue 8), what a container sees is checked by copying it
back out, or by a created container that prints it when started afterwards.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.daemon import DOCKER, Daemon, wait_until
from tests.images import PASSWD


def _tar(entries: dict[str, bytes | None], *, uid: int = 0) -> bytes:
    """A tar with files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.uid = ti.gid = uid
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _read_out(dm: Daemon, ref: str, path: str) -> bytes:
    """The content of one file in the container, through GET archive."""
    stream, _ = dm.api().get_archive(ref, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        member = tf.next()
        assert member is not None and member.isfile(), member
        f = tf.extractfile(member)
        assert f is not None
        return f.read()


@pytest.fixture
def box(dm: Daemon) -> str:
    return dm.out("run", "-d", "--name", "box", "busybox", "sleep", "1000").strip()


def test_cp_directory_in_and_out(dm: Daemon, box: str, tmp_path: Path) -> None:
    src = tmp_path / "dir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.symlink("a.txt", src / "link")
    os.chmod(src / "sub", 0o750)
    r = dm.docker("cp", str(src), "box:/tmp/")
    assert r.returncode == 0, r.stderr
    # Back out under another name: same tree, same bytes, same modes, the symlink kept.
    back = tmp_path / "back"
    dm.out("cp", "box:/tmp/dir", str(back))
    assert (back / "a.txt").read_bytes() == b"alpha\n"
    assert (back / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert os.readlink(back / "link") == "a.txt"
    assert (back / "sub").stat().st_mode & 0o777 == 0o750
    # `-` streams the tar itself; a directory's entries carry its base name.
    raw = _raw_stdout(dm, "cp", "box:/etc", "-")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
    assert names[0] == "etc" and "etc/passwd" in names and "etc/group" in names


def _head_stat(dm: Daemon, ref: str, path: str) -> dict[str, Any]:
    api = dm.api()
    resp = api.head(api._url("/containers/{0}/archive", ref), params={"path": path})
    assert resp.status_code == 200, resp.status_code
    st: dict[str, Any] = json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))
    return st


def _raw_stdout(dm: Daemon, *args: str) -> bytes:
    r = subprocess.run([DOCKER, *args], env=dm.env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_cp_file_out_and_onto_a_file(dm: Daemon, box: str, tmp_path: Path) -> None:
    dm.out("cp", "box:/etc/passwd", str(tmp_path))
    assert (tmp_path / "passwd").read_text() == PASSWD
    # Onto an existing file: the file is replaced, under its own name.
    f = tmp_path / "new.txt"
    f.write_text("replaced\n")
    dm.out("cp", str(f), "box:/etc/passwd")
    assert _read_out(dm, "box", "/etc/passwd") == b"replaced\n"
    # To a new name in an existing directory.
    dm.out("cp", str(f), "box:/tmp/renamed")
    assert _read_out(dm, "box", "/tmp/renamed") == b"replaced\n"


def test_cp_errors_like_docker(dm: Daemon, box: str, tmp_path: Path) -> None:
    r = dm.docker("cp", "box:/nonexistent", str(tmp_path))
    assert r.returncode != 0
    assert "Could not find the file /nonexistent in container box" in r.stderr
    f = tmp_path / "f"
    f.write_text("x")
    r = dm.docker("cp", str(f), "box:/missing/parent/f")
    assert r.returncode != 0
    assert "Could not find the file /missing/parent in container box" in r.stderr
    # A directory over a file is refused by the CLI; a file over a directory by the daemon.
    d = tmp_path / "etc"
    d.write_text("not a dir")
    r = dm.docker("cp", str(d), "box:/")
    assert r.returncode != 0 and "cannot overwrite directory" in r.stderr, r.stderr
    api = dm.api()
    with pytest.raises(docker.errors.APIError) as e:
        api.put_archive("box", "/etc/passwd", _tar({"x": b"1"}))
    assert "extraction point is not a directory" in str(e.value) and "400" in str(e.value)
    with pytest.raises(docker.errors.APIError) as e:
        api.put_archive("box", "/tmp", b"this is not a tar stream at all" * 40)
    assert "400" in str(e.value)
    resp = api._get(api._url("/containers/{0}/archive", "box"), params={"path": ""})
    assert resp.status_code == 400 and "path cannot be empty" in resp.json()["message"]


def test_cp_into_a_created_container(dm: Daemon, tmp_path: Path) -> None:
    cid = dm.out("create", "--name", "later", "busybox", "cat", "/data/in.txt").strip()
    (tmp_path / "in.txt").write_text("copied before start\n")
    dm.out("cp", str(tmp_path / "in.txt"), "later:/tmp/")
    # A missing directory is created by copying a directory of that name.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("copied before start\n")
    dm.out("cp", str(tmp_path / "data"), "later:/")
    assert dm.out("start", "-a", cid) == "copied before start\n"
    # Exited too, and nothing stays mounted for it afterwards.
    assert _read_out(dm, cid, "/tmp/in.txt") == b"copied before start\n"


def test_cp_archive_mode_and_ownership(dm: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "owned"
    f.write_text("x")
    os.chown(f, 1234, 4321)
    dm.out("create", "--name", "owner", "--user", "app", "busybox", "stat", "-c", "%u:%g", "/tmp/owned")
    # Without -a the archive's owner is kept (dockerd's default Untar options)...
    dm.out("cp", str(f), "owner:/tmp/")
    assert dm.out("start", "-a", "owner") == "1234:4321\n"
    # ...with -a everything belongs to the container's user (app is 1000:1000 in the image).
    dm.out("cp", "-a", str(f), "owner:/tmp/")
    assert dm.out("start", "-a", "owner") == "1000:1000\n"


def test_cp_symlinks(dm: Daemon, box: str, tmp_path: Path) -> None:
    st = _head_stat(dm, "box", "/var/run")
    assert st["name"] == "run" and st["mode"] & (1 << 27) and st["linkTarget"] == "/run"
    # The link itself, as a link...
    dm.out("cp", "box:/var/run", str(tmp_path / "lnk"))
    assert os.readlink(tmp_path / "lnk") == "/run"
    # ...or, with -L, what it points to (an absolute link inside the container works).
    dm.out("cp", "-L", "box:/var/run", str(tmp_path / "followed"))
    assert (tmp_path / "followed").is_dir() and not (tmp_path / "followed").is_symlink()
    # Into a directory through an absolute symlink of the container.
    (tmp_path / "via").write_text("through /var/run\n")
    dm.out("cp", str(tmp_path / "via"), "box:/var/run/")
    assert _read_out(dm, "box", "/run/via") == b"through /var/run\n"


def _host_untouched(path: str) -> None:
    assert not os.path.lexists(path), f"{path} was written on the host"


def test_cp_hostile_symlinks_stay_in_the_container(dm: Daemon, tmp_path: Path) -> None:
    dm.out(
        "run", "-d", "--name", "hostile", "busybox", "sh", "-c",
        "ln -s / /escape && ln -s ../../.. /up && ln -s /../../etc /etc2 && touch /ready && sleep 1000",
    )  # fmt: skip
    api = dm.api()
    wait_until(lambda: api.head(api._url("/containers/hostile/archive"), params={"path": "/ready"}).status_code == 200)
    # Reads through the links give the container's files (its passwd, not the host's).
    for path in ("/escape/etc/passwd", "/up/etc/passwd", "/etc2/passwd", "/up/up/escape/etc/passwd"):
        out = tmp_path / "p"
        dm.out("cp", f"hostile:{path}", str(out))
        assert out.read_text() == PASSWD, path
        out.unlink()
    st = _head_stat(dm, "hostile", "/up")
    assert st["linkTarget"] == "/"
    # Writes through them land in the container's rootfs.
    marker = f"bocker-cp-escape-{os.getpid()}"
    (tmp_path / marker).write_text("inside\n")
    for dest in ("/escape/tmp/", "/up/tmp/", "/up/../../tmp/"):
        dm.out("cp", str(tmp_path / marker), f"hostile:{dest}")
        _host_untouched(f"/tmp/{marker}")
    assert _read_out(dm, "hostile", f"/tmp/{marker}") == b"inside\n"
    # A tar that walks through the links or climbs with `..` cannot leave the container either.
    hostile = _tar({f"escape/tmp/{marker}-2": b"via link\n", f"up/tmp/{marker}-3": b"up\n"})
    assert api.put_archive("hostile", "/", hostile)
    _host_untouched(f"/tmp/{marker}-2")
    _host_untouched(f"/tmp/{marker}-3")
    assert _read_out(dm, "hostile", f"/tmp/{marker}-2") == b"via link\n"
    with pytest.raises(docker.errors.APIError, match="climbs above"):
        api.put_archive("hostile", "/tmp", _tar({f"../../../../tmp/{marker}-4": b"climb\n"}))
    _host_untouched(f"/tmp/{marker}-4")


def test_dockerpy_put_and_get_archive(dm: Daemon, box: str) -> None:
    c = dm.client.containers.get("box")
    data = _tar({"pkg": None, "pkg/one": b"1\n", "pkg/two": b"2\n"})
    assert c.put_archive("/tmp", data) is True
    for name, compress in (("gz", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)):
        assert c.put_archive("/tmp", compress(_tar({f"c-{name}": name.encode()}))) is True
        assert _read_out(dm, "box", f"/tmp/c-{name}") == name.encode()
    stream, st = c.get_archive("/tmp/pkg")
    assert st["name"] == "pkg" and st["mode"] & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        assert sorted(tf.getnames()) == ["pkg", "pkg/one", "pkg/two"]
    # The `.` entry of an upload leaves the destination directory's own metadata alone.
    before = c.get_archive("/tmp")[1]["mode"]
    dot = io.BytesIO()
    with tarfile.open(fileobj=dot, mode="w") as tf:
        ti = tarfile.TarInfo(".")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o700
        tf.addfile(ti)
    assert c.put_archive("/tmp", dot.getvalue()) is True
    assert c.get_archive("/tmp")[1]["mode"] == before
