"""Bad input never breaks the engine or other clients: typed bodies, nesting, create racing prune."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import time
from typing import Any

import pytest

from tests.daemon import Daemon

DEADLINE = 120


def _post(dm: Daemon, path: str, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    api = dm.api()
    try:
        headers = {"Content-Type": "application/json", **(headers or {})}
        return api._post(api._url(path), data=body, headers=headers, **kw)
    finally:
        api.close()


def _get(dm: Daemon, path: str, **kw: Any) -> Any:
    api = dm.api()
    try:
        return api._get(api._url(path), **kw)
    finally:
        api.close()


def _assert_clients_still_work(dm: Daemon) -> None:
    dm.out("ps", "-a")
    for cid in dm.out("ps", "-aq").split():
        dm.out("inspect", cid)
    dm.client.containers.list(all=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"Image": [None]},
            "invalid JSON: json: cannot unmarshal array into Go struct field ContainerConfigWrapper.Image "
            "of type string",
        ),
        (
            {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": "lots"}},
            "invalid JSON: json: cannot unmarshal string into Go struct field HostConfig.HostConfig.Memory "
            "of type int64",
        ),
        (
            {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": 1}},
            "invalid JSON: json: cannot unmarshal number into Go struct field HostConfig.HostConfig.NetworkMode "
            "of type string",
        ),
        (
            {"Image": "busybox", "Cmd": ["true"], "Env": "A=1"},
            "invalid JSON: json: cannot unmarshal string into Go struct field ContainerConfigWrapper.Env "
            "of type []string",
        ),
    ],
)
def test_wrong_types_answer_400_and_store_nothing(dm: Daemon, body: Any, message: str) -> None:
    before = dm.out("ps", "-aq")
    r = _post(dm, "/containers/create", json.dumps(body).encode())
    assert (r.status_code, r.json()) == (400, {"message": message})
    assert r.headers["Content-Type"] == "application/json"
    assert dm.out("ps", "-aq") == before
    _assert_clients_still_work(dm)


def test_go_nulls_and_strslice_are_accepted(dm: Daemon) -> None:
    body = {"Image": "busybox", "Cmd": "true", "Env": None, "Labels": {"a": None}, "HostConfig": {"Memory": None}}
    r = _post(dm, "/containers/create", json.dumps(body).encode())
    assert r.status_code == 201, r.text
    info = dm.client.api.inspect_container(r.json()["Id"])
    assert info["Config"]["Cmd"] == ["true"]
    assert info["Config"]["Labels"] == {"a": ""}
    assert info["HostConfig"]["Memory"] == 0
    _assert_clients_still_work(dm)


def test_deep_nesting_answers_400(dm: Daemon) -> None:
    r = _post(dm, "/containers/create", b"[" * 100_000)
    assert (r.status_code, r.json()) == (400, {"message": "invalid JSON: exceeded max depth"})
    r = _post(dm, "/auth", b'{"username":' + b"[" * 5000)
    assert r.status_code == 400, r.text
    # In the query string (aiohttp limits the request line to 8 KiB).
    for path in ("/containers/json", "/images/json"):
        r = _get(dm, path, params={"filters": "[" * 2000})
        assert r.status_code == 400, r.text
        assert r.json()["message"].startswith("invalid filter")
    r = _post(dm, "/containers/prune", b"", params={"filters": '{"label":' + "[" * 2000})
    assert r.status_code == 400, r.text
    # In a header (X-Registry-Auth is base64 JSON).
    auth = base64.urlsafe_b64encode(b"[" * 4000).decode()
    r = _post(dm, "/images/nosuch/push", b"", headers={"X-Registry-Auth": auth})
    assert r.status_code == 400, r.text
    _assert_clients_still_work(dm)


def test_wrong_filter_types_answer_400(dm: Daemon) -> None:
    for filters in ('{"label":{"a":"yes"}}', '{"label":[1]}', '{"status":5}'):
        r = _get(dm, "/containers/json", params={"all": "1", "filters": filters})
        assert r.status_code == 400, (filters, r.text)


def test_out_of_range_query_integers_answer_400(dm: Daemon) -> None:
    cid = dm.out("create", "busybox", "true").strip()
    for path, params in (
        (f"/containers/{cid}/stop", {"t": "inf"}),
        (f"/containers/{cid}/stop", {"t": "nan"}),
        (f"/containers/{cid}/restart", {"t": str(1 << 70)}),
        ("/containers/json", {"limit": "1e400"}),
    ):
        r = _post(dm, path, b"", params=params) if path.endswith(("stop", "restart")) else _get(dm, path, params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["message"].startswith("invalid value for ")


def test_resize_out_of_range_answers_400(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-t", "busybox", "sleep", "1000").strip()
    for params in ({"h": "70000", "w": "80"}, {"h": "24", "w": "-1"}):
        r = _post(dm, f"/containers/{cid}/resize", b"", params=params)
        assert r.status_code == 400, (params, r.text)
    r = _post(dm, f"/containers/{cid}/resize", b"", params={"h": "30", "w": "100"})
    assert r.status_code == 200, r.text
    dm.out("rm", "-f", cid)


# ---- create racing prune ---------------------------------------------------------------------


def _on_disk(dm: Daemon) -> dict[str, set[str]]:
    """Container dirs, writable-layer records and the driver's directories that are not image layers."""
    image_root = os.path.join(dm.data_root, "image", dm.driver)
    layerdb = os.path.join(image_root, "layerdb")
    image_caches = set()
    for chain in os.listdir(os.path.join(layerdb, "sha256")):
        with open(os.path.join(layerdb, "sha256", chain, "cache-id")) as f:
            image_caches.add(f.read().strip())
    if dm.driver == "btrfs":
        driver_dirs = set(os.listdir(os.path.join(dm.data_root, "btrfs", "subvolumes")))
    else:
        driver_dirs = set(os.listdir(os.path.join(dm.data_root, "overlay2"))) - {"l"}
    mounts_dir = os.path.join(layerdb, "mounts")
    # An image's shared init layer (marked complete, on one of the image layers) is the image's.
    inits = os.path.join(layerdb, "inits")
    shared = {i for i in (os.listdir(inits) if os.path.isdir(inits) else []) if i.split("-")[0] in image_caches}
    return {
        "containers": set(os.listdir(os.path.join(dm.data_root, "containers"))),
        "mounts": set(os.listdir(mounts_dir)) if os.path.isdir(mounts_dir) else set(),
        "driver": driver_dirs - image_caches - shared,
    }


