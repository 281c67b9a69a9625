"""bockerd's flags for TCP listeners: dockerd 27+'s rule on plain TCP beyond loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bocker_engine import config as config_mod


def load(tmp_path: Path, *argv: str) -> config_mod.Config:
    cfg_file = tmp_path / "daemon.json"
    if not cfg_file.exists():
        cfg_file.write_text("{}")
    return config_mod.load([*argv, "--config-file", str(cfg_file)])


@pytest.mark.parametrize(
    "host", ["tcp://0.0.0.0:2375", "tcp://:2375", "0.0.0.0:2375", "tcp://[::]:2375", "tcp://10.1.2.3:2375"]
)
def test_plain_tcp_beyond_loopback_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(config_mod.ConfigError, match=r"without TLS.*--tls=false"):
        load(tmp_path, "-H", host)


@pytest.mark.parametrize(
    "host", ["tcp://127.0.0.1:2375", "tcp://127.9.9.9:2375", "tcp://[::1]:2375", "tcp://localhost:2375"]
)
def test_plain_tcp_on_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    cfg = load(tmp_path, "-H", host)
    assert cfg.tls is None


@pytest.mark.parametrize(
    ("flags", "tls", "verify"),
    [
        (["--tls=false"], False, None),  # the explicit opt-out
        (["--tls"], True, None),
        (["--tls=true"], True, None),
        (["--tlsverify"], True, True),
        (["--tlsverify=false"], True, False),  # like dockerd: --tlsverify at all turns TLS on
        (["--tls=false", "--tlsverify"], True, True),
    ],
)
def test_tls_flags_allow_tcp(tmp_path: Path, flags: list[str], tls: bool, verify: bool | None) -> None:
    cfg = load(tmp_path, "-H", "tcp://0.0.0.0:2375", *flags)
    assert (cfg.tls, cfg.tlsverify) == (tls, verify)


def test_tls_false_from_daemon_json(tmp_path: Path) -> None:
    (tmp_path / "daemon.json").write_text('{"tls": false, "hosts": ["tcp://0.0.0.0:2375"]}')
    assert load(tmp_path).tls is False
    (tmp_path / "daemon.json").write_text('{"hosts": ["tcp://0.0.0.0:2375"]}')
    with pytest.raises(config_mod.ConfigError, match="without TLS"):
        load(tmp_path)


def test_bad_boolean(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        load(tmp_path, "--tls=maybe")
