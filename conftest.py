"""Fixtures shared by tests/ and compat_tests/: a real daemon per storage driver."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.daemon import Daemon, leftover_cgroups, leftover_links, leftover_rules, mounts_under
from tests.images import write_busybox_tar

DRIVERS = [d for d in os.environ.get("BOCKER_TEST_DRIVERS", "btrfs,overlay2").split(",") if d]
RECORD_DIR = os.environ.get("BOCKER_API_RECORD_DIR", "/var/tmp/bocker-api-record")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, cgroups)")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_busybox_tar(str(tmp_path_factory.mktemp("images") / "busybox.tar"))


def _record_path(driver: str) -> str:
    os.makedirs(RECORD_DIR, exist_ok=True)
    path = os.path.join(RECORD_DIR, f"{driver}-{os.getpid()}.jsonl")
    # A leftover from an earlier run with the same pid must not be validated again.
    open(path, "w").close()
    return path


@pytest.fixture(scope="session", params=DRIVERS)
def daemon(request: pytest.FixtureRequest, busybox_tar: str) -> Iterator[Daemon]:
    """One daemon per storage driver for the whole session, with busybox:latest imported."""
    require_root()
    # Pinned to (non-existent) mirrors: a stray docker.io pull fails here instead of leaving the machine.
    d = Daemon(request.param, record=_record_path(request.param),
               extra_args=["--registry-mirror", "http://127.0.0.1:9", "--registry-mirrors-only"])
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        yield d
        d.clean_containers()
        code = d.stop()
        assert code == 0, f"bockerd exited with {code}:\n{d.log()}"
        assert mounts_under(d.base) == [], "daemon shutdown left mounts behind"
        assert leftover_cgroups(d.cgroup_parent) == [], "daemon shutdown left cgroups behind"
        assert leftover_links(d) == [], "daemon shutdown left bridges or veths behind"
        assert leftover_rules(d.chain) == [], "daemon shutdown left iptables rules behind"
    finally:
        d.cleanup()


@pytest.fixture
def dm(daemon: Daemon) -> Iterator[Daemon]:
    """The session daemon, with every container the test made removed afterwards."""
    yield daemon
    daemon.clean_containers()


@pytest.fixture
def images(dm: Daemon) -> Iterator[list[str]]:
    """Image references a test made; removed afterwards (with whatever still uses them)."""
    made: list[str] = []
    yield made
    dm.clean_containers()
    for ref in reversed(made):
        dm.docker("rmi", "-f", ref)
