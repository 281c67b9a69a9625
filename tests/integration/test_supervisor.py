"""The supervisor on its own: its socket protocol, without a daemon in front."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.stdcopy import parse_frames
from conftest import require_root


@pytest.fixture(scope="module")
def rootfs(busybox_tar: str) -> Iterator[str]:
    require_root()
    d = tempfile.mkdtemp(prefix="bocker-sup-rootfs-", dir="/var/tmp")
    with tarfile.open(busybox_tar) as tf:
        tf.extractall(d, filter="fully_trusted")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Sup:
    def __init__(self, root: str) -> None:
        self.root = root
        self.sock = os.path.join(root, "supervisor.sock")

    async def request(self, **req: Any) -> dict[str, Any]:
        r, w = await asyncio.open_unix_connection(self.sock)
        w.write(json.dumps(req).encode() + b"\n")
        await w.drain()
        resp: dict[str, Any] = json.loads(await r.readline())
        w.close()
        return resp

    async def events(self) -> asyncio.StreamReader:
        r, w = await asyncio.open_unix_connection(self.sock)
        w.write(b'{"op": "events"}\n')
        await w.drain()
        self._events_writer = w
        return r

    async def attach(self, id: str, stdin: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_unix_connection(self.sock)
        w.write(json.dumps({"op": "attach", "id": id, "stdin": stdin, "stdout": True, "stderr": True}).encode() + b"\n")
        await w.drain()
        assert await r.readline() == b"{}\n"
        return r, w


@pytest.fixture
async def sup() -> AsyncIterator[Sup]:
    require_root()
    root = tempfile.mkdtemp(prefix="bocker-sup-", dir="/var/tmp")
    proc = subprocess.Popen([sys.executable, "-m", "bocker_engine.runtime.supervisor", "--root", root],
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    s = Sup(root)
    try:
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def spec(rootfs: str, id: str, *args: str, **kw: Any) -> dict[str, Any]:
    return ProcessSpec(id=id, args=list(args), env=[], rootfs=rootfs, hostname="h", **kw).to_json()


async def test_attach_before_start_stdin_and_exit_event(sup: Sup, rootfs: str, tmp_path: Any) -> None:
    events = await sup.events()
    r, w = await sup.attach("c1", stdin=True)
    w.write(b"before start\n")
    w.write_eof()
    log = os.path.join(str(tmp_path), "c1.log")
    resp = await sup.request(op="start", spec=spec(rootfs, "c1", "sh", "-c", "cat; echo err >&2; exit 3",
                                                   open_stdin=True, stdin_once=True, log_path=log))
    assert resp["pid"] > 0
    data = await asyncio.wait_for(r.read(), 20)
    frames, rest = parse_frames(data)
    assert rest == b""
    assert (1, b"before start\n") in frames and (2, b"err\n") in frames
    ev = json.loads(await asyncio.wait_for(events.readline(), 20))
    assert ev["event"] == "exit" and ev["id"] == "c1" and ev["exit_code"] == 3
    with open(log) as f:
        lines = [json.loads(line) for line in f]
    assert [(x["stream"], x["log"]) for x in lines] == [("stdout", "before start\n"), ("stderr", "err\n")]
    listed = (await sup.request(op="list"))["procs"]
    assert [(p["id"], p["running"], p["exit_code"]) for p in listed] == [("c1", False, 3)]
    await sup.request(op="forget", id="c1")
    assert (await sup.request(op="list"))["procs"] == []


async def test_start_errors_and_kill(sup: Sup, rootfs: str) -> None:
    resp = await sup.request(op="start", spec=spec(rootfs, "bad", "nosuch"))
    assert resp == {"error": 'exec: "nosuch": executable file not found in $PATH', "kind": "ENOENT"}
    # The kind of each failure travels with runc's wording (engine/start_errors.py maps it).
    resp = await sup.request(op="start", spec=spec(rootfs, "bad", "/etc"))
    assert resp == {"error": 'exec: "/etc": is a directory', "kind": "EISDIR"}
    events = await sup.events()
    resp = await sup.request(op="start", spec=spec(rootfs, "k", "sleep", "100"))
    assert "pid" in resp
    assert await sup.request(op="kill", id="k", signal=9) == {}
    ev = json.loads(await asyncio.wait_for(events.readline(), 20))
    assert ev["id"] == "k" and ev["exit_code"] == 137
    assert "error" in await sup.request(op="kill", id="k", signal=9)


async def test_tty_and_resize(sup: Sup, rootfs: str) -> None:
    r, _ = await sup.attach("t")
    resp = await sup.request(op="start", spec=spec(rootfs, "t", "sh", "-c", "sleep 0.3; stty size; tty",
                                                   tty=True, console_size=(24, 80)))
    assert "pid" in resp
    await sup.request(op="resize", id="t", h=40, w=100)
    out = await asyncio.wait_for(r.read(), 20)
    assert out == b"40 100\r\n/dev/pts/0\r\n"


async def _listed(sup: Sup, id: str) -> None:
    """Until the supervisor has the start of `id` in hand (its process record exists)."""
    for _ in range(2000):
        if any(p["id"] == id for p in (await sup.request(op="list"))["procs"]):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"start of {id} never arrived")


async def test_a_gated_start_execs_only_once_its_gate_opens(sup: Sup, rootfs: str, tmp_path: Any) -> None:
    events = await sup.events()
    log = os.path.join(str(tmp_path), "g.log")
    start = asyncio.ensure_future(
        sup.request(op="start", spec=spec(rootfs, "g", "echo", "ran", gate="tok1", log_path=log))
    )
    await _listed(sup, "g")
    # Held before exec: not started, nothing ran, whatever else the supervisor serves meanwhile.
    assert [p["running"] for p in (await sup.request(op="list"))["procs"]] == [False]
    assert not start.done()
    assert await sup.request(op="open", gate="tok1", ok=True) == {}
    assert (await asyncio.wait_for(start, 20))["pid"] > 0
    ev = json.loads(await asyncio.wait_for(events.readline(), 20))
    assert ev["id"] == "g" and ev["exit_code"] == 0
    with open(log) as f:
        assert [json.loads(line)["log"] for line in f] == ["ran\n"]


async def test_a_gate_closed_abandons_the_start(sup: Sup, rootfs: str, tmp_path: Any) -> None:
    log = os.path.join(str(tmp_path), "a.log")
    start = asyncio.ensure_future(
        sup.request(op="start", spec=spec(rootfs, "a", "echo", "ran", gate="tok2", log_path=log))
    )
    await _listed(sup, "a")
    assert await sup.request(op="open", gate="tok2", ok=False) == {}
    resp = await asyncio.wait_for(start, 20)
    assert resp["error"] == "the container's network setup failed"
    assert not os.path.exists(log) or os.path.getsize(log) == 0


async def test_a_gate_opened_before_its_start_arrives_still_counts(sup: Sup, rootfs: str) -> None:
    # The engine opens on another connection: the supervisor may read the open first.
    assert await sup.request(op="open", gate="tok3", ok=True) == {}
    resp = await asyncio.wait_for(sup.request(op="start", spec=spec(rootfs, "e", "true", gate="tok3")), 20)
    assert resp["pid"] > 0
