"""daemon.json keys of a long-running service, `bockerd --validate` and `--version`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bocker_engine import __version__
from bocker_engine import config as config_mod


def _write(tmp_path: object, content: object) -> str:
    path = os.path.join(str(tmp_path), "daemon.json")
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return path


def test_service_keys(tmp_path: object) -> None:
    path = _write(tmp_path, {"debug": True, "labels": ["env=prod"], "log-driver": "json-file",
                             "log-opts": {"max-size": "10m", "max-file": "3"}, "max-concurrent-downloads": 5})
    cfg = config_mod.load(["--config-file", path])
    assert cfg.debug and cfg.labels == ["env=prod"] and cfg.max_concurrent_downloads == 5
    assert cfg.log_driver == "json-file" and cfg.log_opts == {"max-size": "10m", "max-file": "3"}
    assert config_mod.python_log_level(cfg) == "DEBUG"
    assert cfg.argv == ["--config-file", path]  # kept for a reload
    flags = config_mod.load(["--config-file", _write(tmp_path, {}), "-D", "--log-opt", "max-size=1m",
                             "--log-driver", "none", "--label", "a=b"])
    assert flags.debug and flags.log_opts == {"max-size": "1m"} and flags.log_driver == "none"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"log-driver": "syslog-ng"}, "failed to set log opts: logger: no log driver named 'syslog-ng' is registered"),
        ({"log-opts": {"max-size": "-1"}}, "invalid size: '-1'"),
        ({"log-opts": {"max-file": 3}}, "log-opts must be an object whose values are strings"),
        ({"log-opts": {"colour": "red"}}, "unknown log opt 'colour' for json-file log driver"),
        ({"labels": ["novalue"]}, "bad attribute format: novalue"),
        ({"max-concurrent-downloads": -1}, "invalid max concurrent downloads: -1"),
        ({"max-concurrent-downloads": True}, "invalid value for max-concurrent-downloads"),
        ({"debug": "yes"}, "invalid value for debug"),
        ({"registry-mirrors": ["ftp://m"]}, "invalid mirror"),
        ({"log-level": "loud"}, "invalid logging level: loud"),
        ("{not json", "unable to configure the daemon with file"),
    ],
)
def test_refused(tmp_path: object, content: object, message: str) -> None:
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.load(["--config-file", _write(tmp_path, content)])
    assert message in str(e.value)


def _bockerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bocker_engine", *args], capture_output=True, text=True, timeout=60)


def test_validate_and_version(tmp_path: object) -> None:
    good = _write(tmp_path, {"debug": True, "log-opts": {"max-size": "10m", "max-file": "3"}})
    r = _bockerd("--validate", "--config-file", good)
    assert r.returncode == 0 and r.stderr.strip() == "configuration OK", r.stderr
    bad = _write(tmp_path, {"log-opts": {"max-file": "0"}, "bogus": 1})
    r = _bockerd("--validate", "--config-file", bad)
    assert r.returncode == 1
    assert r.stderr.strip() == "bockerd: the following directives don't match any configuration option: bogus"
    r = _bockerd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"bocker-engine version {__version__}"
