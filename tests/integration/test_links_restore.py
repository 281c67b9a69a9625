"""Legacy links across a daemon restart: dockerd's link index lives in memory and is rebuilt
by name when the daemon starts (registerLinks on restore), so a linker made before the restart
starts after it, linked to the container that has the name then."""

from __future__ import annotations

from conftest import require_root
from tests.daemon import Daemon


def test_links_are_bound_again_on_restore(busybox_tar: str) -> None:
    require_root()
    d = Daemon("btrfs")
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        d.out("run", "-d", "--name", "db", "busybox", "sleep", "300")
        d.out("create", "--name", "web", "--link", "db:alias", "busybox", "sleep", "300")
        assert d.stop() == 0, d.log()
        d.start()
        d.out("start", "db")
        d.out("start", "web")
        ip = d.out("inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}", "db").strip()
        assert any(line.startswith(f"{ip}\talias ") for line in d.out("exec", "web", "cat", "/etc/hosts").splitlines())
        d.clean_containers()
        assert d.stop() == 0, d.log()
    finally:
        d.cleanup()
