"""A restart whose start fails, and legacy links bound to containers rather than names, as a
real dockerd (20.10, daemon/restart.go and its link index) answers: the statuses and words here
were taken from one."""

from __future__ import annotations

from collections.abc import Iterator

import docker.errors
import pytest

from tests.daemon import Daemon


@pytest.fixture
def api(dm: Daemon) -> Iterator[docker.APIClient]:
    client = dm.api()
    yield client
    client.close()


def test_restart_wraps_the_start_error(dm: Daemon, api: docker.APIClient) -> None:
    cid = dm.out("create", "--name", "rsnoexec", "busybox", "/nope").strip()
    start = dm.docker("start", "rsnoexec")
    assert start.returncode == 1 and "Cannot restart" not in start.stderr
    cause = start.stderr.split("Error response from daemon: ", 1)[1].splitlines()[0]
    assert 'exec: "/nope": stat /nope: no such file or directory' in cause
    # The CLI: the container named as it was given (a name, or an id prefix).
    r = dm.docker("restart", "rsnoexec")
    assert r.returncode == 1
    assert f"Error response from daemon: Cannot restart container rsnoexec: {cause}\n" in r.stderr, r.stderr
    r = dm.docker("restart", cid[:7])
    assert f"Error response from daemon: Cannot restart container {cid[:7]}: {cause}\n" in r.stderr, r.stderr
    # docker-py: a 500 (dockerd wraps with %v, the cause's type is gone).
    with pytest.raises(docker.errors.APIError) as e:
        api.restart("rsnoexec", timeout=0)
    assert e.value.status_code == 500
    assert e.value.explanation == f"Cannot restart container rsnoexec: {cause}"
    # What is checked before the restart is not wrapped.
    with pytest.raises(docker.errors.NotFound) as nf:
        api.restart("rsnosuch")
    assert nf.value.explanation == "No such container: rsnosuch"


def test_restart_of_a_linker_whose_linked_container_is_gone(dm: Daemon, api: docker.APIClient) -> None:
    dm.out("run", "-d", "--name", "rsdb", "busybox", "sleep", "300")
    dm.out("run", "-d", "--name", "rsweb", "--link", "rsdb:db", "busybox", "sleep", "300")
    dm.out("rm", "-f", "rsdb")
    r = dm.docker("restart", "-t", "0", "rsweb")
    assert r.returncode == 1
    wanted = "Cannot restart container rsweb: Cannot link to a non running container: /rsdb AS /rsweb/db"
    assert f"Error response from daemon: {wanted}\n" in r.stderr, r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        api.restart("rsweb", timeout=0)
    assert (e.value.status_code, e.value.explanation) == (500, wanted)


def test_links_are_to_a_container_not_a_name(dm: Daemon, api: docker.APIClient) -> None:
    """dockerd's link index holds the container: another one created under the linked
    container's name after its removal is not linked, and the linker no longer starts."""
    dm.out("run", "-d", "--name", "lkdb", "busybox", "sleep", "300")
    dm.out("create", "--name", "lkweb", "--link", "lkdb:db", "busybox", "sleep", "300")
    dm.out("start", "lkweb")
    dm.out("stop", "-t", "0", "lkweb")
    dm.out("rm", "-f", "lkdb")
    dm.out("run", "-d", "--name", "lkdb", "busybox", "sleep", "300")
    r = dm.docker("start", "lkweb")
    assert r.returncode == 1
    wanted = "Cannot link to a non running container: /lkdb AS /lkweb/db"
    assert f"Error response from daemon: {wanted}\n" in r.stderr, r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        api.start("lkweb")
    assert (e.value.status_code, e.value.explanation) == (500, wanted)
    assert api.inspect_container("lkweb")["HostConfig"]["Links"] == ["/lkdb:/lkweb/db"]
    # A linker created now links to the new one.
    dm.out("run", "-d", "--name", "lkweb2", "--link", "lkdb:db", "busybox", "sleep", "300")
    assert "DB_NAME=/lkweb2/db" in dm.out("exec", "lkweb2", "env")
