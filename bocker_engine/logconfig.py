"""Log driver configuration as dockerd checks it: which drivers, which options, which values.

Used twice: for the daemon's defaults (daemon.json `log-driver`/`log-opts`, `--log-driver`/`--log-opt`)
and for each container's LogConfig at create, after the daemon's defaults are merged in.
"""

from __future__ import annotations

import re
from typing import Any

from bocker_engine.errors import InvalidParameter

DEFAULT_DRIVER = "json-file"
# The drivers this engine writes. dockerd's others (syslog, journald, ...) are refused by name.
DRIVERS = ("json-file", "local", "none")
# Those `docker logs` can read (dockerd's LogReader drivers among ours).
READABLE = ("json-file", "local")

# Options every driver takes (dockerd's builtInLogOpts), checked before the driver's own ones.
_BUILTIN_OPTS = ("mode", "max-buffer-size")
_DRIVER_OPTS = {
    "json-file": ("max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"),
    "local": ("max-file", "max-size", "compress"),
}

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = "kmgtp"


class LogConfigError(ValueError):
    pass


def parse_size(text: str, binary: bool = False) -> int:
    """go-units' FromHumanSize (decimal: 10m = 10 000 000) or, with `binary`, RAMInBytes (10m = 10 MiB)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise LogConfigError(f"invalid size: '{text}'")
    base = 1024 if binary else 1000
    unit = m.group(2)
    mult = base ** (_UNITS.index(unit.lower()) + 1) if unit else 1
    return int(float(m.group(1)) * mult)


def parse_bool(text: str) -> bool:
    return _parse_bool("", text)


def _parse_bool(key: str, text: str) -> bool:
    # Go's strconv.ParseBool, with its error wording.
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise LogConfigError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise LogConfigError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def validate(driver: str, opts: dict[str, str]) -> None:
    """dockerd's logger.ValidateLogOpts plus the values its json-file driver checks when it starts."""
    if driver == "none":
        return
    mode = opts.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise LogConfigError(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in opts:
        if mode != "non-blocking":
            raise LogConfigError("logger: max-buffer-size option is only supported with 'mode=non-blocking'")
        try:
            parse_size(opts["max-buffer-size"], binary=True)
        except LogConfigError as e:
            raise LogConfigError(f"error parsing option max-buffer-size: {e}") from None
    if driver not in DRIVERS:
        raise LogConfigError(f"logger: no log driver named '{driver}' is registered")
    allowed = _DRIVER_OPTS.get(driver, ())
    for key in opts:
        if key not in allowed and key not in _BUILTIN_OPTS:
            if driver == "local":
                raise LogConfigError(f"unknown log opt '{key}' for log driver local")
            raise LogConfigError(f"unknown log opt '{key}' for {driver} log driver")
    if driver == "json-file":
        _json_file_values(opts)
    elif driver == "local":
        _local_values(opts)


def _local_values(opts: dict[str, str]) -> None:
    # dockerd checks these when the driver starts ("failed to initialize logging driver: ...");
    # here at create, with the same words, so that a start never fails on them.
    for key in ("max-size", "max-file", "compress"):
        if key not in opts:
            continue
        try:
            if key == "max-size":
                if parse_size(opts[key], binary=True) < 0:
                    raise LogConfigError("max-size cannot be less than 0")
            elif key == "max-file":
                if _parse_int(opts[key]) < 1:
                    raise LogConfigError("max-file cannot be less than 1")
            else:
                _parse_bool(key, opts[key])
        except LogConfigError as e:
            raise LogConfigError(f"invalid value for {key}: {opts[key]}: {e}") from None


def _json_file_values(opts: dict[str, str]) -> None:
    max_size = -1
    if "max-size" in opts:
        max_size = parse_size(opts["max-size"])
        if max_size <= 0:
            raise LogConfigError("max-size must be a positive number")
    max_file = 1
    if "max-file" in opts:
        max_file = _parse_int(opts["max-file"])
        if max_file < 1:
            raise LogConfigError("max-file cannot be less than 1")
    if "compress" in opts and _parse_bool("compress", opts["compress"]) and (max_file == 1 or max_size == -1):
        raise LogConfigError("compress cannot be true when max-file is less than 2 or max-size is not set")
    for key in ("labels-regex", "env-regex"):
        if key in opts:
            try:
                re.compile(opts[key])
            except re.error as e:
                raise LogConfigError(f"error parsing {key}: {e}") from None


def check_opts_types(value: Any) -> dict[str, str]:
    """daemon.json's `log-opts`: an object of strings (dockerd decodes it into map[string]string)."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LogConfigError("log-opts must be an object whose values are strings")
    return dict(value)


def parse_opt_flags(flags: list[str]) -> dict[str, str]:
    """`--log-opt key=value` (repeatable) into a map, as dockerd's flag does."""
    out: dict[str, str] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep or not key:
            raise LogConfigError(f"invalid key value pair format in log-opt: {flag!r}")
        out[key] = value
    return out


def merge(log_config: dict[str, Any] | None, default_driver: str, default_opts: dict[str, str]) -> dict[str, Any]:
    """A container's LogConfig with the daemon's defaults, as dockerd's mergeAndVerifyLogConfig: an
    empty type takes the default driver; with the default driver, default options fill the gaps."""
    lc = dict(log_config or {})
    driver = lc.get("Type") or default_driver
    opts = dict(lc.get("Config") or {})
    if driver == default_driver:
        for k, v in default_opts.items():
            opts.setdefault(k, v)
    return {"Type": driver, "Config": opts}


def with_defaults(host_config: dict[str, Any] | None, driver: str, opts: dict[str, str]) -> dict[str, Any]:
    """A create request's HostConfig with the daemon's log defaults merged in and its options
    checked; a driver this engine does not have is left for the host config's own check."""
    hc = dict(host_config or {})
    lc = merge(hc.get("LogConfig"), driver, opts)
    if lc["Type"] in DRIVERS:
        try:
            validate(lc["Type"], lc["Config"])
        except LogConfigError as e:
            raise InvalidParameter(str(e)) from None
    hc["LogConfig"] = lc
    return hc


def extra_attrs(opts: dict[str, str], labels: dict[str, str], env: list[str]) -> dict[str, str]:
    """dockerd's Info.ExtraAttributes: the container's labels and environment variables named by
    `labels`/`env` (comma-separated) or matching `labels-regex`/`env-regex`."""
    env_map = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            env_map[key] = value
    return {**_picked(opts, "labels", labels), **_picked(opts, "env", env_map)}


def _picked(opts: dict[str, str], kind: str, values: dict[str, str]) -> dict[str, str]:
    """The `values` named by the `kind` option, then those matching `kind`-regex."""
    out = {key: values[key] for key in filter(None, opts.get(kind, "").split(",")) if key in values}
    if opts.get(f"{kind}-regex"):
        rx = re.compile(opts[f"{kind}-regex"])
        out.update({k: v for k, v in values.items() if rx.search(k)})
    return out


_TAG_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def log_tag(template: str, fields: dict[str, str]) -> str:
    """dockerd's ParseLogTag for the fields of its logger.Info ({{.ID}}, {{.Name}}, {{.ImageName}},
    ...); an unknown field is left as written."""
    return _TAG_FIELD.sub(lambda m: fields.get(m.group(1), m.group(0)), template)


def tag_fields(
    container_id: str, name: str, image_id: str, image_name: str, hostname: str, command: str
) -> dict[str, str]:
    short = image_id.partition(":")[2] or image_id
    return {
        "ID": container_id[:12],
        "FullID": container_id,
        "Name": name.lstrip("/"),
        "ImageID": short[:12],
        "ImageFullID": image_id,
        "ImageName": image_name,
        "DaemonName": "docker",
        "Hostname": hostname,
        "Command": command,
    }
