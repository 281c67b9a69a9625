"""The same daily work through docker-py 7.1 (issue 2)."""

from __future__ import annotations

import time

import docker
import pytest

from tests.daemon import Daemon


def test_run_remove(dm: Daemon) -> None:
    assert dm.client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"


def test_run_detach_logs_wait_stop_remove(dm: Daemon) -> None:
    c = dm.client.containers.run("busybox", "sh -c 'echo a; echo b >&2; sleep 0.5; echo c'", detach=True)
    assert list(c.logs(stream=True)) == [b"a\n", b"b\n", b"c\n"]
    assert c.wait() == {"StatusCode": 0, "Error": None}
    assert c.logs(stdout=True, stderr=False) == b"a\nc\n"
    c.reload()
    assert c.status == "exited"
    assert c.image.id == dm.client.images.get("busybox").id
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        dm.client.containers.get(c.id)


def test_stop_restart_kill(dm: Daemon) -> None:
    c = dm.client.containers.run("busybox", "sleep 100", detach=True, name="pystop")
    assert dm.client.containers.get("pystop").id == c.id
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    c.kill()
    assert c.wait()["StatusCode"] == 137
    c.remove(force=True)


def test_container_error_carries_stderr(dm: Daemon) -> None:
    with pytest.raises(docker.errors.ContainerError) as e:
        dm.client.containers.run("busybox", "sh -c 'echo oops >&2; exit 2'", remove=True)
    assert e.value.exit_status == 2
    assert e.value.stderr == b"oops\n"


def test_detach_auto_remove(dm: Daemon) -> None:
    c = dm.client.containers.run("busybox", "true", detach=True, auto_remove=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            dm.client.containers.get(c.id)
        except docker.errors.NotFound:
            break
        time.sleep(0.05)
    else:
        pytest.fail("auto_remove container still exists")


def test_list_filters_and_labels(dm: Daemon) -> None:
    a = dm.client.containers.run("busybox", "sleep 60", detach=True, labels={"app": "x"})
    b = dm.client.containers.create("busybox", "true", labels=["other"])
    running = dm.client.containers.list()
    assert [c.id for c in running] == [a.id]
    assert {c.id for c in dm.client.containers.list(all=True)} == {a.id, b.id}
    assert [c.id for c in dm.client.containers.list(all=True, filters={"label": "app=x"})] == [a.id]
    assert [c.id for c in dm.client.containers.list(all=True, filters={"status": "created"})] == [b.id]
    assert dm.client.containers.list(all=True, filters={"label": ["app=y"]}) == []
    assert a.labels == {"app": "x"}
    a.remove(force=True)
    b.remove()


def test_images_list_and_get(dm: Daemon) -> None:
    images = dm.client.images.list()
    assert any("busybox:latest" in i.tags for i in images)
    img = dm.client.images.get("busybox")
    assert img.id.startswith("sha256:")
    assert dm.client.images.get(img.id[7:19]).id == img.id
    with pytest.raises(docker.errors.ImageNotFound):
        dm.client.images.get("nosuchimage:1")


def test_environment_workdir_user(dm: Daemon) -> None:
    out = dm.client.containers.run(
        "busybox",
        ["sh", "-c", "echo $X; pwd; id -u"],
        environment={"X": "1"},
        working_dir="/tmp",
        user="1000",
        remove=True,
    )
    assert out.decode().split() == ["1", "/tmp", "1000"]


def test_limits(dm: Daemon) -> None:
    out = dm.client.containers.run(
        "busybox", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes", mem_limit="64m", remove=True
    )
    assert out.strip() == b"67108864"


def test_attach_socket_and_stdin(dm: Daemon) -> None:
    api = dm.api()
    c = api.create_container("busybox", "cat", stdin_open=True)  # docker-py sets StdinOnce too
    sock = api.attach_socket(c, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    api.start(c)
    sock._sock.sendall(b"via socket\n")
    sock._sock.shutdown(1)  # half-close: stdin EOF, output must still arrive
    data = b""
    while True:
        chunk = sock._sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[8:] == b"via socket\n" and data[0] == 1
    assert api.wait(c)["StatusCode"] == 0
    api.remove_container(c)
    api.close()


def test_ping_version_info(dm: Daemon) -> None:
    assert dm.client.ping() is True
    v = dm.client.version()
    assert v["ApiVersion"] == "1.44" and v["MinAPIVersion"] == "1.24"
    info = dm.client.info()
    assert info["Driver"] == dm.driver
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["Images"] >= 1
