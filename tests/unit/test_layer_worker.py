"""Layers applied by worker processes (storage/worker.py, storage/workerpool.py) through the
layer store: what is committed, and that a failed, killed or cancelled worker leaves nothing."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from bocker_engine.engine.layers import DiffIDMismatch, LayerStore
from bocker_engine.errors import InvalidParameter, System
from bocker_engine.storage.overlay import OverlayDriver
from bocker_engine.storage.workerpool import Feed, WorkerPool
from tests.unit import hostile_tars
from tests.unit.hostile_tars import build, reg

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _root_and_cleanup(tmp_path: Path) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("extracting layers keeps owners and device nodes: needs root")
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> LayerStore:
    # OverlayDriver needs no mount to create, fill and remove image layers.
    driver = OverlayDriver(str(tmp_path / "data" / "overlay2"))
    os.makedirs(driver.links)
    s = LayerStore(str(tmp_path / "data" / "image" / "overlay2"), driver)
    s.load()
    return s


def run(store: LayerStore, make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await make()
        finally:
            await store.workers.close()

    return asyncio.run(main())


def assert_empty(store: LayerStore) -> None:
    """No layer recorded, no driver directory, no layerdb scratch left behind."""
    driver = store.driver
    assert isinstance(driver, OverlayDriver)
    assert store.layers == {}
    assert os.listdir(driver.home) == ["l"]
    assert os.listdir(driver.links) == []
    assert os.listdir(os.path.join(store.root, "sha256")) == []
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_file(tmp_path: Path, data: bytes, name: str = "layer") -> int:
    path = tmp_path / name
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def big_tar() -> bytes:
    """Big enough that a worker is still busy with it when the test interferes."""
    members = [reg(f"big/f{i}", os.urandom(1 << 20)) for i in range(8)]
    return build(members)


def pid_of_next_worker(store: LayerStore) -> int:
    store.workers.warm()
    return store.workers.idle[-1].proc.pid


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------------------------------------


def test_layers_committed_and_tar_rebuilt(store: LayerStore, tmp_path: Path) -> None:
    base = build([reg("etc/motd", b"hello\n"), reg("bin/tool", b"\x7fELF" * 1000, mode=0o755)])
    top = build([reg("etc/.wh.motd", b""), reg("etc/new", b"new\n")])

    async def go() -> list[int]:
        pids = [pid_of_next_worker(store)]
        fd = layer_file(tmp_path, gzip.compress(base), "base")
        try:
            first = await store.register_file(fd, None, expect_diff_id=sha(base))
        finally:
            os.close(fd)
        pids.append(store.workers.idle[-1].proc.pid)
        fd = layer_file(tmp_path, top, "top")  # a plain tar works too
        try:
            second = await store.register_file(fd, first.chain_id, expect_diff_id=sha(top))
        finally:
            os.close(fd)
        pids.append(store.workers.idle[-1].proc.pid)
        assert second.parent == first.chain_id
        return pids

    pids = run(store, go)
    assert len(set(pids)) == 1, "one worker serves one layer after another"
    assert len(store.layers) == 2
    for layer, data in zip(store.layers.values(), (base, top), strict=True):
        out = io.BytesIO()
        store.tar(layer.chain_id, out)
        assert out.getvalue() == data
    top_layer = [x for x in store.layers.values() if x.parent][0]
    diff = Path(store.driver.layer_dir(top_layer.cache_id))
    assert (diff / "etc/new").read_bytes() == b"new\n"
    assert os.stat(diff / "etc/motd").st_rdev == 0  # an overlay whiteout


HOSTILE = [c for c in hostile_tars.corpus(Path("/nonexistent/outside")) if c.expect == "invalid"][:6]


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.name)
def test_hostile_layer_leaves_nothing(store: LayerStore, tmp_path: Path, case: hostile_tars.Case) -> None:
    fd = layer_file(tmp_path, gzip.compress(case.data))

    async def go() -> None:
        await store.register_file(fd, None)

    try:
        with pytest.raises(InvalidParameter):
            run(store, go)
    finally:
        os.close(fd)
    assert_empty(store)


def test_corrupt_gzip_leaves_nothing(store: LayerStore, tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(big_tar()))
    blob[len(blob) // 2 :] = os.urandom(len(blob) - len(blob) // 2)
    fd = layer_file(tmp_path, bytes(blob))
    try:
        with pytest.raises(InvalidParameter, match="invalid layer"):
            run(store, lambda: store.register_file(fd, None))
    finally:
        os.close(fd)
    assert_empty(store)


def test_diff_id_mismatch_commits_nothing(store: LayerStore, tmp_path: Path) -> None:
    data = build([reg("a", b"a")])
    fd = layer_file(tmp_path, data)
    try:
        with pytest.raises(DiffIDMismatch) as e:
            run(store, lambda: store.register_file(fd, None, expect_diff_id=sha(b"other")))
    finally:
        os.close(fd)
    assert e.value.actual == sha(data)
    assert_empty(store)


class Growing:
    """A layer file written bit by bit, like a download."""

    def __init__(self, tmp_path: Path) -> None:
        self.fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        self.feed = Feed()
        self.written = 0
        self.read: list[int] = []

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)
        self.written += len(data)
        self.feed.grow(self.written)

    async def reading(self) -> None:
        while not self.read:
            await asyncio.sleep(0.01)


def test_growing_file_ends_only_when_the_download_says_so(store: LayerStore, tmp_path: Path) -> None:
    data = big_tar()
    blob = gzip.compress(data)
    g = Growing(tmp_path)

    async def go() -> None:
        g.write(blob[:1000])
        task = asyncio.create_task(
            store.register_file(g.fd, None, expect_diff_id=sha(data), feed=g.feed, progress=g.read.append)
        )
        await g.reading()
        g.write(blob[1000:])
        await asyncio.sleep(0.5)
        # Everything is there, but the digest has not been checked yet.
        assert not task.done()
        g.feed.finish()
        layer = await task
        assert layer.diff_id == sha(data)

    try:
        run(store, go)
    finally:
        os.close(g.fd)
    assert len(store.layers) == 1


@pytest.mark.parametrize("how", ["kill", "cancel", "download-fails"])
def test_interrupted_worker_leaves_nothing(store: LayerStore, tmp_path: Path, how: str) -> None:
    blob = gzip.compress(big_tar())
    g = Growing(tmp_path)
    pids: list[int] = []

    async def go() -> None:
        pids.append(pid_of_next_worker(store))
        g.write(blob[: len(blob) // 2])
        task = asyncio.create_task(store.register_file(g.fd, None, feed=g.feed, progress=g.read.append))
        await g.reading()
        await asyncio.sleep(0.1)
        assert os.listdir(store.driver.home) != ["l"], "the layer's directory exists while it is filled"
        if how == "kill":
            os.kill(pids[0], signal.SIGKILL)
        elif how == "cancel":
            task.cancel()
        else:
            g.feed.fail()
        await task

    expected: type[BaseException] = asyncio.CancelledError if how == "cancel" else System
    try:
        with pytest.raises(expected):
            run(store, go)
    finally:
        os.close(g.fd)
    assert gone(pids[0])
    assert_empty(store)


def test_failed_worker_is_replaced(store: LayerStore, tmp_path: Path) -> None:
    bad = layer_file(tmp_path, build([reg("../x")]), "bad")
    good_data = build([reg("x", b"x")])
    good = layer_file(tmp_path, good_data, "good")

    async def go() -> tuple[int, int]:
        first = pid_of_next_worker(store)
        with pytest.raises(InvalidParameter):
            await store.register_file(bad, None)
        layer = await store.register_file(good, None, expect_diff_id=sha(good_data))
        assert layer.diff_id == sha(good_data)
        return first, store.workers.idle[-1].proc.pid

    try:
        first, second = run(store, go)
    finally:
        os.close(bad)
        os.close(good)
    assert first != second and gone(first)


def test_idle_workers_exit(tmp_path: Path) -> None:
    pool = WorkerPool(idle_timeout=0.2)

    async def go() -> int:
        pool.warm()
        w = pool.idle[-1]
        await asyncio.wait_for(asyncio.shield(w.exited), 10)
        return w.proc.pid

    pid = asyncio.run(go())
    assert gone(pid) and pool.idle == []


def apply_command(home: str, id: str, split: Path, layer: bytes) -> subprocess.CompletedProcess[bytes]:
    args = ["apply", "--driver", "overlay2", "--home", home, "--id", id, "--tar-split", str(split)]
    return subprocess.run(
        [sys.executable, "-m", "bocker_engine.storage.worker", *args], input=layer, capture_output=True, check=False
    )


def test_apply_command(store: LayerStore, tmp_path: Path) -> None:
    """The one-shot form, for debugging by hand: stdin in, JSON out."""
    data = build([reg("hello", b"world")])
    driver = store.driver
    driver.create("manual", None)
    r = apply_command(driver.home, "manual", tmp_path / "split.json.gz", gzip.compress(data))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"diff_id": sha(data), "size": 5}
    assert (Path(driver.layer_dir("manual")) / "hello").read_bytes() == b"world"
    r = apply_command(driver.home, "manual", tmp_path / "split2.json.gz", b"not a tar" * 100)
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"] == "InvalidParameter"


def test_stalled_worker_is_killed_and_leaves_nothing(store: LayerStore, tmp_path: Path) -> None:
    """A worker that has data to read but makes no progress (stopped here with SIGSTOP) is
    killed after the stall timeout; waiting for a slow download is not a stall."""
    store.workers.stall_timeout = 1.0
    blob = gzip.compress(big_tar())
    g = Growing(tmp_path)
    pids: list[int] = []

    async def go() -> None:
        pids.append(pid_of_next_worker(store))
        g.write(blob[: len(blob) // 2])
        task = asyncio.create_task(store.register_file(g.fd, None, feed=g.feed, progress=g.read.append))
        await g.reading()
        # The worker read all there is and waits for the "download": several stall timeouts
        # pass without it being taken for stalled.
        await asyncio.sleep(3.5)
        assert not task.done()
        os.kill(pids[0], signal.SIGSTOP)
        g.write(blob[len(blob) // 2 :])  # now it has data to read, and does not
        with pytest.raises(System, match="made no progress for 1 s"):
            await asyncio.wait_for(task, 30)

    try:
        run(store, go)
    finally:
        os.close(g.fd)
        if not gone(pids[0]):
            os.kill(pids[0], signal.SIGKILL)
    assert gone(pids[0])
    assert_empty(store)