def _expected_driver_dirs(dm: Daemon, ids: set[str]) -> set[str]:
    out = set()
    for cid in ids:
        d = os.path.join(dm.data_root, "image", dm.driver, "layerdb", "mounts", cid)
        with open(os.path.join(d, "mount-id")) as f:
            out.add(f.read().strip())
    return out


def test_create_racing_prune_leaves_no_500_and_no_orphans(dm: Daemon) -> None:
    deadline = time.monotonic() + DEADLINE
    statuses: list[int] = []
    errors: list[str] = []

    def create(i: int) -> None:
        r = _post(dm, "/containers/create", json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode())
        statuses.append(r.status_code)
        if r.status_code >= 500:
            errors.append(r.text)

    def prune_loop(stop: list[bool]) -> int:
        n = 0
        while not stop[0] and time.monotonic() < deadline:
            r = _post(dm, "/containers/prune", b"")
            statuses.append(r.status_code)
            if r.status_code >= 500:
                errors.append(r.text)
            n += 1
        return n

    stop = [False]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        pruners = [pool.submit(prune_loop, stop) for _ in range(2)]
        creates = [pool.submit(create, i) for i in range(60)]
        for f in creates:
            f.result(timeout=max(1.0, deadline - time.monotonic()))
        stop[0] = True
        assert all(p.result(timeout=DEADLINE) > 0 for p in pruners)
    assert errors == []
    assert set(statuses) <= {200, 201}, statuses

    ids = set(dm.out("ps", "-aq", "--no-trunc").split())
    disk = _on_disk(dm)
    assert disk["containers"] == ids
    assert disk["mounts"] == ids
    assert disk["driver"] == _expected_driver_dirs(dm, ids)
    _assert_clients_still_work(dm)
    # And once everything is pruned, nothing is left at all.
    dm.out("container", "prune", "-f")
    assert _on_disk(dm) == {"containers": set(), "mounts": set(), "driver": set()}
