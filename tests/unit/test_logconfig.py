"""Log driver options as dockerd checks them, and the daemon's defaults merged into a container's."""

from __future__ import annotations

import pytest

from bocker_engine import logconfig
from bocker_engine.errors import InvalidParameter


def test_sizes_as_go_units() -> None:
    assert logconfig.parse_size("10m") == 10_000_000
    assert logconfig.parse_size("10MB") == 10_000_000
    assert logconfig.parse_size("1.5k") == 1500
    assert logconfig.parse_size("100") == 100
    assert logconfig.parse_size("2m", binary=True) == 2 * 1024 * 1024
    with pytest.raises(logconfig.LogConfigError, match="invalid size: 'ten'"):
        logconfig.parse_size("ten")


@pytest.mark.parametrize(
    "driver, opts, message",
    [
        ("json-file", {"bogus": "1"}, "unknown log opt 'bogus' for json-file log driver"),
        ("json-file", {"max-size": "0"}, "max-size must be a positive number"),
        ("json-file", {"max-size": "x"}, "invalid size: 'x'"),
        ("json-file", {"max-file": "0"}, "max-file cannot be less than 1"),
        ("json-file", {"max-file": "three"}, 'strconv.Atoi: parsing "three": invalid syntax'),
        ("json-file", {"compress": "true", "max-size": "1m"}, "compress cannot be true when max-file is less than 2"),
        ("json-file", {"compress": "maybe"}, 'strconv.ParseBool: parsing "maybe": invalid syntax'),
        ("json-file", {"mode": "sometimes"}, "logger: logging mode not supported: sometimes"),
        ("json-file", {"max-buffer-size": "1m"}, "max-buffer-size option is only supported with 'mode=non-blocking'"),
        ("syslog-ng", {}, "logger: no log driver named 'syslog-ng' is registered"),
    ],
)
def test_refused(driver: str, opts: dict[str, str], message: str) -> None:
    with pytest.raises(logconfig.LogConfigError) as e:
        logconfig.validate(driver, opts)
    assert message in str(e.value)


def test_accepted() -> None:
    logconfig.validate("json-file", {"max-size": "10m", "max-file": "3", "compress": "true", "labels": "a,b",
                                     "env": "PATH", "tag": "{{.Name}}", "mode": "non-blocking",
                                     "max-buffer-size": "4m"})
    logconfig.validate("none", {"anything": "goes"})  # dockerd does not check none's options


def test_merge_like_dockerd() -> None:
    defaults = {"max-size": "10m", "max-file": "3"}
    # No driver: the daemon's driver and its options.
    assert logconfig.merge(None, "json-file", defaults) == {"Type": "json-file", "Config": defaults}
    # The default driver with options of its own: the defaults fill the gaps only.
    assert logconfig.merge({"Type": "json-file", "Config": {"max-size": "1m"}}, "json-file", defaults) == {
        "Type": "json-file",
        "Config": {"max-size": "1m", "max-file": "3"},
    }
    # Another driver: none of the default driver's options.
    assert logconfig.merge({"Type": "none", "Config": {}}, "json-file", defaults) == {"Type": "none", "Config": {}}
    assert logconfig.merge({"Type": ""}, "none", {}) == {"Type": "none", "Config": {}}


def test_with_defaults_refuses_bad_options_as_invalid_parameter() -> None:
    with pytest.raises(InvalidParameter, match="unknown log opt 'nope' for json-file log driver"):
        logconfig.with_defaults({"LogConfig": {"Type": "", "Config": {"nope": "1"}}}, "json-file", {})
    hc = logconfig.with_defaults({"Memory": 5}, "json-file", {"max-size": "1m"})
    assert hc == {"Memory": 5, "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}}
    # A driver we do not have is left for normalize_host_config's own answer.
    assert logconfig.with_defaults({"LogConfig": {"Type": "syslog"}}, "json-file", {})["LogConfig"]["Type"] == "syslog"


def test_opt_flags() -> None:
    assert logconfig.parse_opt_flags(["max-size=10m", "tag=a=b"]) == {"max-size": "10m", "tag": "a=b"}
    with pytest.raises(logconfig.LogConfigError):
        logconfig.parse_opt_flags(["max-size"])
