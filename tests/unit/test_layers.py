"""Layer tar engine: hostile tars, Docker layer semantics, tar-split, diff and export.

Runs as root (mknod, chown, trusted.* xattrs) on the host filesystem under tmp_path.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from bocker_engine.errors import InvalidParameter, NotFound, System
from bocker_engine.storage import layers
from bocker_engine.storage.layers import Whiteouts
from tests.unit import hostile_tars
from tests.unit.hostile_tars import build, dir_, fifo, hlink, reg, sym

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layer extraction tests need root")

T0 = 1_500_000_000_000_000_000  # whole seconds, like everything that went through a tar
HOST_FILES = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hostname", "/etc/hosts"]
HOST_MUST_NOT_EXIST = ["/x", "/escape", "/pwned", "/abs", "/b", "/h", "/etc/x", "/etc/shadow.new"]


# --------------------------------------------------------------------------- helpers


def entry_state(p: str) -> tuple[Any, ...]:
    st = os.lstat(p)
    content = None
    if stat.S_ISREG(st.st_mode):
        with open(p, "rb") as f:
            content = hashlib.sha256(f.read()).hexdigest()
    link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
    rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        names = []
    xattrs = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False)) for n in names))
    size = st.st_size if stat.S_ISREG(st.st_mode) else None
    return (
        stat.S_IFMT(st.st_mode),
        oct(stat.S_IMODE(st.st_mode)),
        st.st_uid,
        st.st_gid,
        size,
        st.st_mtime_ns,
        content,
        link,
        rdev,
        xattrs,
    )


def snap(root: Path, *, root_mtime: bool = True, whiteout_mtime: bool = True) -> dict[str, tuple[Any, ...]]:
    """Everything observable about a tree (not atime, ctime, inode numbers or nlink)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            e = entry_state(p)
            if not whiteout_mtime and e[0] == stat.S_IFCHR and e[8] == 0:
                e = e[:5] + (None,) + e[6:]
            out[os.path.relpath(p, root)] = e
    e = entry_state(str(root))
    out["."] = e if root_mtime else e[:5] + (None,) + e[6:]
    return out


def host_state() -> dict[str, Any]:
    state: dict[str, Any] = {}
    for p in HOST_FILES:
        if os.path.exists(p):
            st = os.lstat(p)
            with open(p, "rb") as f:
                state[p] = (
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                    hashlib.sha256(f.read()).hexdigest(),
                )
    for p in HOST_MUST_NOT_EXIST:
        state[p] = os.path.lexists(p)
    return state


def apply(
    data: bytes, dest: Path, mode: Whiteouts = Whiteouts.DELETE, split: BinaryIO | None = None
) -> layers.ApplyResult:
    return layers.apply_layer(io.BytesIO(data), str(dest), whiteouts=mode, tar_split=split)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def trusted_xattrs_supported(where: Path) -> bool:
    probe = where / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "trusted.bocker.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def fix_times(root: Path, ns: int | None = None) -> None:
    """Set every mtime (deepest first) to `ns`, or truncate it to whole seconds."""
    paths = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in [*dirnames, *filenames]]
    for p in sorted(paths, key=lambda p: p.count("/"), reverse=True):
        t = ns if ns is not None else os.lstat(p).st_mtime_ns // 10**9 * 10**9
        os.utime(p, ns=(t, t), follow_symlinks=False)


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)


