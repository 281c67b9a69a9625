"""Volumes and mounts through the stock docker CLI (issue 10)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, wait_until
from tests.images import busybox_rootfs_tar


@pytest.fixture
def vols(dm: Daemon) -> Iterator[list[str]]:
    """Volumes a test made: removed after its containers."""
    made: list[str] = []
    yield made
    dm.clean_containers()
    for name in made:
        dm.docker("volume", "rm", "-f", name)


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _image(dm: Daemon, images: list[str], tmp_path: Path, name: str, entries: list[tarfile.TarInfo],
           data: dict[str, bytes] | None = None, changes: tuple[str, ...] = ()) -> str:
    """busybox plus `entries` (with their owners and modes), imported as `name`."""
    path = tmp_path / f"{name.replace(':', '_')}.tar"
    path.write_bytes(busybox_rootfs_tar())
    with tarfile.open(path, "a") as tf:
        for ti in entries:
            body = (data or {}).get(ti.name, b"")
            ti.size = len(body) if ti.type == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(body) if ti.type == tarfile.REGTYPE else None)
    args = ["import"]
    for c in changes:
        args += ["-c", c]
    dm.out(*args, str(path), name)
    images.append(name)
    return name


def _ti(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, uid: int = 0, gid: int = 0,
        link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.linkname = kind, mode, uid, gid, link
    return ti


def test_volume_commands(dm: Daemon, vols: list[str]) -> None:
    name = _uniq("cli-vol")
    vols.append(name)
    assert dm.out("volume", "create", "--label", "team=db", "--label", "tier", name).strip() == name
    # Creating again hands back the same volume.
    assert dm.out("volume", "create", name).strip() == name
    v = json.loads(dm.out("volume", "inspect", name))[0]
    assert v["Name"] == name and v["Driver"] == "local" and v["Scope"] == "local"
    assert v["Labels"] == {"team": "db", "tier": ""} and v["Options"] == {}
    assert v["Mountpoint"] == os.path.join(dm.data_root, "volumes", name, "_data")
    assert os.path.isdir(v["Mountpoint"]) and v["CreatedAt"].endswith("Z")
    assert name in dm.out("volume", "ls", "-q").split()
    assert dm.out("volume", "ls", "-q", "-f", "label=team=db").split() == [name]
    assert dm.out("volume", "ls", "-q", "-f", "label=team=web").split() == []
    assert name in dm.out("volume", "ls", "-q", "-f", f"name={name[:10]}").split()
    assert name in dm.out("volume", "ls", "-q", "-f", "dangling=true", "-f", "driver=local").split()
    assert "local" in dm.info()["Plugins"]["Volume"]
    r = dm.docker("volume", "create", "x")
    assert "create x: volume name is too short, names should be at least two alphanumeric characters" in r.stderr
    r = dm.docker("volume", "create", "../etc")
    assert 'create ../etc: "../etc" includes invalid characters for a local volume name' in r.stderr
    r = dm.docker("volume", "create", "--opt", "bogus=1", _uniq("bad"))
    assert r.returncode == 1 and 'invalid option: "bogus"' in r.stderr
    r = dm.docker("volume", "create", "--driver", "nfsplugin", _uniq("bad"))
    assert 'plugin "nfsplugin" not found' in r.stderr
    r = dm.docker("volume", "inspect", "no-such-vol")
    assert r.returncode == 1 and "get no-such-vol: no such volume" in r.stderr
    assert dm.docker("volume", "rm", "no-such-vol").returncode == 1
    assert dm.docker("volume", "rm", "-f", "no-such-vol").returncode == 0
    assert dm.out("volume", "rm", name).strip() == name
    assert not os.path.exists(os.path.join(dm.data_root, "volumes", name))
    assert [e for e in os.listdir(os.path.join(dm.data_root, "volumes")) if e.startswith(".")] == []


def test_named_volume_persists_and_is_protected_while_used(dm: Daemon, vols: list[str]) -> None:
    name = _uniq("data")
    vols.append(name)
    # Created on first use.
    dm.out("run", "--rm", "-v", f"{name}:/var/lib/db", "busybox", "sh", "-c", "echo kept > /var/lib/db/f")
    assert dm.out("run", "--rm", "-v", f"{name}:/d", "busybox", "cat", "/d/f") == "kept\n"
    cid = dm.out("create", "-v", f"{name}:/d", "busybox", "true").strip()
    r = dm.docker("volume", "rm", name)
    assert r.returncode == 1
    assert f"remove {name}: volume is in use - [{cid}]" in r.stderr
    assert dm.out("volume", "ls", "-q", "-f", "dangling=false").split().count(name) == 1
    assert dm.out("volume", "prune", "-af").count(name) == 0
    assert dm.out("ps", "-aq", "--no-trunc", "-f", f"volume={name}").split() == [cid]
    # `rm -v` never removes a named volume.
    dm.out("rm", "-v", cid)
    assert dm.out("run", "--rm", "-v", f"{name}:/d", "busybox", "cat", "/d/f") == "kept\n"
    dm.out("volume", "rm", name)


def test_copy_up_keeps_owners_and_modes_and_nocopy(dm: Daemon, vols: list[str], images: list[str],
                                                   tmp_path: Path) -> None:
    img = _image(dm, images, tmp_path, f"copyup-{dm.driver}:1", [
        _ti("seed/", mode=0o750, uid=1000, gid=50),
        _ti("seed/conf", tarfile.REGTYPE, 0o640, 1000, 1000),
        _ti("seed/sub/", mode=0o700, uid=1, gid=1),
        _ti("seed/link", tarfile.SYMTYPE, 0o777, link="conf"),
    ], {"seed/conf": b"from image\n"}, ("VOLUME /seed", 'CMD ["sh"]'))
    name, nocopy = _uniq("cu"), _uniq("nc")
    vols += [name, nocopy]
    out = dm.out("run", "--rm", "-v", f"{name}:/seed", img, "sh", "-c",
                 "stat -c '%n %a %u %g' /seed /seed/conf /seed/sub; cat /seed/link")
    assert out == "/seed 750 1000 50\n/seed/conf 640 1000 1000\n/seed/sub 700 1 1\nfrom image\n"
    # Not empty any more: the next container's image content is not copied again.
    dm.out("run", "--rm", "-v", f"{name}:/seed", img, "sh", "-c", "rm /seed/conf; echo mine > /seed/own")
    assert dm.out("run", "--rm", "-v", f"{name}:/seed", img, "ls", "/seed").split() == ["link", "own", "sub"]
    assert dm.out("run", "--rm", "-v", f"{nocopy}:/seed:nocopy", img, "ls", "-A", "/seed") == ""
    # The image's VOLUME: an anonymous volume, filled from the image, removed with `rm -v`.
    cid = dm.out("create", img).strip()
    mounts = json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", cid))
    assert len(mounts) == 1
    anon = mounts[0]
    assert anon["Type"] == "volume" and anon["Destination"] == "/seed" and anon["Driver"] == "local"
    assert len(anon["Name"]) == 64 and anon["RW"] is True and anon["Mode"] == ""
    assert os.listdir(anon["Source"]) and Path(anon["Source"], "conf").read_text() == "from image\n"
    labels = json.loads(dm.out("volume", "inspect", "-f", "{{json .Labels}}", anon["Name"]))
    assert labels == {"com.docker.volume.anonymous": ""}
    assert json.loads(dm.out("inspect", "-f", "{{json .Config.Volumes}}", cid)) == {"/seed": {}}
    dm.out("rm", "-v", cid)
    assert dm.docker("volume", "inspect", anon["Name"]).returncode == 1


def test_rm_v_anonymous_and_prune(dm: Daemon, vols: list[str]) -> None:
    named = _uniq("keep")
    vols.append(named)
    dm.out("volume", "create", named)
    a = dm.out("create", "-v", "/anon", "-v", f"{named}:/n", "busybox", "true").strip()
    b = dm.out("create", "-v", "/anon", "busybox", "true").strip()
    anon_a = next(m["Name"] for m in json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", a))
                  if m["Destination"] == "/anon")
    anon_b = json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", b))[0]["Name"]
    vols += [anon_a, anon_b]
    dm.out("rm", "-v", a)
    assert dm.docker("volume", "inspect", anon_a).returncode == 1
    assert dm.docker("volume", "inspect", named).returncode == 0
    dm.out("rm", b)  # without -v the anonymous volume stays, unused
    assert anon_b in dm.out("volume", "ls", "-q", "-f", "dangling=true").split()
    in_use = dm.out("create", "-v", "/busy", "busybox", "true").strip()
    busy = json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", in_use))[0]["Name"]
    vols.append(busy)
    pruned = dm.out("volume", "prune", "-f")
    assert anon_b in pruned and named not in pruned and busy not in pruned
    assert dm.docker("volume", "inspect", named).returncode == 0
    # `-a` (all=true) takes unused named volumes too, never a used one.
    pruned = dm.out("volume", "prune", "-af", "--filter", f"label!=nothing-{named}")
    assert named in pruned and busy not in pruned
    dm.out("rm", "-v", in_use)
    assert dm.docker("volume", "inspect", busy).returncode == 1


def test_volumes_from(dm: Daemon, vols: list[str], tmp_path: Path) -> None:
    named = _uniq("shared")
    vols.append(named)
    host = tmp_path / "hostdir"
    host.mkdir()
    dvc = dm.out("create", "--name", _uniq("dvc"), "-v", "/shared", "-v", f"{named}:/named",
                 "-v", f"{host}:/host", "busybox", "true").strip()
    anon = next(m["Name"] for m in json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", dvc))
                if m["Destination"] == "/shared")
    vols.append(anon)
    dm.out("run", "--rm", "--volumes-from", dvc, "busybox", "sh", "-c",
           "echo a > /shared/a; echo n > /named/n; echo h > /host/h")
    assert (host / "h").read_text() == "h\n"
    r = dm.docker("run", "--rm", "--volumes-from", f"{dvc}:ro", "busybox", "sh", "-c",
                  "cat /shared/a /named/n; touch /shared/x")
    assert r.stdout == "a\nn\n" and "Read-only file system" in r.stderr
    user = dm.out("create", "--volumes-from", dvc, "busybox", "true").strip()
    mounts = {m["Destination"]: m for m in json.loads(dm.out("inspect", "-f", "{{json .Mounts}}", user))}
    assert set(mounts) == {"/shared", "/named", "/host"}
    assert mounts["/shared"]["Name"] == anon and mounts["/host"]["Type"] == "bind"
    # Still used through `user`: `rm -v dvc` keeps the anonymous volume.
    dm.out("rm", "-v", dvc)
    assert dm.docker("volume", "inspect", anon).returncode == 0
    r = dm.docker("run", "--rm", "--volumes-from", "no-such-ctr", "busybox", "true")
    assert r.returncode == 125 and "No such container: no-such-ctr" in r.stderr
    r = dm.docker("run", "--rm", "--volumes-from", f"{user}:rslave", "busybox", "true")
    assert r.returncode == 125 and "invalid mode: rslave" in r.stderr


def test_mount_flag_binds_tmpfs_and_read_only(dm: Daemon, vols: list[str], tmp_path: Path) -> None:
    name = _uniq("mnt")
    vols.append(name)
    src = tmp_path / "src"
    src.mkdir()
    (src / "in.txt").write_text("host\n")
    out = dm.out(
        "run", "--rm", "--read-only",
        "--mount", f"type=volume,src={name},dst=/v",
        "--mount", f"type=bind,src={src},dst=/b,readonly",
        "--mount", "type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
        "--tmpfs", "/run:rw,size=32m",
        "busybox", "sh", "-c",
        "echo v > /v/f && cat /b/in.txt && df -k /t /run | tail -2 | awk '{print $2}' && stat -c %a /t "
        "&& touch /t/ok /run/ok && ! touch /b/no 2>/dev/null && ! touch /rootfs-no 2>/dev/null && echo done",
    )
    assert out == "host\n65536\n32768\n1770\ndone\n"
    assert not (src / "no").exists()
    r = dm.docker("run", "--rm", "--mount", f"type=volume,src={name},dst=/v,readonly", "busybox", "touch", "/v/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    nc = _uniq("nocopy")
    vols.append(nc)
    assert dm.out("run", "--rm", "--mount", f"type=volume,src={nc},dst=/etc,volume-nocopy", "busybox",
                  "ls", "-A", "/etc").split() == ["hostname", "hosts", "resolv.conf"]
    missing = tmp_path / "missing"
    r = dm.docker("run", "--rm", "--mount", f"type=bind,src={missing},dst=/x", "busybox", "true")
    assert r.returncode == 125
    assert f'invalid mount config for type "bind": bind source path does not exist: {missing}' in r.stderr
    # -v creates a missing host directory, as dockerd does.
    dm.out("run", "--rm", "-v", f"{missing}:/x:z", "busybox", "touch", "/x/made")
    assert (missing / "made").exists()
    r = dm.docker("run", "--rm", "-v", f"{src}:/a", "-v", f"{name}:/a", "busybox", "true")
    assert r.returncode == 125 and "Duplicate mount point: /a" in r.stderr


def test_local_driver_tmpfs_volume(dm: Daemon, vols: list[str]) -> None:
    name = _uniq("tmpvol")
    vols.append(name)
    dm.out("volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
           "--opt", "o=size=100m", name)
    v = json.loads(dm.out("volume", "inspect", name))[0]
    assert v["Options"] == {"device": "tmpfs", "o": "size=100m", "type": "tmpfs"}
    mountpoint = v["Mountpoint"]

    def mounted() -> bool:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == mountpoint for line in f)

    assert not mounted()
    cid = dm.out("run", "-d", "-v", f"{name}:/t", "busybox", "sh", "-c",
                 "df -k /t | tail -1 | awk '{print $2}'; echo x > /t/f; sleep 60").strip()
    dm.wait_log(cid, "102400")
    assert mounted()
    dm.out("rm", "-f", cid)
    wait_until(lambda: not mounted(), what="tmpfs volume unmounted")


def test_inspect_mounts_and_host_config(dm: Daemon, vols: list[str], tmp_path: Path) -> None:
    name = _uniq("insp")
    vols.append(name)
    cid = dm.out("create", "-v", f"{name}:/data", "-v", f"{tmp_path}:/h:ro,rslave",
                 "--mount", "type=tmpfs,dst=/t", "busybox", "true").strip()
    d = json.loads(dm.out("inspect", cid))[0]
    mounts = {m["Destination"]: m for m in d["Mounts"]}
    assert mounts["/data"] == {
        "Type": "volume", "Name": name, "Source": os.path.join(dm.data_root, "volumes", name, "_data"),
        "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": "",
    }
    assert mounts["/h"] == {"Type": "bind", "Source": str(tmp_path), "Destination": "/h", "Mode": "ro,rslave",
                            "RW": False, "Propagation": "rslave"}
    assert mounts["/t"] == {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
                            "Propagation": ""}
    # The CLI collects -v values in a Go map: their order in Binds is random, as with dockerd.
    assert sorted(d["HostConfig"]["Binds"]) == sorted([f"{name}:/data", f"{tmp_path}:/h:ro,rslave"])
    assert d["HostConfig"]["Mounts"] == [{"Type": "tmpfs", "Target": "/t"}]
    ps = json.loads(dm.out("ps", "-a", "--no-trunc", "-f", f"id={cid}", "--format", "{{json .}}"))
    assert name in ps["Mounts"]


def test_bind_propagation_rslave_sees_host_mounts(dm: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "prop"
    (src / "sub").mkdir(parents=True)
    private = tmp_path / "private"
    private.mkdir()
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    if "shared:" not in next((ln for ln in mountinfo if ln.split()[4] == "/"), ""):
        # dockerd refuses slave propagation from a source that cannot propagate (here / is private).
        r = dm.docker("run", "--rm", "-v", f"{private}:/p:rslave", "busybox", "true")
        assert r.returncode != 0 and "is not a shared or slave mount" in r.stderr
    # A shared source: what the host mounts under it after the start shows inside.
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        cid = dm.out("run", "-d", "--mount", f"type=bind,src={src},dst=/s,bind-propagation=rslave", "busybox",
                     "sh", "-c", "while [ ! -e /s/sub/x ]; do sleep 0.1; done; echo seen; sleep 60").strip()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
        try:
            (src / "sub" / "x").write_text("x")
            dm.wait_log(cid, "seen")
        finally:
            dm.docker("rm", "-f", cid)
            subprocess.run(["umount", str(src / "sub")], check=True)
    finally:
        subprocess.run(["umount", "-l", str(src)], check=True)


def test_hostile_mount_targets_stay_inside(dm: Daemon, vols: list[str], images: list[str], tmp_path: Path) -> None:
    """Symlinks in the image are resolved inside the container's root: a target through
    `/evil -> /` lands in the container's /, and copy-up through `/etcl -> /etc` reads the
    image's /etc, never the host's."""
    img = _image(dm, images, tmp_path, f"hostile-mounts-{dm.driver}:1", [
        _ti("evil", tarfile.SYMTYPE, 0o777, link="/"),
        _ti("up", tarfile.SYMTYPE, 0o777, link="../../../../../../../.."),
        _ti("etcl", tarfile.SYMTYPE, 0o777, link="/etc"),
    ], changes=('CMD ["sh"]',))
    marker = f"bocker-hostile-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "m").write_text("inside\n")
    for target in (f"/evil/{marker}", f"/up/tmp/{marker}"):
        out = dm.out("run", "--rm", "-v", f"{src}:{target}", img, "cat", f"/{marker}/m" if "evil" in target
                     else f"/tmp/{marker}/m")
        assert out == "inside\n"
        assert not os.path.exists(f"/{marker}") and not os.path.exists(f"/tmp/{marker}")
    name = _uniq("etc")
    vols.append(name)
    dm.out("run", "--rm", "-v", f"{name}:/etcl", img, "true")
    data = os.path.join(dm.data_root, "volumes", name, "_data")
    assert "app:x:1000" in Path(data, "passwd").read_text()
    assert not os.path.exists(os.path.join(data, "os-release"))


def test_dockerpy_volumes(dm: Daemon, vols: list[str], tmp_path: Path) -> None:
    import docker

    client = dm.client
    name = _uniq("pyvol")
    vols.append(name)
    v = client.volumes.create(name, driver="local", labels={"py": "1"})
    assert v.name == name and v.attrs["Labels"] == {"py": "1"}
    assert client.volumes.get(name).attrs["Mountpoint"].endswith(f"/volumes/{name}/_data")
    assert [x.name for x in client.volumes.list(filters={"label": "py=1"})] == [name]
    before = {x.name for x in client.volumes.list()}
    # docker-py sends Binds and Config.Volumes for the same target: no extra anonymous volume.
    out = client.containers.run("busybox", ["sh", "-c", "echo py > /d/f; cat /d/f"],
                                volumes={name: {"bind": "/d", "mode": "rw"}}, remove=True)
    assert out == b"py\n"
    assert {x.name for x in client.volumes.list()} == before
    (tmp_path / "h").write_text("bound\n")
    out = client.containers.run(
        "busybox", ["sh", "-c", "cat /h/h /v/f; df -k /t | tail -1 | awk '{print $2}'"], remove=True,
        volumes=[f"{tmp_path}:/h:ro"],
        mounts=[docker.types.Mount("/v", name, type="volume", read_only=True),
                docker.types.Mount("/t", None, type="tmpfs", tmpfs_size=8 << 20)],
    )
    assert out == b"bound\npy\n8192\n"
    c = client.containers.create("busybox", "true", volumes={name: {"bind": "/d", "mode": "ro"}})
    with pytest.raises(docker.errors.APIError) as e:
        client.volumes.get(name).remove()
    assert e.value.status_code == 409 and "volume is in use" in str(e.value)
    c.remove(v=True)
    assert name in (client.volumes.prune(filters={"all": "true", "label": "py=1"})["VolumesDeleted"] or [])
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)
