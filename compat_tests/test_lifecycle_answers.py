"""Lifecycle answers that clients depend on, as dockerd gives them (issue 6, section 1)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

import docker
import pytest

from tests.daemon import Daemon

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm '
    "and try again."
)


def _http(dm: Daemon) -> tuple[Any, str]:
    """A requests session on the daemon's socket (docker-py's), and the base URL for it."""
    api = dm.api()
    return api, api.base_url


def test_kill_returns_once_the_container_exited(dm: Daemon) -> None:
    api = dm.api()
    for _ in range(5):  # the old answer raced the exit; a few rounds show it
        c = api.create_container("busybox", ["sleep", "1000"])
        api.start(c)
        api.kill(c)
        state = api.inspect_container(c)["State"]
        assert (state["Running"], state["ExitCode"], state["Status"]) == (False, 137, "exited")
        api.remove_container(c)


def test_group_add(dm: Daemon) -> None:
    # Numbers need not exist in /etc/group; names are resolved in the container's.
    out = dm.out("run", "--rm", "--group-add", "4242", "--group-add", "staff", "busybox", "id", "-G")
    assert set(out.split()) == {"0", "4242", "50"}
    out = dm.out("run", "--rm", "--user", "app", "--group-add", "daemon", "busybox", "id", "-G")
    assert set(out.split()) == {"1000", "50", "1"}
    r = dm.docker("run", "--rm", "--group-add", "nosuchgroup", "busybox", "true")
    assert r.returncode != 0
    assert "unable to find group nosuchgroup" in r.stderr


def test_unknown_log_driver(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "--log-driver", "asdf", "busybox", "true")
    assert r.returncode == 125
    assert "logger: no log driver named 'asdf' is registered" in r.stderr
    with pytest.raises(docker.errors.APIError) as e:
        dm.api().create_container("busybox", ["true"], host_config={"LogConfig": {"Type": "asdf", "Config": {}}})
    assert e.value.response.status_code == 400
    assert e.value.explanation == "logger: no log driver named 'asdf' is registered"
    # The drivers that exist keep working.
    assert dm.out("run", "--rm", "--log-driver", "none", "busybox", "echo", "x") == "x\n"


def test_load_of_something_not_an_archive(dm: Daemon, tmp_path: object) -> None:
    session, base = _http(dm)
    r = session.post(f"{base}/v1.44/images/load?quiet=1", data=b"this is not a tar archive\n" * 50)
    assert r.status_code == 200
    messages = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert messages and "error" in messages[-1] and messages[-1]["errorDetail"]["message"] == messages[-1]["error"]
    r2 = dm.docker("load", input="this is not a tar archive\n" * 50)
    assert r2.returncode == 1
    assert r2.stderr.strip() == messages[-1]["error"] or messages[-1]["error"] in r2.stderr
    with pytest.raises(docker.errors.ImageLoadError):
        dm.client.images.load(b"this is not a tar archive\n" * 50)


def test_pull_with_an_invalid_platform(dm: Daemon) -> None:
    session, base = _http(dm)
    r = session.post(f"{base}/v1.44/images/create?fromImage=busybox&tag=latest&platform=foo")
    assert r.status_code == 400
    assert r.json() == {"message": '"foo": unknown operating system or architecture: invalid argument'}


def test_image_prune_reports_the_bytes_freed(dm: Daemon, tmp_path: object, busybox_tar: str) -> None:
    payload = os.urandom(300_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("blob")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    path = os.path.join(str(tmp_path), "layer.tar")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    image_id = dm.out("import", path).strip()
    try:
        result = dm.api().prune_images()
        assert {"Deleted": image_id} in (result["ImagesDeleted"] or [])
        assert result["SpaceReclaimed"] >= len(payload)
        # A dangling image whose layer busybox:latest keeps frees nothing.
        twin = dm.out("import", busybox_tar).strip()
        result = dm.api().prune_images()
        assert {"Deleted": twin} in (result["ImagesDeleted"] or [])
        assert result["SpaceReclaimed"] == 0
    finally:
        dm.docker("rmi", "-f", image_id)


@pytest.mark.parametrize(
    "method,path,message",
    [
        ("GET", "/swarm", NOT_A_MANAGER),
        ("POST", "/swarm/init", NOT_A_MANAGER),
        ("POST", "/swarm/join", NOT_A_MANAGER),
        ("POST", "/swarm/leave?force=1", "This node is not part of a swarm"),
        ("POST", "/swarm/update?version=1", NOT_A_MANAGER),
        ("GET", "/swarm/unlockkey", NOT_A_MANAGER),
        ("POST", "/swarm/unlock", NOT_A_MANAGER),
        ("GET", "/nodes", NOT_A_MANAGER),
        ("DELETE", "/nodes/abc", NOT_A_MANAGER),
        ("GET", "/services", NOT_A_MANAGER),
        ("POST", "/services/create", NOT_A_MANAGER),
        ("POST", "/services/abc/update?version=1", NOT_A_MANAGER),
        ("GET", "/services/abc/logs", NOT_A_MANAGER),
        ("GET", "/tasks", NOT_A_MANAGER),
        ("GET", "/secrets", NOT_A_MANAGER),
        ("DELETE", "/secrets/abc", NOT_A_MANAGER),
        ("GET", "/configs", NOT_A_MANAGER),
        ("POST", "/configs/create", NOT_A_MANAGER),
    ],
)
def test_swarm_endpoints_answer_like_a_node_in_no_swarm(dm: Daemon, method: str, path: str, message: str) -> None:
    session, base = _http(dm)
    for prefix in ("", "/v1.44"):
        r = session.request(method, f"{base}{prefix}{path}", json={} if method == "POST" else None)
        assert r.status_code == 503, (method, path, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert r.json() == {"message": message}


def test_swarm_clients(dm: Daemon) -> None:
    r = dm.docker("node", "ls")
    assert r.returncode == 1
    assert NOT_A_MANAGER in r.stderr
    r = dm.docker("swarm", "leave", "--force")
    assert r.returncode == 1
    assert "This node is not part of a swarm" in r.stderr
    assert dm.info()["Swarm"]["LocalNodeState"] == "inactive"
    # docker-py's Swarm model reads /swarm and takes a 503 as "no swarm".
    assert dm.client.swarm.attrs == {}
    with pytest.raises(docker.errors.APIError) as e:
        dm.client.services.list()
    assert e.value.response.status_code == 503


def test_etc_files_are_made_at_the_first_start(dm: Daemon) -> None:
    """dockerd writes /etc/hostname, hosts and resolv.conf when the container first starts: a
    created container's inspect shows empty paths, and the files appear with the start."""
    dm.out("create", "--name", "etcfiles", "--hostname", "etchost", "--add-host", "h:1.2.3.4", "busybox", "sleep", "60")
    info = json.loads(dm.out("inspect", "etcfiles"))[0]
    assert (info["ResolvConfPath"], info["HostnamePath"], info["HostsPath"]) == ("", "", "")
    assert sorted(os.listdir(os.path.join(dm.data_root, "containers", info["Id"]))) == [
        "config.v2.json", "hostconfig.json", "network.json",
    ]  # fmt: skip
    dm.out("start", "etcfiles")
    info = json.loads(dm.out("inspect", "etcfiles"))[0]
    for key, name in (("ResolvConfPath", "resolv.conf"), ("HostnamePath", "hostname"), ("HostsPath", "hosts")):
        assert info[key] == os.path.join(dm.data_root, "containers", info["Id"], name) and os.path.isfile(info[key])
    assert dm.out("exec", "etcfiles", "cat", "/etc/hostname") == "etchost\n"
    assert "1.2.3.4\th" in dm.out("exec", "etcfiles", "cat", "/etc/hosts")
    dm.out("rm", "-f", "etcfiles")