def tar_entries(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for ti in t:
            f = t.extractfile(ti) if ti.isreg() else None
            out[ti.name + ("/" if ti.isdir() else "")] = (ti, f.read() if f else None)
    return out


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        return t.getnames()


@pytest.fixture(autouse=True)
def _remove_tmp(tmp_path: Path) -> Iterator[None]:
    # Device nodes and root-owned trees should not pile up in /tmp between runs.
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def host_before() -> dict[str, Any]:
    return host_state()


# --------------------------------------------------------------------------- hostile corpus

CASE_NAMES = [c.name for c in hostile_tars.corpus(Path("/nonexistent/outside"))]
# Every case takes milliseconds; this only turns a parser that went quadratic into a failure.
CASE_DEADLINE = 60.0


class DeadlineExceeded(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in this (main) thread if the block runs longer than `seconds`."""

    def expired(signum: int, frame: Any) -> None:
        raise DeadlineExceeded(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def make_outside(outside: Path) -> None:
    outside.mkdir()
    (outside / "sentinel").write_bytes(b"do not touch")
    os.chmod(outside / "sentinel", 0o640)
    (outside / "dir").mkdir()
    (outside / "dir/file").write_bytes(b"inner")
    os.symlink("sentinel", outside / "link")


@pytest.mark.parametrize("mode", list(Whiteouts), ids=lambda m: m.value)
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_hostile_tar(tmp_path: Path, case_name: str, mode: Whiteouts, host_before: dict[str, Any]) -> None:
    outside = tmp_path / "outside"
    make_outside(outside)
    dest = tmp_path / "dest"
    dest.mkdir()
    case = {c.name: c for c in hostile_tars.corpus(outside)}[case_name]
    if case.prepare:
        case.prepare(dest, outside)
    before = snap(outside)
    siblings = sorted(os.listdir(tmp_path))
    fds = open_fds()
    split = io.BytesIO()
    try:
        with deadline(CASE_DEADLINE):
            res = apply(case.data, dest, mode, split)
        error = None
    except InvalidParameter as e:
        res, error = None, e
    assert snap(outside) == before, "something outside dest changed"
    assert sorted(os.listdir(tmp_path)) == siblings
    assert host_state() == host_before
    assert open_fds() == fds, "fd leak"
    if case.expect == "invalid":
        assert error is not None, "hostile tar was accepted"
        assert error.message.startswith("invalid layer")
        if case.message:
            assert re.search(case.message, error.message), error.message
    elif case.expect == "ok":
        assert error is None, f"benign-in-root tar refused: {error}"
    if res is not None:
        assert res.diff_id == sha(case.data)
        if case.check:
            case.check(dest, outside)
        if case.prepare is None:
            out = io.BytesIO()
            split.seek(0)
            layers.assemble_layer(split, str(dest), out)
            assert out.getvalue() == case.data


class Repeated(io.RawIOBase):
    """`head` repeated `count` times, then `tail`, produced as it is read (never all in memory)."""

    def __init__(self, head: bytes, count: int, tail: bytes) -> None:
        self.head, self.count, self.tail = head, count, tail
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self.buf:
            if self.count:
                self.count -= 1
                self.buf = self.head
            else:
                self.buf, self.tail = self.tail, b""
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def test_many_maximal_pax_headers_are_refused_in_bounded_time(tmp_path: Path) -> None:
    """200 MiB of maximal PAX headers full of tiny records, in a row: refused once the run is
    too long, each header parsed in linear time. (Without both limits: minutes of CPU.)"""
    stream = Repeated(hostile_tars.pax(hostile_tars.quadratic_pax_body()), 200, hostile_tars.with_file())
    with deadline(CASE_DEADLINE), pytest.raises(InvalidParameter, match="in a row"):
        layers.apply_layer(io.BufferedReader(stream), str(tmp_path), whiteouts=Whiteouts.DELETE, tar_split=io.BytesIO())


def test_tar_split_spools_under_the_layer_not_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spool and saved contents (a file replaced within the layer) never go to the temp dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    data = build([reg("f", b"first" * 1000), reg("f", b"second"), reg("g", b"g")])
    dest = tmp_path / "layer"
    dest.mkdir()
    split = io.BytesIO()
    apply(data, dest, Whiteouts.DELETE, split)
    split.seek(0)
    out = io.BytesIO()
    layers.assemble_layer(split, str(dest), out)
    assert out.getvalue() == data
    assert sorted(os.listdir(tmp_path)) == ["layer"]


def test_invalid_message_names_entry(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match=r"a/\.\./\.\./x.*climbs above"):
        apply(build([reg("a/../../x")]), tmp_path)


# --------------------------------------------------------------------------- benign semantics


def test_metadata_kept(tmp_path: Path) -> None:
    frac = reg("frac", b"f")
    frac[0].mtime = 1234567890.5  # tarfile writes a PAX mtime for fractions
    xa = reg("xattr", b"x")
    xa[0].pax_headers = {"SCHILY.xattr.user.test": "v1", "SCHILY.xattr.trusted.overlay.opaque": "y"}
    xl = sym("xlink", "xattr")
    xl[0].pax_headers = {"SCHILY.xattr.trusted.bocker": "on link", "SCHILY.xattr.user.refused": "EPERM"}
    xd = fifo("xfifo")
    xd[0].pax_headers = {"SCHILY.xattr.trusted.bocker": "on fifo"}
    data = build(
        [
            dir_("tmp", mode=0o1777),
            dir_("bin"),
            reg("bin/su", b"#!su", mode=0o4755),
            dir_("sgid", mode=0o2775, gid=50),
            dir_("home/u", mode=0o700, uid=1234, gid=5678, mtime=1111111111),
            reg("home/u/file", b"data", mode=0o640, uid=1234, gid=5678, mtime=1234567890),
            dir_("var"),
            sym("var/run", "/run", uid=7, gid=8, mtime=1000000000),
            frac,
            xa,
            xl,
            xd,
            reg("empty", b"", mode=0o600),
        ]
    )
    res = apply(data, tmp_path)
    assert res.size == 4 + 4 + 1 + 1
    assert stat.S_IMODE(os.lstat(tmp_path / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(tmp_path / "bin/su").st_mode) == 0o4755
    st = os.lstat(tmp_path / "sgid")
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2775, 50)
    st = os.lstat(tmp_path / "home/u/file")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
    assert st.st_mtime_ns == st.st_atime_ns == 1234567890 * 10**9
    assert os.lstat(tmp_path / "home/u").st_mtime_ns == 1111111111 * 10**9
    assert stat.S_IMODE(os.lstat(tmp_path / "home").st_mode) == 0o755  # implicit parent
    st = os.lstat(tmp_path / "var/run")
    assert os.readlink(tmp_path / "var/run") == "/run"
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (7, 8, 1000000000 * 10**9)
    assert os.lstat(tmp_path / "frac").st_mtime_ns == 1234567890_500000000
    assert os.getxattr(tmp_path / "xattr", "user.test") == b"v1"
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "xattr")
    if trusted_xattrs_supported(tmp_path):
        assert os.getxattr(tmp_path / "xlink", "trusted.bocker", follow_symlinks=False) == b"on link"
        assert os.getxattr(tmp_path / "xfifo", "trusted.bocker") == b"on fifo"
    assert stat.S_IMODE(os.lstat(tmp_path / "xfifo").st_mode) == 0o600


def test_capability_survives_chown(tmp_path: Path) -> None:
    cap = b"\x01\x00\x00\x02" + (1 << 13).to_bytes(4, "little") + bytes(12)  # cap_net_raw
    m = reg("ping", b"elf", mode=0o755, uid=0, gid=0)
    # tarfile encodes PAX values as UTF-8; this capability is ASCII-only so its bytes survive.
    assert cap.isascii()
    m[0].pax_headers = {"SCHILY.xattr.security.capability": cap.decode("ascii")}
    apply(build([m]), tmp_path)
    assert os.getxattr(tmp_path / "ping", "security.capability") == cap


def test_replacement_rules(tmp_path: Path) -> None:
    lower = build(
        [dir_("d"), reg("d/child"), reg("f", b"old"), sym("s", "/x"), dir_("keep", mode=0o700), reg("keep/inner")]
    )
    apply(lower, tmp_path)
    upper = build([reg("d", b"file now"), dir_("f"), reg("s", b"was link"), dir_("keep", mode=0o755)])
    apply(upper, tmp_path)
    assert (tmp_path / "d").read_bytes() == b"file now"
    assert (tmp_path / "f").is_dir()
    assert not (tmp_path / "s").is_symlink() and (tmp_path / "s").read_bytes() == b"was link"
    assert (tmp_path / "keep/inner").exists()  # dir over dir merges
    assert stat.S_IMODE(os.lstat(tmp_path / "keep").st_mode) == 0o755


def test_whiteout_delete(tmp_path: Path) -> None:
    apply(build([dir_("a"), reg("a/f1"), reg("a/f2"), dir_("b"), reg("b/x"), reg("c")]), tmp_path)
    apply(
        build(
            [
                reg("a/.wh.f1", b""),
                reg(".wh.b", b""),
                reg(".wh.c", b""),
                reg("a/.wh.missing", b""),
                reg(".wh..wh.plnk/123", b"aufs"),
            ]
        ),
        tmp_path,
    )
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert os.listdir(tmp_path / "a") == ["f2"]


def test_opaque_delete(tmp_path: Path) -> None:
    apply(
        build(
            [
                dir_("d"),
                reg("d/a"),
                dir_("d/sub"),
                reg("d/sub/b"),
                dir_("d/gone"),
                reg("d/gone/c"),
                dir_("e"),
                reg("e/keep"),
            ]
        ),
        tmp_path,
    )
    apply(
        build(
            [
                dir_("d"),
                reg("d/early"),
                dir_("d/sub"),
                reg("d/sub/new"),
                reg("d/implicit/x"),
                reg("d/.wh..wh..opq", b""),
                reg("d/late"),
            ]
        ),
        tmp_path,
    )
    assert sorted(os.listdir(tmp_path / "d")) == ["early", "implicit", "late", "sub"]
    assert os.listdir(tmp_path / "d/sub") == ["new"]
    assert os.listdir(tmp_path / "d/implicit") == ["x"]
    assert os.listdir(tmp_path / "e") == ["keep"]


def test_overlay_mode(tmp_path: Path) -> None:
    if not trusted_xattrs_supported(tmp_path):
        pytest.skip("trusted.* xattrs not supported on tmp_path's filesystem")
    data = build(
        [
            dir_("d"),
            reg("d/.wh..wh..opq", b""),
            reg("d/new"),
            reg(".wh.gone", b""),
            reg("x/.wh.y", b""),
            reg("made"),
            reg(".wh.made", b""),
        ]
    )
    apply(data, tmp_path, Whiteouts.OVERLAY)
    assert os.getxattr(tmp_path / "d", "trusted.overlay.opaque") == b"y"
    for wh in ("gone", "x/y", "made"):
        st = os.lstat(tmp_path / wh)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, wh
    assert os.listdir(tmp_path / "d") == ["new"]


def test_overlay_hardlink_outside_layer(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="not supported"):
        apply(build([hlink("l", "usr/bin/lower")]), tmp_path, Whiteouts.OVERLAY)


def test_diff_id_includes_trailing_bytes(tmp_path: Path) -> None:
    data = build([reg("f", b"x" * 700)])
    assert len(data) == 10240  # tarfile pads to a 20-block record like GNU tar and Go
    data += bytes(4096) + b"trailing garbage"
    split = io.BytesIO()
    res = apply(data, tmp_path, split=split)
    assert res.diff_id == sha(data)
    assert res.size == 700
    split.seek(0)
    out = io.BytesIO()
    layers.assemble_layer(split, str(tmp_path), out)
    assert out.getvalue() == data


def test_empty_stream(tmp_path: Path) -> None:
    assert apply(b"", tmp_path).diff_id == sha(b"")
    assert apply(bytes(1024), tmp_path).diff_id == sha(bytes(1024))


# --------------------------------------------------------------------------- tar-split


def _system_tar(tmp: Path, fmt: str) -> bytes:
    src = tmp / f"systar-{fmt}"
    (src / "dir/sub").mkdir(parents=True)
    (src / "dir/sub/file").write_bytes(os.urandom(3000))
    (src / ("long" * 40)).write_bytes(b"long name")
    os.symlink("dir/sub/file", src / "link")
    os.link(src / "dir/sub/file", src / "hard")
    res = subprocess.run(["tar", f"--format={fmt}", "-C", str(src), "-cf", "-", "."], check=True, capture_output=True)
    shutil.rmtree(src)
    return res.stdout


def _split_cases(tmp: Path) -> Iterator[tuple[str, bytes]]:
    yield "ustar", build([dir_("a"), reg("a/b", os.urandom(1000)), sym("a/l", "b")], tarfile.USTAR_FORMAT)
    long = "p" * 120 + "/" + "q" * 130
    x = reg(f"{long}/file", b"xattrs", mode=0o755)
    x[0].pax_headers = {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.bin": "\u00e9\x00\x01"}
    yield "pax-long-xattrs", build([x, sym("l" * 200, "t" * 200), reg("caf\u00e9", b"utf8 name")])
    yield "gnu-longname", build([reg(f"{long}/g", b"gnu"), hlink("h" * 150, f"{long}/g")], tarfile.GNU_FORMAT)
    yield "hardlinks", build([reg("a", b"shared" * 100), hlink("b", "a"), hlink("c", "b")])
    yield "duplicates", build([reg("f", b"first" * 300), reg("f", b"second"), reg("f", b"third!" * 99)])
    yield "padding", build([reg("f", b"z")]) + bytes(20480)
    yield "whiteout-with-data", build([reg("f", b"keep"), reg(".wh.g", b"data in a whiteout")])
    yield "same-layer-whiteout", build([reg("f", b"written then whited out"), reg(".wh.f", b"")])
    yield "file-then-dir", build([dir_("d"), reg("d/x", b"lost later"), reg("d", b"now a file")])
    yield "hardlink-then-overwrite", build([reg("a", b"A" * 1000), hlink("b", "a"), reg("a", b"B" * 10)])
    yield "parent-symlink-swap", build([dir_("x"), dir_("y"), sym("s", "x"), reg("s/f", b"via s"), sym("s", "y")])
    g = tarfile.TarInfo("global")
    g.type = tarfile.XGLTYPE
    g.pax_headers = {"comment": "hello"}
    yield "pax-global", build([(g, None), reg("f", b"after global")])
    yield "system-tar-gnu", _system_tar(tmp, "gnu")
    yield "system-tar-posix", _system_tar(tmp, "posix")
    yield "empty-files", build([reg("e1", b""), reg("e2", b"")])


SPLIT_CASES = [
    "ustar",
    "pax-long-xattrs",
    "gnu-longname",
    "hardlinks",
    "duplicates",
    "padding",
    "whiteout-with-data",
    "same-layer-whiteout",
    "file-then-dir",
    "hardlink-then-overwrite",
    "parent-symlink-swap",
    "pax-global",
    "system-tar-gnu",
    "system-tar-posix",
    "empty-files",
]


@pytest.mark.parametrize("mode", list(Whiteouts), ids=lambda m: m.value)
@pytest.mark.parametrize("name", SPLIT_CASES)
def test_tar_split_roundtrip(tmp_path: Path, name: str, mode: Whiteouts) -> None:
    if mode is Whiteouts.OVERLAY and not trusted_xattrs_supported(tmp_path):
        pytest.skip("trusted.* xattrs not supported")
    data = dict(_split_cases(tmp_path))[name]
    dest = tmp_path / "dest"
    dest.mkdir()
    split = io.BytesIO()
    res = apply(data, dest, mode, split)
    assert res.diff_id == sha(data)
    split.seek(0)
    out = io.BytesIO()
    layers.assemble_layer(split, str(dest), out)
    assert out.getvalue() == data
    assert len(split.getvalue()) < len(data)  # content is referenced, not copied


def test_tar_split_format_and_integrity(tmp_path: Path) -> None:
    data = build([reg("a", b"alpha" * 100), reg("b", b"beta" * 100)])
    split = io.BytesIO()
    apply(data, tmp_path, split=split)
    lines = gzip.decompress(split.getvalue()).splitlines()
    assert lines[0] == b'{"tar-split":"bocker","v":1}'
    assert b'"f":"a"' in b"".join(lines) and lines[-1] == b'{"end":%d}' % len(data)

    def assemble() -> bytes:
        out = io.BytesIO()
        layers.assemble_layer(io.BytesIO(split.getvalue()), str(tmp_path), out)
        return out.getvalue()

    assert assemble() == data
    (tmp_path / "a").write_bytes(b"ALPHA" * 100)  # same size, other content
    with pytest.raises(System, match="checksum"):
        assemble()
    (tmp_path / "a").write_bytes(b"short")
    with pytest.raises(System, match="expected a 500-byte file"):
        assemble()
    (tmp_path / "a").unlink()
    os.symlink("b", tmp_path / "a")
    with pytest.raises(System):
        assemble()
    (tmp_path / "a").unlink()
    (tmp_path / "a").write_bytes(b"alpha" * 100)
    assert assemble() == data
    with pytest.raises(System, match="truncated|corrupt|unreadable"):
        layers.assemble_layer(io.BytesIO(split.getvalue()[:-30]), str(tmp_path), io.BytesIO())


# --------------------------------------------------------------------------- diff / changes


CAP = b"\x01\x00\x00\x02" + (1 << 10).to_bytes(4, "little") + bytes(12)


def make_old(root: Path) -> None:
    root.mkdir()
    for d in ("etc", "usr/bin", "usr/lib", "data/sub", "var", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_bytes(b"root:x:0:0\n")
    (root / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "etc/motd").write_bytes(b"hi\n")
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    (root / "usr/lib/libx.so.1").write_bytes(os.urandom(5000))
    os.symlink("libx.so.1", root / "usr/lib/libx.so")
    os.symlink("/run", root / "var/run")
    (root / "data/keep").write_bytes(b"keep")
    (root / "data/gone").write_bytes(b"gone")
    (root / "data/sub/deep").write_bytes(b"deep")
    (root / "hard1").write_bytes(b"linked")
    os.link(root / "hard1", root / "hard2")
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(root / "fifo", 0o600)
    fix_times(root, T0)


def make_new(old: Path, new: Path) -> None:
    copy_tree(old, new)
    (new / "etc/passwd").write_bytes(b"root:x:0:0\nuser:x:1000:1000\n")
    os.chmod(new / "usr/bin/tool", 0o4755)
    os.chown(new / "etc/hosts", 1000, 1000)
    (new / "data/gone").unlink()
    shutil.rmtree(new / "data/sub")
    (new / "data/new").write_bytes(b"new")
    (new / "newdir/a/b").mkdir(parents=True)
    (new / "newdir/a/b/c").write_bytes(os.urandom(100_000))
    os.unlink(new / "usr/lib/libx.so")
    os.symlink("libx.so.2", new / "usr/lib/libx.so")
    os.unlink(new / "etc/motd")
    (new / "etc/motd").mkdir()
    (new / "etc/motd/part").write_bytes(b"type changed")
    (new / "newh1").write_bytes(b"pair")
    os.link(new / "newh1", new / "newh2")
    (new / "usr/bin/ping").write_bytes(b"elf")
    os.setxattr(new / "usr/bin/ping", "security.capability", CAP)
    os.setxattr(new / "data/keep", "user.note", b"added xattr")
    (new / "long" / ("x" * 200)).mkdir(parents=True)
    (new / "long" / ("x" * 200) / ("y" * 200)).write_bytes(b"long path")
    (new / "caf\u00e9").write_bytes(b"non-ascii")
    os.mknod(new / "dev/tty9", stat.S_IFCHR | 0o620, os.makedev(4, 9))
    os.chown(new / "dev/tty9", 0, 5)
    fix_times(new)


def test_diff_layer_roundtrip(tmp_path: Path) -> None:
    old, new, dest = tmp_path / "old", tmp_path / "new", tmp_path / "dest"
    make_old(old)
    make_new(old, new)
    out = io.BytesIO()
    layers.diff_layer(str(new), str(old), out)
    data = out.getvalue()
    names = tar_names(data)
    # sorted component-wise, a whiteout where the name it deletes would be (like Docker)
    assert names == sorted(names, key=lambda n: n.replace("/.wh.", "/").split("/"))
    assert not any(n.startswith(("/", "./")) for n in names)
    assert "data/.wh.gone" in names and "data/.wh.sub" in names and "data/sub/deep" not in names
    assert "hard1" not in names and "data" in names
    ents = tar_entries(data)
    assert ents["newh2"][0].islnk() and ents["newh2"][0].linkname == "newh1"
    assert ents["etc/passwd"][0].uname == "" and ents["etc/passwd"][0].gname == ""
    assert (
        ents["usr/bin/ping"][0].pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
        == CAP
    )
    again = io.BytesIO()
    layers.diff_layer(str(new), str(old), again)
    assert again.getvalue() == data  # deterministic

    copy_tree(old, dest)
    apply(data, dest)
    assert snap(dest, root_mtime=False) == snap(new, root_mtime=False)
    assert os.stat(dest / "newh1").st_ino == os.stat(dest / "newh2").st_ino

    full = io.BytesIO()
    layers.diff_layer(str(new), None, full)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    apply(full.getvalue(), fresh)
    assert snap(fresh, root_mtime=False) == snap(new, root_mtime=False)
    assert os.stat(fresh / "hard1").st_ino == os.stat(fresh / "hard2").st_ino


def test_diff_layer_of_a_snapshot_reads_xattrs_of_changed_entries_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """snapshot=True (btrfs: the new tree began as a snapshot of the old one) gives the same tar;
    an entry whose inode and ctime are the old one's has its symlink and xattrs left unread.
    Hard links stand in for a snapshot's shared inodes here."""
    old, new = tmp_path / "old", tmp_path / "new"
    make_old(old)
    make_new(old, new)
    shared = 0
    for dirpath, _, files in os.walk(old):
        for name in files:
            o = os.path.join(dirpath, name)
            n = os.path.join(new, os.path.relpath(o, old))
            st_o = os.lstat(o)
            if stat.S_ISREG(st_o.st_mode) and os.path.isfile(n) and not os.path.islink(n):
                st_n = os.lstat(n)
                same = (st_n.st_size, st_n.st_mtime_ns, st_n.st_mode) == (st_o.st_size, st_o.st_mtime_ns, st_o.st_mode)
                if same and os.listxattr(n) == os.listxattr(o):
                    os.unlink(n)
                    os.link(o, n)  # the same inode in both trees, as in a snapshot
                    shared += 1
    assert shared >= 3
    plain = io.BytesIO()
    layers.diff_layer(str(new), str(old), plain)
    from bocker_engine.storage.layers import tree

    read: list[bytes] = []
    real = tree.read_xattrs

    def counting(dirfd: int, name: bytes) -> dict[str, bytes]:
        read.append(name)
        return real(dirfd, name)

    monkeypatch.setattr(tree, "read_xattrs", counting)
    snap_out = io.BytesIO()
    layers.diff_layer(str(new), str(old), snap_out, snapshot=True)
    assert snap_out.getvalue() == plain.getvalue()
    assert b"hard1" not in read and b"keep" in read  # data/keep gained an xattr: compared
    assert layers.changes(str(new), str(old), snapshot=True) == layers.changes(str(new), str(old))


def test_changes(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "d").mkdir()
    (old / "keep").mkdir()
    for p in ("a", "d/x", "d/y", "keep/z"):
        (old / p).write_bytes(b"old")
    fix_times(old, T0)
    copy_tree(old, new)
    (new / "a").write_bytes(b"changed")
    (new / "d/x").unlink()
    (new / "d/w").write_bytes(b"w")
    (new / "n").mkdir()
    (new / "n/f").write_bytes(b"f")
    assert layers.changes(str(new), str(old)) == [
        ("/a", 0),
        ("/d", 0),
        ("/d/w", 1),
        ("/d/x", 2),
        ("/n", 1),
        ("/n/f", 1),
    ]
    assert layers.changes(str(old), None) == [
        ("/a", 1),
        ("/d", 1),
        ("/d/x", 1),
        ("/d/y", 1),
        ("/keep", 1),
        ("/keep/z", 1),
    ]
    assert layers.changes(str(old), str(old)) == []


def make_overlay(tmp: Path) -> tuple[Path, Path, Path]:
    """lower, upper and the merged view the upper stands for."""
    lower, upper, merged = tmp / "lower", tmp / "upper", tmp / "merged"
    lower.mkdir()
    for d in ("d", "o", "keep"):
        (lower / d).mkdir()
    for p in ("a", "d/x", "d/y", "o/p", "keep/k"):
        (lower / p).write_bytes(b"lower " + p.encode())
    fix_times(lower, T0)
    copy_tree(lower, merged)

    upper.mkdir()
    (upper / "a").write_bytes(b"upper a!")
    (upper / "d").mkdir()
    os.mknod(upper / "d/x", stat.S_IFCHR, 0)
    (upper / "d/w").write_bytes(b"w")
    (upper / "o").mkdir()
    os.setxattr(upper / "o", "trusted.overlay.opaque", b"y")
    (upper / "o/q").write_bytes(b"q")
    (upper / "n").mkdir()
    (upper / "n/f").write_bytes(b"f")
    fix_times(upper)
    os.utime(upper / "d", ns=(T0, T0))  # a copy-up keeps the lower dir's metadata

    (merged / "a").write_bytes(b"upper a!")
    (merged / "d/x").unlink()
    (merged / "d/w").write_bytes(b"w")
    shutil.rmtree(merged / "o")
    (merged / "o").mkdir()
    (merged / "o/q").write_bytes(b"q")
    (merged / "n").mkdir()
    (merged / "n/f").write_bytes(b"f")
    for p in ("a", "d/w", "o/q", "o", "n/f", "n", "d"):  # children first
        t = os.lstat(upper / p).st_mtime_ns
        os.utime(merged / p, ns=(t, t))
    return lower, upper, merged


def test_overlay_upper_roundtrip(tmp_path: Path) -> None:
    if not trusted_xattrs_supported(tmp_path):
        pytest.skip("trusted.* xattrs not supported")
    lower, upper, merged = make_overlay(tmp_path)
    out = io.BytesIO()
    layers.overlay_upper_to_tar(str(upper), out)
    data = out.getvalue()
    names = tar_names(data)
    assert names == ["a", "d", "d/w", "d/.wh.x", "n", "n/f", "o", "o/.wh..wh..opq", "o/q"]
    ents = tar_entries(data)
    assert "SCHILY.xattr.trusted.overlay.opaque" not in ents["o/"][0].pax_headers

    dest = tmp_path / "dest"
    copy_tree(lower, dest)
    apply(data, dest)
    assert snap(dest, root_mtime=False) == snap(merged, root_mtime=False)

    diff = tmp_path / "diff"
    diff.mkdir()
    apply(data, diff, Whiteouts.OVERLAY)
    assert snap(diff, root_mtime=False, whiteout_mtime=False) == snap(upper, root_mtime=False, whiteout_mtime=False)


def test_overlay_changes(tmp_path: Path) -> None:
    if not trusted_xattrs_supported(tmp_path):
        pytest.skip("trusted.* xattrs not supported")
    lower, upper, _ = make_overlay(tmp_path)
    assert layers.overlay_changes(str(upper), [str(lower)]) == [
        ("/a", 0),
        ("/d", 0),
        ("/d/w", 1),
        ("/d/x", 2),
        ("/n", 1),
        ("/n/f", 1),
        ("/o", 2),
        ("/o/q", 1),
    ]


# --------------------------------------------------------------------------- decompression


def _through_pipe(data: bytes) -> tuple[BinaryIO, threading.Thread]:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed)
    t.start()
    return os.fdopen(r, "rb", buffering=0), t


@pytest.mark.parametrize("codec", ["plain", "gzip", "gzip-multi", "xz", "bzip2"])
def test_decompressed_pipe(tmp_path: Path, codec: str) -> None:
    data = build([reg("big", os.urandom(3 << 20) + bytes(3 << 20)), reg("small", b"s")])
    if codec == "gzip":
        packed = gzip.compress(data)
    elif codec == "gzip-multi":
        packed = gzip.compress(data[:5000]) + gzip.compress(data[5000:]) + bytes(100)
    elif codec == "xz":
        packed = lzma.compress(data)
    elif codec == "bzip2":
        packed = bz2.compress(data)
    else:
        packed = data
    src, t = _through_pipe(packed)
    try:
        assert not src.seekable()
        res = layers.apply_layer(layers.decompressed(src), str(tmp_path), whiteouts=Whiteouts.DELETE)
    finally:
        t.join()
        src.close()
    assert res.diff_id == sha(data)
    assert (tmp_path / "small").read_bytes() == b"s"


def test_decompressed_errors() -> None:
    with pytest.raises(InvalidParameter, match="truncated"):
        layers.decompressed(io.BytesIO(gzip.compress(b"x" * 100000)[:50])).read()
    bad = bytearray(gzip.compress(b"hello world" * 100))
    bad[-6] ^= 0xFF  # CRC
    with pytest.raises(InvalidParameter):
        layers.decompressed(io.BytesIO(bytes(bad))).read()
    zst = b"\x28\xb5\x2f\xfd" + bytes(20)
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidParameter, match="zstd not supported"):
            layers.decompressed(io.BytesIO(zst))
    assert layers.decompressed(io.BytesIO(b"")).read() == b""


