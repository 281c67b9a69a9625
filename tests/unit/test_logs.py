"""The log formats, the rotating writer and the reader across rotated and compressed files."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading

import pytest

from bocker_engine import logconfig
from bocker_engine.logs import FORMATS, LogEntry, decode_local, encode_local, read
from bocker_engine.runtime.logwriter import LogWriter, RotatingFile
from bocker_engine.stdcopy import STDERR, STDOUT


async def _all(path: str, **kw: object) -> list[LogEntry]:
    out: list[LogEntry] = []
    async for batch in read(path, follow=False, running=lambda: False, **kw):  # type: ignore[arg-type]
        out += batch
    return out


def _write_lines(w: LogWriter, start: int, stop: int, per_write: int = 7) -> None:
    i = start
    while i < stop:
        n = min(per_write, stop - i)
        w.write(STDOUT, b"".join(f"line{j}\n".encode() for j in range(i, i + n)))
        i += n


def test_json_tail_start(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "log")
    with open(path, "wb") as f:
        for i in range(1000):
            f.write(f"line{i}\n".encode())
    fmt = FORMATS["json-file"]
    with open(path, "rb") as f:
        off, n = fmt.tail_start(f, 3)
        f.seek(off)
        assert (f.read(), n) == (b"line997\nline998\nline999\n", 3)
        assert fmt.tail_start(f, 5000) == (0, 1000)


def test_json_records_with_attrs(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "c-json.log")
    w = LogWriter(path, "json-file", {}, {"tag": "web/abc", "E": 'a"b'})
    w.write(STDOUT, 'héllo "x" \\n\n'.encode())
    w.write(STDERR, b"err\x01\n")
    w.write(STDOUT, b"no newline")
    w.close()
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    first = json.loads(lines[0])
    assert first["log"] == 'héllo "x" \\n\n' and first["stream"] == "stdout"
    assert first["attrs"] == {"E": 'a"b', "tag": "web/abc"}
    # dockerd's byte layout: compact, attrs sorted, between stream and time.
    assert lines[0].startswith(b'{"log":"h\xc3\xa9llo \\"x\\" \\\\n\\n","stream":"stdout","attrs":{"E":"a\\"b","tag":')
    assert json.loads(lines[1])["log"] == "err\x01\n"
    assert json.loads(lines[2])["log"] == "no newline"


def test_json_rotation_names_and_order(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "c-json.log")
    w = LogWriter(path, "json-file", {"max-size": "1k", "max-file": "3"})
    _write_lines(w, 0, 300)
    w.close()
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    for name in names[1:]:  # a file is rotated once it reached max-size, after a whole record
        size = os.path.getsize(os.path.join(str(tmp_path), name))
        assert 1000 <= size < 1200
    entries = asyncio.run(_all(path, tail=None))
    nums = [int(e.data[4:-1]) for e in entries]
    assert nums == list(range(nums[0], 300)) and nums[0] > 0
    tail = asyncio.run(_all(path, tail=20))  # 13 records a file: reaches back into `.1`
    assert [e.data for e in tail] == [f"line{i}\n".encode() for i in range(280, 300)]


def test_max_file_one_truncates(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "c-json.log")
    w = LogWriter(path, "json-file", {"max-size": "1k"})
    _write_lines(w, 0, 300)
    w.close()
    assert os.listdir(str(tmp_path)) == ["c-json.log"]
    assert os.path.getsize(path) < 1200


@pytest.mark.parametrize("driver", ["json-file", "local"])
def test_compressed_rotation_read_in_order(tmp_path: object, driver: str) -> None:
    path = os.path.join(str(tmp_path), "c.log")
    opts = {"max-size": "2k", "max-file": "4", "compress": "true"}
    w = LogWriter(path, driver, opts)
    _write_lines(w, 0, 1000)
    assert w.file is not None
    w.file.wait_compression()
    w.close()
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["c.log", "c.log.1.gz", "c.log.2.gz", "c.log.3.gz"]
    with gzip.open(os.path.join(str(tmp_path), "c.log.1.gz")) as f:
        assert f.read()  # a valid gzip stream with our FEXTRA header
    entries = asyncio.run(_all(path, tail=None, fmt=driver))
    nums = [int(e.data[4:-1]) for e in entries]
    assert nums == list(range(nums[0], 1000))
    # --tail reaching back into the compressed files
    tail = asyncio.run(_all(path, tail=len(nums) - 5, fmt=driver))
    assert [int(e.data[4:-1]) for e in tail] == nums[5:]
    # --since / --until on times
    mid = entries[len(entries) // 2].time_ns
    assert all(e.time_ns >= mid for e in asyncio.run(_all(path, tail=None, since_ns=mid, fmt=driver)))
    until = asyncio.run(_all(path, tail=None, until_ns=mid, fmt=driver))
    assert until and all(e.time_ns <= mid for e in until)


def test_local_record_roundtrip() -> None:
    rec = encode_local("stderr", b"x" * 300, 1_700_000_000_123_456_789, False)
    size = int.from_bytes(rec[:4], "big")
    assert rec[-4:] == rec[:4] and len(rec) == size + 8
    e = decode_local(rec[4:-4])
    assert e is not None and (e.stream, e.data, e.time_ns) == ("stderr", b"x" * 300 + b"\n", 1_700_000_000_123_456_789)
    part = decode_local(encode_local("stdout", b"abc", 5, True)[4:-4])
    assert part is not None and part.data == b"abc"


def test_local_long_line_in_pieces(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "local-logs", "container.log")
    w = LogWriter(path, "local", {})
    w.write(STDOUT, b"a" * 40000 + b"\nshort\n")
    w.close()
    entries = asyncio.run(_all(path, tail=None, fmt="local"))
    assert b"".join(e.data for e in entries) == b"a" * 40000 + b"\nshort\n"
    assert [e.data for e in asyncio.run(_all(path, tail=1, fmt="local"))] == [b"short\n"]


async def test_follow_through_rotations_exact(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "c-json.log")
    # Rotations come faster than the follower polls, so it is often several files behind, its
    # own file already compressed (placed by the inode in the gzip header); none is deleted.
    w = LogWriter(path, "json-file", {"max-size": "4k", "max-file": "100", "compress": "true"})
    _write_lines(w, 0, 50)
    done = False
    got: list[bytes] = []

    async def follow() -> None:
        async for batch in read(path, follow=True, tail=None, running=lambda: not done):
            got.extend(e.data for e in batch)

    task = asyncio.ensure_future(follow())
    for i in range(50, 3000, 50):  # ~20 rotations while the follower reads
        _write_lines(w, i, i + 50)
        await asyncio.sleep(0.01)
    w.close()
    done = True
    await asyncio.wait_for(task, 30)
    assert got == [f"line{i}\n".encode() for i in range(3000)]


def test_non_blocking_drops_instead_of_blocking(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "c-json.log")
    w = LogWriter(path, "json-file", {"mode": "non-blocking", "max-buffer-size": "4k"})
    assert w.file is not None
    stuck = threading.Event()
    real_write = w.file.write

    def slow_disk(blob: bytes, split: bool = True) -> None:  # a disk that does not take writes
        stuck.wait(30)
        real_write(blob, split)

    w.file.write = slow_disk  # type: ignore[method-assign]
    for i in range(2000):  # returns at once although nothing can be written
        w.write(STDOUT, f"line{i}\n".encode())
    assert w.lines_dropped > 0 and w.queued <= 4096
    stuck.set()
    w.close()
    entries = asyncio.run(_all(path, tail=None))
    assert 0 < len(entries) < 2000
    assert entries[0].data == b"line0\n"


def test_write_error_drops_and_keeps_going(capfd: pytest.CaptureFixture[str]) -> None:
    f = RotatingFile("/dev/full")  # every write fails with ENOSPC
    f.write(b'{"log":"x"}\n')
    f.write(b'{"log":"y"}\n')
    assert f.dropped == 2 and f.size == 0
    f.close()
    assert "no space left on device" in capfd.readouterr().err


def test_extra_attrs_and_tag() -> None:
    opts = {"labels": "a,missing", "env": "E", "env-regex": "^X", "labels-regex": "^com\\."}
    attrs = logconfig.extra_attrs(opts, {"a": "1", "b": "2", "com.x": "3"}, ["E=e", "XA=1", "Y=2", "NOVALUE"])
    assert attrs == {"a": "1", "com.x": "3", "E": "e", "XA": "1"}
    fields = logconfig.tag_fields("f" * 64, "/web", "sha256:" + "a" * 64, "busybox", "h", "sh -c x")
    assert logconfig.log_tag("{{.Name}}/{{ .ID }}/{{.ImageID}}/{{.Nope}}", fields) == (
        f"web/{'f' * 12}/{'a' * 12}/{{{{.Nope}}}}"
    )


def test_local_options_checked() -> None:
    logconfig.validate("local", {"max-size": "10m", "max-file": "2", "compress": "false"})
    with pytest.raises(logconfig.LogConfigError, match="unknown log opt 'labels' for log driver local"):
        logconfig.validate("local", {"labels": "a"})
    with pytest.raises(logconfig.LogConfigError, match="invalid value for max-file: x"):
        logconfig.validate("local", {"max-file": "x"})
