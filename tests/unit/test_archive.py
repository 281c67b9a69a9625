"""docker save / load archive handling without a daemon: reading untrusted archives, layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from bocker_engine.engine import archive as ar
from bocker_engine.engine.images import Image
from bocker_engine.errors import InvalidParameter
from bocker_engine.registry.reference import parse
from tests.images import tar_of
from tests.unit import hostile_tars


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read(data: bytes, tmp_path: Path) -> ar.Archive:
    root = tmp_path / "scratch"
    root.mkdir(exist_ok=True)
    return ar.read_archive(io.BytesIO(data), str(root))


# -- reading untrusted archives -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/evil", "ok/../../../evil"])
def test_escaping_member_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid archive"):
        read(tar_of([("fine", tarfile.REGTYPE, b"x"), (name, tarfile.REGTYPE, b"evil")]), tmp_path)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_files_land_under_numbered_names_only(tmp_path: Path) -> None:
    a = read(
        tar_of(
            [
                ("dir/", tarfile.DIRTYPE, b""),
                ("dir/file", tarfile.REGTYPE, b"data"),
                ("./other", tarfile.REGTYPE, b"more"),
            ]
        ),
        tmp_path,
    )
    assert sorted(os.listdir(tmp_path / "scratch")) == ["2", "3"]
    assert a.open("dir/file").read() == b"data"
    assert a.open("other").read() == b"more"
    assert a.open("./dir//file").read() == b"data"


def test_links_resolve_inside_the_archive_only(tmp_path: Path) -> None:
    a = read(
        tar_of(
            [
                ("layers/one/layer.tar", tarfile.REGTYPE, b"L1"),
                ("layers/two/layer.tar", tarfile.SYMTYPE, b"../one/layer.tar"),
                ("abs", tarfile.SYMTYPE, b"/layers/one/layer.tar"),  # absolute = the archive's root
                ("hard", tarfile.LNKTYPE, b"layers/one/layer.tar"),
                ("out", tarfile.SYMTYPE, b"../../../../etc/passwd"),
                ("loop1", tarfile.SYMTYPE, b"loop2"),
                ("loop2", tarfile.SYMTYPE, b"loop1"),
                ("passwd", tarfile.SYMTYPE, b"/etc/passwd"),
            ]
        ),
        tmp_path,
    )
    for name in ("layers/two/layer.tar", "abs", "hard"):
        assert a.open(name).read() == b"L1"
    for name in ("out", "loop1", "passwd", "missing", "../layers/one/layer.tar"):
        assert a.resolve(name) is None
        with pytest.raises(InvalidParameter):
            a.open(name)
    assert not any(os.path.islink(tmp_path / "scratch" / n) for n in os.listdir(tmp_path / "scratch"))


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, lambda b: b])
def test_compressed_archives(tmp_path: Path, compress: Any) -> None:
    a = read(compress(tar_of([("manifest.json", tarfile.REGTYPE, b"[]")])), tmp_path)
    assert a.json("manifest.json") == []


def test_garbage_is_an_invalid_archive(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="invalid archive"):
        read(b"this is not a tar file at all" * 100, tmp_path)
    with pytest.raises(InvalidParameter, match="invalid archive"):
        read(tar_of([("big", tarfile.REGTYPE, b"x" * 10000)])[:3000], tmp_path)


# -- layouts ------------------------------------------------------------------------------------


def config_for(*layers: bytes, arch: str = "amd64") -> bytes:
    return json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}
    ).encode()


def test_docker_layout(tmp_path: Path) -> None:
    cfg = config_for(b"L1")
    a = read(
        tar_of(
            [
                ("abc/layer.tar", tarfile.REGTYPE, b"L1"),
                ("cfg.json", tarfile.REGTYPE, cfg),
                (
                    "manifest.json",
                    tarfile.REGTYPE,
                    json.dumps(
                        [
                            {
                                "Config": "cfg.json",
                                "RepoTags": ["busybox:1", "me/app:latest"],
                                "Layers": ["abc/layer.tar"],
                            }
                        ]
                    ).encode(),
                ),
            ]
        ),
        tmp_path,
    )
    [item] = ar.load_items(a)
    assert item.config == cfg and item.layers == ["abc/layer.tar"]
    assert [r.familiar() for r in item.tags] == ["busybox:1", "me/app:latest"]


@pytest.mark.parametrize("tag", ["busybox@sha256:" + "a" * 64, "UPPER:1", "../x:1"])
def test_docker_layout_refuses_bad_tags(tmp_path: Path, tag: str) -> None:
    a = read(
        tar_of(
            [
                ("cfg.json", tarfile.REGTYPE, config_for()),
                ("manifest.json", tarfile.REGTYPE, json.dumps([{"Config": "cfg.json", "RepoTags": [tag]}]).encode()),
            ]
        ),
        tmp_path,
    )
    with pytest.raises(InvalidParameter):
        ar.load_items(a)


def test_oci_layout_without_manifest_json(tmp_path: Path) -> None:
    layer = gzip.compress(b"L1")
    cfg = config_for(b"L1")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": ar.OCI_MANIFEST,
            "config": {"mediaType": ar.OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
            "layers": [{"mediaType": "x", "digest": sha(layer), "size": len(layer)}],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": ar.OCI_MANIFEST,
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {ar.IMAGE_NAME_ANNOTATION: "docker.io/library/oci:1"},
            },
            {
                "mediaType": ar.OCI_MANIFEST,
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {ar.REF_NAME_ANNOTATION: "latest"},
            },  # a bare ref name names no repository
        ],
    }
    a = read(
        tar_of(
            [
                ("oci-layout", tarfile.REGTYPE, ar.OCI_LAYOUT),
                ("index.json", tarfile.REGTYPE, json.dumps(index).encode()),
                (f"blobs/sha256/{sha(manifest)[7:]}", tarfile.REGTYPE, manifest),
                (f"blobs/sha256/{sha(cfg)[7:]}", tarfile.REGTYPE, cfg),
                (f"blobs/sha256/{sha(layer)[7:]}", tarfile.REGTYPE, layer),
            ]
        ),
        tmp_path,
    )
    [item] = ar.load_items(a)
    assert item.config == cfg and item.layers == [f"blobs/sha256/{sha(layer)[7:]}"]
    assert [r.familiar() for r in item.tags] == ["oci:1"]


def test_neither_layout(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="manifest.json"):
        ar.load_items(read(tar_of([("repositories", tarfile.REGTYPE, b"{}")]), tmp_path))


# -- writing ------------------------------------------------------------------------------------


class FakeLayers:
    def __init__(self, tars: dict[str, bytes]) -> None:
        self.tars = tars  # chain id -> layer tar
        self.calls: list[str] = []

    def tar(self, chain: str, out: BinaryIO) -> None:
        self.calls.append(chain)
        out.write(self.tars[chain])


def test_save_round_trip_dedups_shared_layers(tmp_path: Path) -> None:
    from bocker_engine.engine.layers import chain_ids

    l1, l2 = tar_of([("a", tarfile.REGTYPE, b"1")]), tar_of([("b", tarfile.REGTYPE, b"2")])
    c1, c2 = config_for(l1), config_for(l1, l2)
    chains = chain_ids([sha(l1), sha(l2)])
    layers = FakeLayers({chains[0]: l1, chains[1]: l2})
    base = Image(sha(c1), c1, json.loads(c1))
    child = Image(sha(c2), c2, json.loads(c2))
    items = [
        ar.SaveItem(base, [parse("busybox:1")]),
        ar.SaveItem(child, []),
        ar.SaveItem(base, [parse("127.0.0.1:5000/me/box:2")]),
    ]
    out = io.BytesIO()
    ar.write_archive(layers, items, out, lambda: os.open(str(tmp_path), os.O_TMPFILE | os.O_RDWR))  # type: ignore[arg-type]
    assert layers.calls == chains  # each layer rebuilt once
    data = out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        repositories = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
    assert names.count(f"blobs/sha256/{sha(l1)[7:]}") == 1
    assert repositories == {"busybox": {"1": sha(l1)[7:]}, "127.0.0.1:5000/me/box": {"2": sha(l1)[7:]}}
    names_in_index = [m.get("annotations", {}).get(ar.IMAGE_NAME_ANNOTATION) for m in index["manifests"]]
    assert names_in_index == ["docker.io/library/busybox:1", None, "127.0.0.1:5000/me/box:2"]
    loaded = ar.load_items(read(data, tmp_path))
    assert [(i.config, i.layers) for i in loaded] == [
        (c1, [f"blobs/sha256/{sha(l1)[7:]}"]),
        (c2, [f"blobs/sha256/{sha(l1)[7:]}", f"blobs/sha256/{sha(l2)[7:]}"]),
        (c1, [f"blobs/sha256/{sha(l1)[7:]}"]),
    ]
    assert [r.familiar() for r in loaded[0].tags] == ["busybox:1"]
    assert loaded[1].tags == []


# -- hostile tar headers: docker load keeps Go archive/tar's limits ----------------------------

# The backtracking PAX body is read only in a memory-limited child (below): Python's tarfile, which
# this reader replaced, spends all the memory it can get on it.
HOSTILE_HEADERS: dict[str, tuple[Callable[[], bytes], str]] = {
    "oversized-pax": (hostile_tars.oversized_pax, "extended header of"),
    "pax-run": (hostile_tars.pax_run, "in a row"),
    "longname-chain": (hostile_tars.longname_chain, "in a row"),
    "huge-record-length": (
        lambda: hostile_tars.with_file(hostile_tars.pax(b"9" * 5000 + b" path=x\n")),
        "malformed PAX",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_headers_are_refused(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE_HEADERS[case]
    with pytest.raises(InvalidParameter, match=f"invalid archive: .*{message}"):
        read(gzip.compress(make(), 1), tmp_path)
    assert os.listdir(tmp_path / "scratch") == []


def test_backtracking_pax_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """CVE-2024-6232's shape read in a child with 1 GiB of address space and a deadline: Python's
    tarfile (before 3.11.10) spends quadratic time and memory on it; ours refuses it at once."""
    data = tmp_path / "archive.tar"
    data.write_bytes(hostile_tars.with_file(hostile_tars.pax(hostile_tars.backtracking_pax_body())))
    (tmp_path / "scratch").mkdir()
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from bocker_engine.engine import archive\n"
        "from bocker_engine.errors import InvalidParameter\n"
        "try:\n"
        f"    archive.read_archive(open({str(data)!r}, 'rb'), {str(tmp_path / 'scratch')!r})\n"
        "except InvalidParameter as e:\n"
        "    print(e.message)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "malformed PAX" in r.stdout