# --------------------------------------------------------------------------- export


def test_tar_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_bytes(b"inner passwd")
    (root / "sub/deeper").mkdir(parents=True)
    (root / "sub/deeper/file").write_bytes(b"f")
    os.symlink("/etc", root / "lnk")
    os.symlink("../../..", root / "up")

    def tar(path: str, name: str | None = None) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
        out = io.BytesIO()
        layers.tar_path(str(root), path, out, name=name)
        return tar_entries(out.getvalue())

    for p in ("../../etc", "/etc", "up/etc", "lnk/../etc/", "../../../../etc"):
        ents = tar(p)
        assert sorted(ents) == ["etc/", "etc/passwd"], p
        assert ents["etc/passwd"][1] == b"inner passwd"
    for p in ("lnk/passwd", "up/up/etc/passwd"):
        assert tar(p)["passwd"][1] == b"inner passwd"
    ents = tar("lnk")
    assert list(ents) == ["lnk"] and ents["lnk"][0].issym() and ents["lnk"][0].linkname == "/etc"
    export = tar("/")
    assert sorted(export) == ["etc/", "etc/passwd", "lnk", "sub/", "sub/deeper/", "sub/deeper/file", "up"]
    assert sorted(tar("sub", name="renamed")) == ["renamed/", "renamed/deeper/", "renamed/deeper/file"]
    assert sorted(tar("/", name="rootfs")) == [
        "rootfs/",
        "rootfs/etc/",
        "rootfs/etc/passwd",
        "rootfs/lnk",
        "rootfs/sub/",
        "rootfs/sub/deeper/",
        "rootfs/sub/deeper/file",
        "rootfs/up",
    ]
    with pytest.raises(NotFound):
        tar("nope/file")
    with pytest.raises(NotFound):
        tar("etc/passwd/x")


def test_diff_stays_on_the_layer_filesystem(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "mnt").mkdir(parents=True)
    (tree / "f").write_bytes(b"f")
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "mnt")], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        (tree / "mnt/secret").write_bytes(b"s")
        out = io.BytesIO()
        layers.diff_layer(str(tree), None, out)
        assert "mnt/secret" not in tar_names(out.getvalue())
        assert ("/mnt/secret", 1) not in layers.changes(str(tree), None)
    finally:
        subprocess.run(["umount", str(tree / "mnt")], check=True)


def test_dir_names_have_trailing_slash(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    out = io.BytesIO()
    layers.diff_layer(str(tmp_path), None, out)
    header = out.getvalue()[:512]
    assert header[:3] == b"d/\0" and header[156:157] == b"5"
    assert header[265:297] == bytes(32)  # empty uname
