"""The shortest path through the product: import, run, list, remove."""

from __future__ import annotations

from tests.daemon import Daemon


def test_run_echo(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "busybox", "echo", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"


def test_dockerpy_run(dm: Daemon) -> None:
    assert dm.client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