def test_dockerds_headers_on_every_kind_of_answer(dm: Daemon) -> None:
    """Api-Version, Ostype, Docker-Experimental and Server on JSON, empty, plain, streamed and
    error answers alike (clients read Api-Version from any of them, the CLI from /_ping)."""
    api, base = _http(dm)
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "echo hi; sleep 60").strip()
    answers = {
        "ping": api.get(base + "/_ping"),
        "head ping": api.head(base + "/_ping"),
        "json": api.get(base + "/v1.44/containers/json"),
        "204": api.post(base + f"/v1.44/containers/{cid}/kill", params={"signal": "SIGCONT"}),
        "stream": api.get(base + f"/v1.44/containers/{cid}/logs", params={"stdout": 1}),
        "engine error": api.get(base + "/v1.44/containers/nope/json"),
        "no route": api.get(base + "/v1.44/nowhere"),
        "bad version": api.get(base + "/v1.99/version"),
    }
    for what, r in answers.items():
        h = r.headers
        assert (h.get("Api-Version"), h.get("Ostype"), h.get("Docker-Experimental")) == ("1.44", "linux", "false"), what
        assert h.get("Server", "").startswith("Docker/"), what
    assert [answers[k].status_code for k in ("204", "engine error", "no route", "bad version")] == [204, 404, 404, 400]
    dm.out("rm", "-f", cid)
