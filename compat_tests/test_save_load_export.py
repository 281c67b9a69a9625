"""docker save / load / export / import through the stock CLI and docker-py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

from tests.daemon import Daemon
from tests.images import busybox_rootfs_tar, tar_of


def make_image(dm: Daemon, name: str, images: list[str]) -> str:
    with tempfile.NamedTemporaryFile(suffix=".tar", dir="/var/tmp") as f:
        f.write(busybox_rootfs_tar({"marker.txt": uuid.uuid4().hex.encode()}))
        f.flush()
        dm.out("import", "--change", 'CMD ["sh"]', f.name, name)
    images.append(name)
    return name


def layer_count(dm: Daemon) -> int:
    return len(os.listdir(os.path.join(dm.data_root, "image", dm.driver, "layerdb", "sha256")))


def image_ids(dm: Daemon) -> set[str]:
    return set(dm.out("images", "-aq", "--no-trunc").split())


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def two_images(dm: Daemon, images: list[str]) -> tuple[str, str]:
    """`base` and `child`, which shares base's layer and adds one (loaded from an old-format archive)."""
    base, child = f"save-base-{dm.driver}:1", f"save-child-{dm.driver}:1"
    data, _, _ = _old_format_archive(base, child, uuid.uuid4().hex.encode())
    images += [base, child]
    loaded = dm.client.images.load(data)
    assert len(loaded) == 2
    return base, child


def test_save_load_two_images(dm: Daemon, images: list[str], tmp_path: Path) -> None:
    base, child = two_images(dm, images)
    marker = dm.out("run", "--rm", base, "cat", "/marker.txt")
    archive = tmp_path / "images.tar"
    dm.out("save", base, child, "-o", str(archive))
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        layout = json.load(tf.extractfile("oci-layout"))  # type: ignore[arg-type]
        repositories = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert sorted(m["RepoTags"][0] for m in manifest) == sorted([base, child])
    base_layers = next(m for m in manifest if m["RepoTags"] == [base])["Layers"]
    child_layers = next(m for m in manifest if m["RepoTags"] == [child])["Layers"]
    assert child_layers[0] == base_layers[0] and len(child_layers) == 2
    assert names.count(base_layers[0]) == 1  # shared layers are written once
    annotations = {m["annotations"]["io.containerd.image.name"]: m["annotations"] for m in index["manifests"]}
    assert annotations[f"docker.io/library/{base}"]["org.opencontainers.image.ref.name"] == "1"
    assert set(repositories) == {base.split(":")[0], child.split(":")[0]}

    before = layer_count(dm)
    dm.out("rmi", child, base)
    assert layer_count(dm) == before - 2
    r = dm.docker("load", "-i", str(archive))
    assert r.returncode == 0, r.stderr
    assert f"Loaded image: {base}" in r.stdout and f"Loaded image: {child}" in r.stdout
    assert layer_count(dm) == before
    assert dm.out("run", "--rm", child, "cat", "/marker.txt", "/child.txt") == marker + "child\n"


