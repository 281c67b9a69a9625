"""Volumes outlive daemon restarts and crashes (issue 10)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import require_root
from tests.daemon import Daemon, mounts_under


@pytest.fixture
def fresh(busybox_tar: str):
    require_root()
    d = Daemon("btrfs")
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        yield d
    finally:
        d.cleanup()


def test_volumes_survive_restart_and_crash(fresh: Daemon) -> None:
    d = fresh
    d.out("volume", "create", "--label", "k=v", "persist")
    d.out("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=10m", "tmpv")
    d.out("run", "--rm", "-v", "persist:/d", "busybox", "sh", "-c", "echo survived > /d/f")
    cid = d.out("create", "-v", "persist:/d", "-v", "/anon", "busybox", "true").strip()
    running = d.out("run", "-d", "-v", "tmpv:/t", "busybox", "sleep", "300").strip()
    assert d.stop() == 0
    assert mounts_under(d.base) == [], "a volume mount outlived the daemon"
    d.start()
    assert d.out("run", "--rm", "-v", "persist:/d", "busybox", "cat", "/d/f") == "survived\n"
    v = json.loads(d.out("volume", "inspect", "persist"))[0]
    assert v["Labels"] == {"k": "v"}
    # References came back with the containers.
    r = d.docker("volume", "rm", "persist")
    assert r.returncode == 1 and f"volume is in use - [{cid}]" in r.stderr
    assert d.out("inspect", "-f", "{{.State.Status}}", running).strip() == "exited"
    # A crash between the steps of a create or a remove leaves only temporary names: swept.
    vols = os.path.join(d.data_root, "volumes")
    os.makedirs(os.path.join(vols, ".tmp-half-made-1234", "_data"))
    os.makedirs(os.path.join(vols, ".rm-half-gone-1234", "_data"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(30)
    d.start()
    assert sorted(os.listdir(vols)) == sorted(
        [n for n in os.listdir(vols) if not n.startswith(".")]
    )
    # The tmpfs volume mounted for the killed daemon's container is not left mounted either.
    assert not any("/volumes/tmpv/" in m + "/" for m in mounts_under(d.base))
    assert {"persist", "tmpv"} <= set(d.out("volume", "ls", "-q").split())
    assert d.out("run", "--rm", "-v", "persist:/d", "busybox", "cat", "/d/f") == "survived\n"
    d.out("rm", "-v", cid, running)
    d.out("volume", "rm", "persist", "tmpv")
    assert d.out("volume", "ls", "-q") == ""
    assert d.stop() == 0
