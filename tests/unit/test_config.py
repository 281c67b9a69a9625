"""Daemon flags and daemon.json."""

from __future__ import annotations

import json
import os

import pytest

from bocker_engine import config as config_mod


def test_config_flags_and_file(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "daemon.json")
    with open(path, "w") as f:
        json.dump({"data-root": "/x", "registry-mirrors": ["http://m"], "live-restore": True}, f)
    cfg = config_mod.load(["--config-file", path, "-H", "unix:///tmp/s.sock", "--storage-driver", "overlay"])
    assert cfg.data_root == "/x" and cfg.registry_mirrors == ["http://m"] and cfg.live_restore
    assert cfg.hosts == ["unix:///tmp/s.sock"] and cfg.storage_driver == "overlay2"
    with pytest.raises(config_mod.ConfigError, match="both as a flag and in the configuration file: data-root"):
        config_mod.load(["--config-file", path, "--data-root", "/y"])
    with open(path, "w") as f:
        json.dump({"bogus": 1}, f)
    with pytest.raises(config_mod.ConfigError, match="don't match any configuration option: bogus"):
        config_mod.load(["--config-file", path])
    with pytest.raises(config_mod.ConfigError):
        config_mod.load(["--config-file", os.path.join(str(tmp_path), "missing.json")])
