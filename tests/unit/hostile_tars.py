"""A corpus of hostile layer tars, built in memory with tarfile.

Each case says what applying it into `dest` must do: raise InvalidParameter ("invalid"),
succeed with an in-root result checked by `check` ("ok"), or either ("either": refusing is fine,
but if it succeeds nothing may land outside dest). The test wraps every case with a check that
the sibling `outside` tree and a few host files are untouched.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Member = tuple[tarfile.TarInfo, bytes | None]
Hook = Callable[[Path, Path], None]  # (dest, outside)

MTIME = 1_600_000_000


def _ti(name: str, type_: bytes, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.mtime = MTIME
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def reg(name: str, data: bytes = b"payload", mode: int = 0o644, **kw: object) -> Member:
    ti = _ti(name, tarfile.REGTYPE, mode, **kw)
    ti.size = len(data)
    return ti, data


def dir_(name: str, mode: int = 0o755, **kw: object) -> Member:
    return _ti(name, tarfile.DIRTYPE, mode, **kw), None


def sym(name: str, target: str, **kw: object) -> Member:
    return _ti(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw), None


def hlink(name: str, target: str, mode: int = 0o644, **kw: object) -> Member:
    return _ti(name, tarfile.LNKTYPE, mode, linkname=target, **kw), None


def chrdev(name: str, major: int, minor: int) -> Member:
    return _ti(name, tarfile.CHRTYPE, 0o666, devmajor=major, devminor=minor), None


def blkdev(name: str, major: int, minor: int) -> Member:
    return _ti(name, tarfile.BLKTYPE, 0o660, devmajor=major, devminor=minor), None


def fifo(name: str) -> Member:
    return _ti(name, tarfile.FIFOTYPE, 0o600), None


def build(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@dataclass
class Case:
    name: str
    data: bytes
    expect: str  # "invalid" | "ok" | "either"
    check: Hook | None = None
    prepare: Hook | None = None
    message: str | None = None  # "invalid": a regex the error message must match


# --- raw tar pieces, for headers tarfile would not write

END = bytes(1024)


def header(name: bytes, typ: bytes, size: int, mode: int = 0o644) -> bytes:
    """One ustar header block, checksummed."""
    blk = bytearray(512)
    blk[0 : len(name)] = name
    blk[100:108] = b"%07o\0" % mode
    blk[108:116] = blk[116:124] = b"%07o\0" % 0
    blk[124:136] = b"%011o\0" % size
    blk[136:148] = b"%011o\0" % MTIME
    blk[148:156] = b" " * 8
    blk[156:157] = typ
    blk[257:265] = b"ustar\x0000"
    blk[148:156] = b"%06o\0 " % sum(blk)
    return bytes(blk)


def member(name: bytes, typ: bytes, body: bytes = b"") -> bytes:
    """A header and its body, padded to the block size."""
    return header(name, typ, len(body)) + body + bytes(-len(body) % 512)


def pax_record(key: bytes, value: bytes) -> bytes:
    """`<length> key=value\\n`, where the length counts its own digits."""
    rest = b" " + key + b"=" + value + b"\n"
    n = len(rest) + 1
    while len(b"%d" % n) + len(rest) != n:
        n += 1
    return b"%d" % n + rest


def pax(body: bytes) -> bytes:
    return member(b"PaxHeaders/f", b"x", body)


def with_file(*extended: bytes) -> bytes:
    """Extended headers, then a small regular file `f` they apply to, then the end blocks."""
    return b"".join(extended) + member(b"f", b"0", b"payload") + END


@functools.cache
def oversized_pax() -> bytes:
    """A 64 MiB PAX header (Go's limit is 1 MiB), really there, not just announced."""
    return with_file(pax(pax_record(b"comment", b"x" * (64 << 20))))


@functools.cache
def pax_run(count: int = 5000) -> bytes:
    """Thousands of PAX headers in a row before one member."""
    return with_file(*[pax(pax_record(b"path", b"p%d" % i)) for i in range(count)])


@functools.cache
def longname_chain(count: int = 5000) -> bytes:
    return with_file(*[member(b"././@LongLink", b"L", b"n%d\0" % i) for i in range(count)])


def quadratic_pax_body(size: int = 1 << 20) -> bytes:
    """Valid, tiny records filling a maximal PAX header: a parser that re-scans the rest of the
    header per record does ~size^2/12 work."""
    rec = pax_record(b"a", b"b")
    return rec * ((size - 512) // len(rec))


def backtracking_pax_body(size: int = 1 << 20) -> bytes:
    """CVE-2024-6232's shape: records without `=`, then one `=` at the very end. A `(\\d+) ([^=]+)=`
    regex (tarfile before Python 3.11.10) scans to that `=` from every record: quadratic time,
    and a key per record as long as the rest of the header."""
    return b"4 a\n" * ((size - 512) // 4) + b"="


def _read(p: Path) -> bytes:
    return p.read_bytes()


def _is_link(p: Path, target: str) -> bool:
    return p.is_symlink() and os.readlink(p) == target


def has(rel: str, content: bytes) -> Hook:
    def check(d: Path, o: Path) -> None:
        assert _read(d / rel) == content, rel

    return check


def corpus(outside: Path) -> list[Case]:
    out = str(outside)
    host_hostname = "/etc/hostname"
    cases: list[Case] = []

    def add(
        name: str,
        members: list[Member] | bytes,
        expect: str,
        check: Hook | None = None,
        prepare: Hook | None = None,
        fmt: int = tarfile.PAX_FORMAT,
    ) -> None:
        data = members if isinstance(members, bytes) else build(members, fmt)
        cases.append(Case(name, data, expect, check, prepare))

    # --- names
    add("dotdot-escape", [reg("../escape")], "invalid")
    add("dotdot-deep-escape", [reg("a/../../x")], "invalid")
    add("dotdot-to-outside", [reg(f"../{outside.name}/pwned")], "invalid")

    def abs_ok(d: Path, o: Path) -> None:
        assert _read(d / "abs/path") == b"payload"

    add("absolute-name", [reg("/abs/path")], "ok", abs_ok)
    add("absolute-outside-name", [reg(f"{out}/pwned")], "ok", has(f"{out.lstrip('/')}/pwned", b"payload"))
    add("dotdot-inside", [reg("a/../b")], "ok", has("b", b"payload"))
    add("file-named-dot", [reg(".")], "invalid")
    add("file-named-empty", [reg("")], "invalid")
    add("file-named-slash", [reg("/")], "invalid")
    add("symlink-named-dot", [sym("./", "/etc")], "invalid")

    def nul_name() -> list[Member]:
        ti, data = reg("placeholder")
        ti.pax_headers = {"path": "a\x00b"}
        return [(ti, data)]

    add("nul-in-pax-path", nul_name(), "invalid")

    # --- long names: GNU longlink and PAX path
    long_dir = "/".join(["d" * 60] * 5)

    def long_ok(d: Path, o: Path) -> None:
        assert _read(d / long_dir / ("f" * 150)) == b"payload"

    add("gnu-longname", [reg(f"{long_dir}/{'f' * 150}")], "ok", long_ok, fmt=tarfile.GNU_FORMAT)
    add("pax-longname", [reg(f"{long_dir}/{'f' * 150}")], "ok", long_ok)
    add("gnu-longname-escape", [reg("x" * 120 + "/../../../escape")], "invalid", fmt=tarfile.GNU_FORMAT)
    add("pax-longname-escape", [reg("x" * 120 + "/../../../escape")], "invalid")
    add("gnu-longlink-escape", [hlink("l", "../" * 40 + "etc/passwd")], "invalid", fmt=tarfile.GNU_FORMAT)
    add("component-too-long", [reg("n" * 300)], "invalid")

    # --- symlinks in parents: chroot semantics
    def root_link_ok(d: Path, o: Path) -> None:
        assert _read(d / "etc/x") == b"payload"
        assert _is_link(d / "a", "/")
        assert not os.path.exists("/etc/x")

    add("symlink-root-then-write", [sym("a", "/"), reg("a/etc/x")], "ok", root_link_ok)

    def updots_ok(d: Path, o: Path) -> None:
        assert _read(d / "x") == b"payload"

    add("symlink-updots-then-write", [sym("a", "../../.."), reg("a/x")], "ok", updots_ok)
    add("symlink-sibling-relative", [sym("s", f"../{outside.name}"), reg("s/pwned")], "either")
    add("symlink-sibling-absolute", [sym("s", out), reg("s/pwned")], "either")

    def sibling_inside_ok(d: Path, o: Path) -> None:
        assert _read(d / outside.name / "pwned") == b"payload"

    add(
        "symlink-sibling-existing-in-root",
        [dir_(outside.name), sym("s", f"../{outside.name}"), reg("s/pwned")],
        "ok",
        sibling_inside_ok,
    )
    add("symlink-parent-made-earlier", [dir_("d"), sym("d/sub", out), reg("d/sub/sentinel", b"overwritten")], "either")

    def etc_ok(d: Path, o: Path) -> None:
        assert _is_link(d / "d", "/etc")
        assert _read(d / "etc/passwd") == b"root::0:0::/:/bin/sh\n"

    add(
        "dir-replaced-by-symlink",
        [dir_("d"), reg("d/f"), sym("d", "/etc"), reg("d/passwd", b"root::0:0::/:/bin/sh\n")],
        "either",
        etc_ok,
    )
    add(
        "dir-replaced-by-symlink-existing",
        [dir_("etc"), dir_("d"), sym("d", "/etc"), reg("d/passwd", b"root::0:0::/:/bin/sh\n")],
        "ok",
        etc_ok,
    )
    add("dir-replaced-by-outside-symlink", [dir_("d"), sym("d", out), reg("d/sentinel", b"x")], "either")
    add("symlink-loop", [sym("a", "b"), sym("b", "a"), reg("a/x")], "invalid")
    add(
        "symlink-chain-out",
        [dir_("etc"), sym("l1", "l2"), sym("l2", "../../../../../.."), reg("l1/etc/shadow", b"s")],
        "ok",
        has("etc/shadow", b"s"),
    )

    # --- hard links
    add("hardlink-dotdot", [hlink("h", f"../{outside.name}/sentinel")], "invalid")
    add("hardlink-deep-dotdot", [hlink("h", "../../outside/sentinel")], "invalid")
    add("hardlink-etc-passwd", [hlink("h", "/etc/passwd")], "invalid")
    add("hardlink-host-hostname", [hlink("h", host_hostname)], "invalid")
    add("hardlink-abs-outside", [hlink("h", f"{out}/sentinel")], "invalid")
    add("hardlink-through-symlink", [sym("s", out), hlink("h", "s/sentinel")], "invalid")
    add("hardlink-through-root-symlink", [sym("s", "/"), hlink("h", "s/etc/passwd")], "invalid")
    add("hardlink-to-dir", [dir_("d"), hlink("h", "d")], "invalid")
    add("hardlink-to-root", [hlink("h", "/")], "invalid")

    def inroot_link_ok(d: Path, o: Path) -> None:
        assert os.stat(d / "h").st_ino == os.stat(d / "etc/passwd").st_ino
        assert os.stat(d / "h").st_ino != os.stat("/etc/passwd").st_ino

    add(
        "hardlink-abs-inside",
        [dir_("etc"), reg("etc/passwd", b"inner"), hlink("h", "/etc/passwd")],
        "ok",
        inroot_link_ok,
    )

    # --- a lower layer holds a hard link to a file outside dest (the "hardlink trick"): writing
    # over it must replace the name, never write through the shared inode.
    def victim(d: Path, o: Path) -> None:
        os.link(o / "sentinel", d / "victim")

    def victim_symlink_ok(d: Path, o: Path) -> None:
        assert _is_link(d / "victim", "/etc/passwd")

    add("hardlink-trick-symlink-over", [sym("victim", "/etc/passwd")], "ok", victim_symlink_ok, victim)
    add(
        "hardlink-trick-file-over",
        [reg("victim", b"clobbered", mode=0o4777, uid=1234)],
        "ok",
        has("victim", b"clobbered"),
        victim,
    )

    def relinked(d: Path, o: Path) -> None:
        assert os.stat(d / "again").st_ino == os.stat(d / "victim").st_ino

    add(
        "hardlink-trick-relink-chmod",
        [hlink("again", "victim", mode=0o6777, uid=4321, gid=4321)],
        "ok",
        relinked,
        victim,
    )

    def victim_dir(d: Path, o: Path) -> None:
        assert (d / "victim").is_dir() and not (d / "victim").is_symlink()

    add("hardlink-trick-dir-over", [dir_("victim", mode=0o777)], "ok", victim_dir, victim)

    # --- whiteouts
    add("whiteout-dotdot", [reg(".wh..")], "invalid")
    add("whiteout-dot", [reg("sub/.wh..")], "invalid")
    add("whiteout-empty", [reg(".wh.")], "invalid")
    add("whiteout-named-dots", [reg(".wh.../x")], "ok", has(".wh.../x", b"payload"))
    add("whiteout-through-outside-symlink", [sym("s", out), reg("s/.wh.sentinel", b"")], "either")
    add("whiteout-through-relative-symlink", [sym("s", f"../{outside.name}"), reg("s/.wh.sentinel", b"")], "either")
    add("whiteout-dotdot-path", [reg(f"../{outside.name}/.wh.sentinel", b"")], "invalid")
    add("opaque-under-outside-symlink", [sym("l", out), reg("l/.wh..wh..opq", b"")], "either")
    add("opaque-under-relative-symlink", [sym("l", f"../{outside.name}"), reg("l/.wh..wh..opq", b"")], "either")

    def lower_etc(d: Path, o: Path) -> None:
        (d / "etc").mkdir()
        (d / "etc/keep").write_bytes(b"lower")

    def opaque_inroot_ok(d: Path, o: Path) -> None:
        assert (d / "etc").is_dir()

    add("opaque-under-root-symlink", [sym("l", "/etc"), reg("l/.wh..wh..opq", b"")], "ok", opaque_inroot_ok, lower_etc)

    # --- devices and fifos stay inside dest
    def dev_ok(d: Path, o: Path) -> None:
        st = os.lstat(d / "dev/null")
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
        assert stat.S_IMODE(st.st_mode) == 0o666
        st = os.lstat(d / "dev/loop9")
        assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 7
        assert stat.S_ISFIFO(os.lstat(d / "p").st_mode)

    add("devices", [dir_("dev"), chrdev("dev/null", 1, 3), blkdev("dev/loop9", 7, 9), fifo("p")], "ok", dev_ok)
    add("device-through-symlink", [sym("dev", out), chrdev("dev/null", 1, 3)], "either")

    # --- malformed streams
    good = build([reg("f")])
    bad_sum = bytearray(good)
    bad_sum[0] ^= 0x01
    add("bad-checksum", bytes(bad_sum), "invalid")
    add("truncated-content", build([reg("f", b"x" * 5000)])[:2048], "invalid")
    add("truncated-header", good[:300], "invalid")

    def sparse() -> list[Member]:
        ti, data = reg("s")
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        return [(ti, data)]

    add("pax-sparse", sparse(), "invalid")

    # --- extended headers: sizes, runs, PAX records (like Go's archive/tar, which dockerd uses)
    def add_raw(name: str, data: bytes, expect: str, message: str | None = None, check: Hook | None = None) -> None:
        cases.append(Case(name, data, expect, check, message=message))

    add_raw("pax-oversized-64MiB", oversized_pax(), "invalid", r"extended header of 67\d{6} bytes")
    add_raw("pax-thousands-in-a-row", pax_run(), "invalid", "extended tar headers .* in a row")
    add_raw("gnu-longname-chain", longname_chain(), "invalid", "extended tar headers .* in a row")
    add_raw(
        "pax-and-longnames-at-the-limit",
        with_file(*[pax(pax_record(b"path", b"g")) for _ in range(8)], *[member(b"L", b"L", b"g\0")] * 7),
        "ok",
        check=has("g", b"payload"),
    )
    add_raw("pax-record-huge-length", with_file(pax(b"99999999999999999999999 path=x\n")), "invalid", "malformed PAX")
    add_raw("pax-record-length-5000-digits", with_file(pax(b"9" * 5000 + b" path=x\n")), "invalid", "malformed PAX")
    add_raw("pax-record-length-not-decimal", with_file(pax(b"1_2 path=ab\n")), "invalid", "malformed PAX")
    add_raw("pax-record-length-short", with_file(pax(b"3 path=ab\n")), "invalid", "malformed PAX")
    add_raw("pax-quadratic-body", with_file(pax(quadratic_pax_body())), "ok", check=has("f", b"payload"))
    add_raw("pax-backtracking-body", with_file(pax(backtracking_pax_body())), "invalid", "malformed PAX")
    add_raw(
        "pax-nul-padded",
        with_file(pax(pax_record(b"path", b"padded") + bytes(100))),
        "ok",
        check=has("padded", b"payload"),
    )
    add_raw("pax-garbage-after-nul", with_file(pax(bytes(10) + b"6 a=b\n")), "invalid", "malformed PAX")
    return cases