def test_save_gzip_load(dm: Daemon, images: list[str], tmp_path: Path) -> None:
    name = make_image(dm, f"save-gz-{dm.driver}:1", images)
    image_id = dm.out("image", "inspect", "-f", "{{.Id}}", name).strip()
    gz = tmp_path / "image.tar.gz"
    with open(gz, "wb") as out:
        save = subprocess.Popen(["docker", "save", name], env=dm.env, stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-c"], stdin=save.stdout, stdout=out, check=True)
        assert save.wait() == 0
    dm.out("rmi", name)
    r = dm.docker("load", "-i", str(gz))
    assert r.returncode == 0, r.stderr
    assert f"Loaded image: {name}" in r.stdout
    assert dm.out("image", "inspect", "-f", "{{.Id}}", name).strip() == image_id


def _old_format_archive(
    a: str = "old-format-a:1", b: str = "old-format-b:1", marker: bytes = b"old format\n"
) -> tuple[bytes, str, str]:
    """A `docker save` archive as Docker 1.10-24 wrote it, with a symlinked shared layer."""
    base_tar = busybox_rootfs_tar({"marker.txt": marker})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        top = io.BytesIO()
        with tarfile.open(fileobj=top, mode="w") as t2:
            ti = tarfile.TarInfo("child.txt")
            ti.size = 6
            t2.addfile(ti, io.BytesIO(b"child\n"))
        top_tar = top.getvalue()

        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        def link(name: str, target: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tf.addfile(ti)

        id1, id2, id3 = (hashlib.sha256(s.encode()).hexdigest() for s in ("one", "two", "three"))
        for v1 in (id1, id2, id3):
            ti = tarfile.TarInfo(v1)
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
            add(f"{v1}/VERSION", b"1.0")
            add(f"{v1}/json", json.dumps({"id": v1}).encode())
        add(f"{id1}/layer.tar", base_tar)
        link(f"{id2}/layer.tar", f"../{id1}/layer.tar")
        add(f"{id3}/layer.tar", top_tar)
        cfg1 = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [sha(base_tar)]},
            }
        ).encode()
        cfg2 = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [sha(base_tar), sha(top_tar)]},
            }
        ).encode()
        add(sha(cfg1)[7:] + ".json", cfg1)
        add(sha(cfg2)[7:] + ".json", cfg2)
        add(
            "manifest.json",
            json.dumps(
                [
                    {"Config": sha(cfg1)[7:] + ".json", "RepoTags": [a], "Layers": [f"{id1}/layer.tar"]},
                    {
                        "Config": sha(cfg2)[7:] + ".json",
                        "RepoTags": [b],
                        "Layers": [f"{id2}/layer.tar", f"{id3}/layer.tar"],
                    },
                ]
            ).encode(),
        )
        add("repositories", json.dumps({a.split(":")[0]: {"1": id1}, b.split(":")[0]: {"1": id3}}).encode())
    return buf.getvalue(), sha(cfg1), sha(cfg2)


def test_load_old_format_with_dockerpy(dm: Daemon, images: list[str]) -> None:
    data, id1, id2 = _old_format_archive()
    images += ["old-format-a:1", "old-format-b:1"]
    loaded = dm.client.images.load(data)
    assert sorted(i.id for i in loaded) == sorted([id1, id2])
    assert dm.out("run", "--rm", "old-format-b:1", "cat", "/marker.txt", "/child.txt") == "old format\nchild\n"


def test_dockerpy_save_load(dm: Daemon, images: list[str]) -> None:
    name = make_image(dm, f"py-save-{dm.driver}:1", images)
    img = dm.client.images.get(name)
    data = b"".join(img.save(named=True))
    dm.client.images.remove(name)
    loaded = dm.client.images.load(data)
    assert [i.id for i in loaded] == [img.id] and name in loaded[0].tags
    # By ID: untagged, and load says so.
    data = b"".join(img.save())
    resp = dm.api()._post(dm.api()._url("/images/load"), data=gzip.compress(data))
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert f"Loaded image ID: {img.id}" in resp.text


def test_hostile_archives_write_nothing_outside(dm: Daemon, tmp_path: Path) -> None:
    victim = Path(dm.base).parent / f"bocker-evil-{uuid.uuid4().hex[:8]}"
    evil_layer = tar_of([(f"../../../../../../../..{victim}-layer", tarfile.REGTYPE, b"x")])
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(evil_layer)]}}
    ).encode()
    cases = {
        "dotdot member": tar_of([(f"../../../../../../../..{victim}", tarfile.REGTYPE, b"x")]),
        "absolute member": tar_of([(str(victim), tarfile.REGTYPE, b"x")]),
        "manifest symlink out": tar_of([("manifest.json", tarfile.SYMTYPE, b"/etc/passwd")]),
        "layer with escapes": tar_of(
            [
                ("layer.tar", tarfile.REGTYPE, evil_layer),
                ("config.json", tarfile.REGTYPE, config),
                (
                    "manifest.json",
                    tarfile.REGTYPE,
                    json.dumps(
                        [{"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": ["layer.tar"]}]
                    ).encode(),
                ),
            ]
        ),
        "layer path climbs": tar_of(
            [
                (
                    "manifest.json",
                    tarfile.REGTYPE,
                    json.dumps(
                        [{"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": ["../../etc/passwd"]}]
                    ).encode(),
                ),
                ("config.json", tarfile.REGTYPE, config),
            ]
        ),
    }
    before_ids, before_layers = image_ids(dm), layer_count(dm)
    for what, data in cases.items():
        path = tmp_path / "hostile.tar"
        path.write_bytes(data)
        r = dm.docker("load", "-i", str(path))
        assert r.returncode != 0, what
        assert not victim.exists() and not Path(f"{victim}-layer").exists(), what
    assert image_ids(dm) == before_ids and layer_count(dm) == before_layers
    assert dm.docker("image", "inspect", "hostile:1").returncode != 0
    leftovers = os.listdir(os.path.join(dm.data_root, "image", dm.driver, "distribution", "tmp"))
    assert leftovers == []


