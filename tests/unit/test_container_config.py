"""Merging an image config into a container config."""

from __future__ import annotations

import pytest

from bocker_engine.engine import container_config as cc
from bocker_engine.errors import InvalidParameter


def test_container_config_merge() -> None:
    image = {"Env": ["PATH=/bin", "A=img"], "Cmd": ["sh"], "WorkingDir": "/w", "Labels": {"l": "img"},
             "StopSignal": "SIGINT"}
    cfg = cc.normalize_config({"Env": ["A=user"], "Labels": {"m": "u"}}, image, "img", "c" * 64)
    assert cfg["Env"] == ["A=user", "PATH=/bin"]
    assert cfg["Cmd"] == ["sh"] and cfg["WorkingDir"] == "/w"
    assert cfg["Labels"] == {"l": "img", "m": "u"}
    assert cfg["Hostname"] == "c" * 12 and cfg["StopSignal"] == "SIGINT"
    cfg = cc.normalize_config({"Entrypoint": ["echo"]}, image, "img", "c" * 64)
    assert cfg["Entrypoint"] == ["echo"] and cfg["Cmd"] is None
    with pytest.raises(InvalidParameter, match="No command specified"):
        cc.normalize_config({}, {}, "img", "c" * 64)
    with pytest.raises(InvalidParameter, match="working directory"):
        cc.normalize_config({"Cmd": ["x"], "WorkingDir": "rel"}, {}, "img", "c" * 64)
    hc = cc.normalize_host_config({"LogConfig": {"Type": "", "Config": {}}, "NetworkMode": "default",
                                   "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}})
    assert hc["LogConfig"]["Type"] == "json-file" and hc["NetworkMode"] == "bridge"
    assert hc["RestartPolicy"]["Name"] == "no"
    with pytest.raises(InvalidParameter):
        cc.normalize_host_config({"AutoRemove": True, "RestartPolicy": {"Name": "always"}})
    assert "CAP_NET_ADMIN" in cc.capabilities({"CapAdd": ["NET_ADMIN"]})
    assert "CAP_CHOWN" not in cc.capabilities({"CapDrop": ["chown"]})
    assert cc.capabilities({"CapDrop": ["ALL"]}) == []
    with pytest.raises(InvalidParameter):
        cc.capabilities({"CapAdd": ["NOPE"]})
