"""storage/container_copy.py: docker cp's stat, tar out and extract in, on a directory tree."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bocker_engine.errors import EngineError, InvalidParameter, NotFound, System
from bocker_engine.storage import container_copy as cc
from tests.unit import hostile_tars
from tests.unit.hostile_tars import build, dir_, reg, sym
from tests.unit.test_layers import host_state, make_outside, open_fds, snap


@pytest.fixture(autouse=True)
def _remove_tmp(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A small container root with the links a hostile container would make."""
    root = tmp_path / "rootfs"
    for d in ("etc", "run", "tmp", "var", "data/sub"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nstaff:x:50:app\n")
    (root / "data/sub/f").write_bytes(b"content")
    os.symlink("/run", root / "var/run")
    os.symlink("/", root / "escape")
    os.symlink("../../..", root / "up")
    os.symlink("/nonexistent/target", root / "dangling")
    return root


def test_go_file_mode() -> None:
    # Figures from dockerd's answers: /tmp (dir, sticky, 0777) and a 0644 file.
    assert cc.go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == 2148532735
    assert cc.go_file_mode(stat.S_IFREG | 0o644) == 420
    assert cc.go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert cc.go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert cc.go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755


def test_go_time_and_names() -> None:
    assert cc.go_time(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"
    assert cc.go_time(1_700_000_000 * 10**9 + 120_000_000) == "2023-11-14T22:13:20.12Z"
    assert [cc.base_name(p) for p in ("/etc/passwd", "/tmp/", "/etc/.", "/", "a/../b", "/..")] == [
        "passwd",
        "tmp",
        ".",
        "/",
        "b",
        "/",
    ]


def test_stat_resolves_inside_the_root(rootfs: Path) -> None:
    st = cc.stat_path(str(rootfs), "/var/run")
    assert (st.name, st.link_target) == ("run", "/run") and st.mode & cc.MODE_SYMLINK
    assert cc.stat_path(str(rootfs), "/up").link_target == "/"
    assert cc.stat_path(str(rootfs), "/escape").link_target == "/"
    assert cc.stat_path(str(rootfs), "/dangling").link_target == "/nonexistent/target"
    # Through the links: the container's files, never the host's.
    passwd = cc.stat_path(str(rootfs), "/up/up/escape/etc/passwd")
    assert passwd.size == (rootfs / "etc/passwd").stat().st_size
    assert cc.stat_path(str(rootfs), "/var/run/").mode & cc.MODE_DIR  # a trailing slash follows
    with pytest.raises(NotFound):
        cc.stat_path(str(rootfs), "/escape/no/such")
    with pytest.raises(NotFound):
        cc.stat_path(str(rootfs), "/etc/passwd/x")


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


def test_archive_names_entries_after_the_request(rootfs: Path) -> None:
    out = io.BytesIO()
    cc.archive_path(str(rootfs), "/up/data", out)
    assert _names(out.getvalue()) == ["data", "data/sub", "data/sub/f"]
    out = io.BytesIO()
    cc.archive_path(str(rootfs), "/data/.", out)
    assert _names(out.getvalue()) == [".", "./sub", "./sub/f"]
    out = io.BytesIO()
    cc.archive_path(str(rootfs), "/var/run", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        [m] = tf.getmembers()
        assert m.name == "run" and m.issym() and m.linkname == "/run"


def _extract(rootfs: Path, path: str, data: bytes, **kw: Any) -> None:
    fd, dest = cc.extract_dir(str(rootfs), path)
    try:
        cc.extract(
            io.BytesIO(data),
            fd,
            dest,
            no_overwrite_dir_non_dir=kw.get("no_overwrite", False),
            owner=kw.get("owner"),
        )
    finally:
        os.close(fd)


def test_extract_resolves_the_destination_in_root(rootfs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = build([reg("marker", b"in the container")])
    # The host's tmp_path exists, the container has no such directory: not found, not the host's.
    with pytest.raises(NotFound):
        cc.extract_dir(str(rootfs), "/escape" + str(tmp_path))
    _extract(rootfs, "/up/tmp", data)
    _extract(rootfs, "/var/run", data)
    assert (rootfs / "tmp/marker").read_bytes() == b"in the container"
    assert (rootfs / "run/marker").read_bytes() == b"in the container"
    assert not marker.exists()
    with pytest.raises(NotFound):
        cc.extract_dir(str(rootfs), "/missing")
    with pytest.raises(InvalidParameter, match="extraction point is not a directory"):
        cc.extract_dir(str(rootfs), "/etc/passwd")
    with pytest.raises(System, match="not a directory"):
        cc.extract_dir(str(rootfs), "/etc/passwd/below")


def test_extract_follows_untar_rules(rootfs: Path) -> None:
    os.chmod(rootfs / "tmp", 0o1777)
    # `.` leaves the destination alone; whiteout names are content, refused when files.
    _extract(rootfs, "/tmp", build([dir_(".", 0o700), dir_("d", 0o750), reg("d/f")]))
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((rootfs / "tmp/d").stat().st_mode) == 0o750
    with pytest.raises(InvalidParameter, match="reserved"):
        _extract(rootfs, "/tmp", build([reg(".wh.d")]))
    assert (rootfs / "tmp/d/f").exists()
    # noOverwriteDirNonDir, both ways; without it a file replaces a directory.
    with pytest.raises(System, match='cannot overwrite directory "/tmp/d" with non-directory "/tmp"'):
        _extract(rootfs, "/tmp", build([reg("d")]), no_overwrite=True)
    (rootfs / "tmp/file").write_text("x")
    with pytest.raises(System, match="cannot overwrite non-directory"):
        _extract(rootfs, "/tmp", build([dir_("file")]), no_overwrite=True)
    _extract(rootfs, "/tmp", build([reg("d", b"now a file")]))
    assert (rootfs / "tmp/d").read_bytes() == b"now a file"
    # An owner for everything (copyUIDGID), else the archive's.
    _extract(rootfs, "/tmp", build([reg("owned", uid=7, gid=8), sym("l", "owned", uid=7, gid=8)]))
    assert (os.lstat(rootfs / "tmp/owned").st_uid, os.lstat(rootfs / "tmp/l").st_gid) == (7, 8)
    _extract(rootfs, "/tmp", build([reg("owned", uid=7, gid=8), sym("l", "owned")]), owner=(1000, 1001))
    assert (os.lstat(rootfs / "tmp/owned").st_uid, os.lstat(rootfs / "tmp/l").st_gid) == (1000, 1001)


def test_lookup_owner_reads_the_container_files(rootfs: Path) -> None:
    assert cc.lookup_owner(str(rootfs), "app") == (1000, 1001)
    assert cc.lookup_owner(str(rootfs), "1000:staff") == (1000, 50)
    assert cc.lookup_owner(str(rootfs), "4242") == (4242, 0)
    with pytest.raises(NotFound):
        cc.lookup_owner(str(rootfs), "nobody-here")
    # /etc/passwd as a link to the host's is not followed out of the container.
    (rootfs / "etc/passwd").unlink()
    os.symlink("/etc/passwd", rootfs / "etc/passwd")
    with pytest.raises(NotFound):
        cc.lookup_owner(str(rootfs), "root")


CASE_NAMES = [c.name for c in hostile_tars.corpus(Path("/nonexistent/outside"))]


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_hostile_tar_stays_in_the_destination(tmp_path: Path, case_name: str) -> None:
    """The layer corpus through the cp extractor: refused or not, nothing outside changes."""
    host_before = host_state()
    outside = tmp_path / "outside"
    make_outside(outside)
    dest = tmp_path / "dest"
    dest.mkdir()
    case = {c.name: c for c in hostile_tars.corpus(outside)}[case_name]
    if case.prepare:
        case.prepare(dest, outside)
    before = snap(outside)
    fds = open_fds()
    try:
        _extract(dest, "/", case.data)
        refused = False
    except EngineError:
        refused = True
    assert snap(outside) == before, "something outside dest changed"
    assert host_state() == host_before
    assert open_fds() == fds, "fd leak"
    if case.expect == "invalid":
        assert refused, "hostile tar was accepted"