def test_export_import_round_trip(dm: Daemon, images: list[str], tmp_path: Path) -> None:
    name = f"exported-{dm.driver}:1"
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "echo exported > /exported.txt; sleep 30").strip()
    try:
        rootfs = tmp_path / "rootfs.tar"
        dm.out("export", cid, "-o", str(rootfs))
        with tarfile.open(rootfs) as tf:
            members = set(tf.getnames())
        assert {"exported.txt", "bin/busybox", "etc/passwd"} <= members
        dm.out("import", str(rootfs), name)
        images.append(name)
        assert dm.out("run", "--rm", name, "cat", "/exported.txt") == "exported\n"
        data = b"".join(dm.client.containers.get(cid).export())
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            f = tf.extractfile("exported.txt")
            assert f is not None and f.read() == b"exported\n"
    finally:
        dm.docker("rm", "-f", cid)
    r = dm.docker("export", "no-such-container")
    assert r.returncode != 0 and "No such container" in r.stderr


def driver_entries(dm: Daemon) -> set[str]:
    sub = "subvolumes" if dm.driver == "btrfs" else ""
    return set(os.listdir(os.path.join(dm.data_root, dm.driver, sub)))


def test_load_of_hostile_tar_headers_fails_cleanly(dm: Daemon, tmp_path: Path) -> None:
    """Oversized and endless extended headers, in the archive itself or in a layer it carries:
    the load fails with dockerd-like limits, the daemon stays up, nothing is left behind."""
    from tests.unit import hostile_tars as ht

    def with_layer(layer: bytes) -> bytes:
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
        ).encode()
        manifest = json.dumps([{"Config": "config.json", "RepoTags": ["hostile:2"], "Layers": ["layer.tar"]}])
        return tar_of(
            [
                ("layer.tar", tarfile.REGTYPE, layer),
                ("config.json", tarfile.REGTYPE, config),
                ("manifest.json", tarfile.REGTYPE, manifest.encode()),
            ]
        )

    cases = {
        "archive: 64 MiB PAX header": (ht.oversized_pax(), "extended header of"),
        "archive: PAX headers in a row": (ht.pax_run(), "in a row"),
        "archive: GNU long-name chain": (ht.longname_chain(), "in a row"),
        "archive: backtracking PAX body": (ht.with_file(ht.pax(ht.backtracking_pax_body())), "malformed PAX"),
        "layer: PAX headers in a row": (with_layer(ht.pax_run()), "in a row"),
        "layer: 64 MiB PAX header": (with_layer(ht.oversized_pax()), "extended header of"),
    }
    before_ids, before_layers, before_dirs = image_ids(dm), layer_count(dm), driver_entries(dm)
    for what, (data, message) in cases.items():
        path = tmp_path / "hostile.tar.gz"
        path.write_bytes(gzip.compress(data, 1))
        r = dm.docker("load", "-i", str(path), timeout=120)
        assert r.returncode != 0, what
        assert message in r.stdout + r.stderr, (what, r.stdout, r.stderr)
        assert dm.out("version", "--format", "{{.Server.Version}}").strip(), what
    assert image_ids(dm) == before_ids and layer_count(dm) == before_layers
    assert driver_entries(dm) == before_dirs
    assert dm.docker("image", "inspect", "hostile:2").returncode != 0
    for scratch in ("distribution/tmp", "layerdb/tmp"):
        # The builder's own scratch root (layerdb/tmp/builds) may be there from earlier builds, empty.
        left = [e for e in os.listdir(os.path.join(dm.data_root, "image", dm.driver, scratch)) if e != "builds"]
        assert left == [], scratch
