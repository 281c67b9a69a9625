"""Mount parsing and validation as dockerd does it (moby volume/mounts/linux_parser.go)."""

from __future__ import annotations

import pytest

from bocker_engine.engine import mounts as mnt
from bocker_engine.engine import volumes as vol
from bocker_engine.errors import InvalidParameter


def test_modes() -> None:
    assert mnt.valid_mode("") and mnt.valid_mode("ro") and mnt.valid_mode("ro,Z,rslave,nocopy")
    assert not mnt.valid_mode("ro,rw") and not mnt.valid_mode("z,Z") and not mnt.valid_mode("bogus")
    assert mnt.read_write("") and mnt.read_write("rw,z") and not mnt.read_write("ro")


def test_parse_raw_kinds() -> None:
    b = mnt.parse_raw("/h//x/:/c/:ro")
    assert (b.type, b.source, b.destination, b.rw, b.mode) == ("bind", "/h/x", "/c", False, "ro")
    assert b.propagation == "rprivate"
    v = mnt.parse_raw("data:/d")
    assert (v.type, v.name, v.destination, v.rw, v.copy_data) == ("volume", "data", "/d", True, True)
    a = mnt.parse_raw("/anon")
    assert a.type == "volume" and a.name == "" and a.anonymous
    assert not mnt.parse_raw("data:/d:nocopy").copy_data
    assert mnt.parse_raw("/h:/c:rslave").propagation == "rslave"
    assert mnt.parse_raw("data:/d", "local").driver == "local"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "invalid volume specification: ''"),
        ("/foo:ro", "invalid volume specification: '/foo:ro'"),
        ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
        ("/h:/c:bogus", "invalid mode: bogus"),
        ("/h:/", "invalid volume specification: '/h:/': invalid mount config for type \"bind\": "
                 "invalid specification: destination can't be '/'"),
        ("/h:rel", "invalid volume specification: '/h:rel': invalid mount config for type \"bind\": "
                   "invalid mount path: 'rel' mount path must be absolute"),
        ("/h:/c:nocopy", "invalid mount config for type \"bind\": field VolumeOptions must not be specified"),
    ],
)
def test_parse_raw_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        mnt.parse_raw(raw)
    assert message in e.value.message


def test_mount_spec_validation(tmp_path: object) -> None:
    def err(cfg: dict[str, object]) -> str:
        with pytest.raises(InvalidParameter) as e:
            mnt.validate_spec(cfg)
        return e.value.message

    assert err({"Type": "bind", "Source": "/nonexistent-x", "Target": "/x"}) == (
        'invalid mount config for type "bind": bind source path does not exist: /nonexistent-x'
    )
    assert err({"Type": "bind", "Target": "/x"}) == (
        'invalid mount config for type "bind": field Source must not be empty'
    )
    assert err({"Type": "volume", "Source": "v"}) == (
        'invalid mount config for type "volume": field Target must not be empty'
    )
    assert err({"Type": "volume", "Target": "/x", "ReadOnly": True}) == (
        'invalid mount config for type "volume": must not set ReadOnly mode when using anonymous volumes'
    )
    assert err({"Type": "tmpfs", "Source": "x", "Target": "/x"}) == (
        'invalid mount config for type "tmpfs": field Source must not be specified'
    )
    assert err({"Type": "nfs", "Target": "/x"}) == 'invalid mount config for type "nfs": mount type unknown'
    assert err({"Type": "bind", "Source": "/", "Target": "/x", "BindOptions": {"Propagation": "up"}}) == (
        'invalid mount config for type "bind": invalid propagation mode: up'
    )
    mp = mnt.parse_spec({"Type": "bind", "Source": "/", "Target": "/x", "ReadOnly": True})
    assert mp.skip_create is False and not mp.rw and mp.propagation == "rprivate"


def test_volumes_from() -> None:
    assert mnt.parse_volumes_from("dvc") == ("dvc", "rw")
    assert mnt.parse_volumes_from("dvc:ro") == ("dvc", "ro")
    for bad in ("dvc:rslave", "dvc:nocopy", "dvc:bogus"):
        with pytest.raises(InvalidParameter, match="invalid mode"):
            mnt.parse_volumes_from(bad)


def test_tmpfs_options() -> None:
    assert mnt.tmpfs_options({"SizeBytes": 64 << 20, "Mode": 0o1770}, False) == "mode=1770,size=64m"
    assert mnt.tmpfs_options({"SizeBytes": 1000}, True) == "ro,size=1000"
    assert mnt.merge_tmpfs_options("rw,size=64m") == "noexec,nosuid,nodev,size=64m"
    assert mnt.merge_tmpfs_options("exec,size=1g,size=2g") == "nosuid,nodev,size=2g"
    assert mnt.merge_tmpfs_options("ro,mode=1777,rprivate") == "noexec,nosuid,nodev,ro,mode=1777"


def test_runtime_mounts_order(tmp_path: object) -> None:
    mps = {
        "/a/b": mnt.MountPoint("volume", "/a/b", name="v2", source="/vols/v2"),
        "/a": mnt.MountPoint("volume", "/a", name="v1", source="/vols/v1", rw=False),
    }
    out = mnt.runtime_mounts(mps, {"/a/b/c": "size=1m"}, {"v1": "/mounted/v1"})
    assert [(m.kind, m.target, m.source, m.readonly) for m in out] == [
        ("bind", "/a", "/mounted/v1", True),
        ("bind", "/a/b", "/vols/v2", False),
        ("tmpfs", "/a/b/c", "tmpfs", False),
    ]


def test_volume_names_and_options() -> None:
    for name in ("ab", "a.b-c_d", "0x"):
        vol.validate_name(name)
    with pytest.raises(InvalidParameter, match="too short"):
        vol.validate_name("a")
    with pytest.raises(InvalidParameter, match="includes invalid characters"):
        vol.validate_name("../x")
    with pytest.raises(InvalidParameter, match='invalid option: "bogus"'):
        vol.validate_opts("v", {"bogus": "1"})
    with pytest.raises(InvalidParameter, match='missing required option: "device"'):
        vol.validate_opts("v", {"type": "tmpfs"})
    assert vol.mount_options("size=100m,ro,uid=1000,nosuid") == (
        vol.linux.MS_RDONLY | vol.linux.MS_NOSUID,
        "size=100m,uid=1000",
    )
    assert vol.mount_options("bind")[0] == vol.linux.MS_BIND
