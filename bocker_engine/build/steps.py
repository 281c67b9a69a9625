"""The instructions that only change the image config, as pure functions: (config, command,
variables) -> the history comment dockerd writes. The builder commits the result."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from bocker_engine.build.parser import Command
from bocker_engine.build.shell import expand, expand_words
from bocker_engine.errors import InvalidParameter

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA = {
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def go_quote_list(items: list[str]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def parse_duration(value: str, flag: str) -> int:
    """A Go duration ("30s", "1m30s", "100ms") in nanoseconds."""
    if value in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value) or pos == 0:
        raise InvalidParameter(f'time: invalid duration "{value}"')
    if total < 0:
        raise InvalidParameter(f"Interval {flag} cannot be less than 0")
    return int(total)


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    s, rem = divmod(ns, 1_000_000_000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = f"{h}h" if h else ""
    if h or m:
        out += f"{m}m"
    frac = f".{rem:09d}".rstrip("0") if rem else ""
    return out + f"{s}{frac.rstrip('.')}s"


def shell_of(config: Mapping[str, Any]) -> list[str]:
    return list(config.get("Shell") or DEFAULT_SHELL)


def _pairs(cmd: Command, env: Mapping[str, str], escape: str) -> list[tuple[str, str]]:
    args = list(cmd.args)
    if len(args) % 2:
        raise InvalidParameter(f"{cmd.name} requires at least one argument")
    return [(expand(args[i], env, escape), expand(args[i + 1], env, escape)) for i in range(0, len(args), 2)]


def _words(cmd: Command, env: Mapping[str, str], escape: str) -> list[str]:
    if cmd.json:
        return list(cmd.args)
    out: list[str] = []
    for a in cmd.args:
        out.extend(expand_words(a, env, escape))
    return out


def _command_line(cmd: Command, config: Mapping[str, Any]) -> list[str]:
    if cmd.json:
        return list(cmd.args)
    return [*shell_of(config), cmd.args[0]] if cmd.args else []


def _healthcheck(cmd: Command) -> dict[str, Any]:
    args = list(cmd.args)
    if not args:
        raise InvalidParameter("HEALTHCHECK requires an argument")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1 or cmd.flags:
            raise InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise InvalidParameter(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    rest = args[1:]
    test = ["CMD", *rest] if cmd.json else ["CMD-SHELL", " ".join(rest)]
    hc: dict[str, Any] = {"Test": test}
    for flag, key in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ):
        value = cmd.flag(flag)
        if value is not None:
            hc[key] = parse_duration(value, flag)
    retries = cmd.flag("retries")
    if retries is not None:
        try:
            hc["Retries"] = int(retries)
        except ValueError:
            raise InvalidParameter(f'strconv.ParseInt: parsing "{retries}": invalid syntax') from None
        if hc["Retries"] < 0:
            raise InvalidParameter("--retries cannot be negative")
    return hc


def _health_comment(hc: dict[str, Any]) -> str:
    durations = " ".join(
        json.dumps(_go_duration(hc.get(k) or 0)) for k in ("Interval", "Timeout", "StartPeriod", "StartInterval")
    )
    retries = hc.get("Retries") or 0
    return f"HEALTHCHECK &{{{go_quote_list(hc['Test'])} {durations} '\\x{retries:02x}'}}"


def apply(config: dict[str, Any], cmd: Command, env: Mapping[str, str], escape: str, cmd_set: bool) -> tuple[str, bool]:
    """Apply a config-only instruction to `config` (in place): (history comment, CMD set)."""
    name = cmd.name
    if name == "ENV":
        pairs = _pairs(cmd, env, escape)
        current = list(config.get("Env") or [])
        for k, v in pairs:
            current = [e for e in current if e.split("=", 1)[0] != k] + [f"{k}={v}"]
        config["Env"] = current
        return "ENV " + " ".join(f"{k}={v}" for k, v in pairs), cmd_set
    if name == "LABEL":
        pairs = _pairs(cmd, env, escape)
        labels = dict(config.get("Labels") or {})
        labels.update(pairs)
        config["Labels"] = labels
        return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), cmd_set
    if name == "MAINTAINER":
        return "MAINTAINER " + expand(cmd.args[0] if cmd.args else "", env, escape), cmd_set
    if name == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        specs = []
        for word in _words(cmd, env, escape):
            port, _, proto = word.partition("/")
            proto = (proto or "tcp").lower()
            lo, _, hi = port.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise InvalidParameter(f"invalid containerPort: {port}")
            for p in range(int(lo), int(hi or lo) + 1):
                ports[f"{p}/{proto}"] = {}
                specs.append(f"{p}/{proto}")
        config["ExposedPorts"] = ports
        return "EXPOSE " + " ".join(sorted(specs)), cmd_set
    if name == "VOLUME":
        vols = dict(config.get("Volumes") or {})
        words = _words(cmd, env, escape)
        for v in words:
            if not v.strip():
                raise InvalidParameter("VOLUME specified can not be an empty string")
            vols[v] = {}
        config["Volumes"] = vols
        return "VOLUME [" + " ".join(words) + "]", cmd_set
    if name == "USER":
        user = expand(cmd.args[0] if cmd.args else "", env, escape)
        config["User"] = user
        return f"USER {user}", cmd_set
    if name == "STOPSIGNAL":
        signal = expand(cmd.args[0] if cmd.args else "", env, escape)
        config["StopSignal"] = signal
        return f"STOPSIGNAL {signal}", cmd_set
    if name == "CMD":
        line = _command_line(cmd, config)
        config["Cmd"] = line
        return f"CMD {go_quote_list(line)}", True
    if name == "ENTRYPOINT":
        line = _command_line(cmd, config)
        config["Entrypoint"] = line or None
        if not cmd_set:
            config["Cmd"] = None
        return f"ENTRYPOINT {go_quote_list(line)}", cmd_set
    if name == "SHELL":
        if not cmd.json or not cmd.args:
            raise InvalidParameter("SHELL requires the arguments to be in JSON form")
        config["Shell"] = list(cmd.args)
        return "SHELL [" + " ".join(cmd.args) + "]", cmd_set
    if name == "HEALTHCHECK":
        hc = _healthcheck(cmd)
        config["Healthcheck"] = hc
        return _health_comment(hc), cmd_set
    if name == "ONBUILD":
        if cmd.sub in ("ONBUILD", "FROM", "MAINTAINER"):
            raise InvalidParameter(f"{cmd.sub} isn't allowed as an ONBUILD trigger")
        trigger = cmd.original.split(None, 1)[1].strip() if " " in cmd.original.strip() else ""
        config["OnBuild"] = [*(config.get("OnBuild") or []), trigger]
        return f"ONBUILD {trigger}", cmd_set
    raise InvalidParameter(f"unknown instruction: {name}")


def workdir(config: dict[str, Any], cmd: Command, env: Mapping[str, str], escape: str) -> str:
    wd = expand(cmd.args[0] if cmd.args else "", env, escape)
    if not wd:
        raise InvalidParameter("WORKDIR requires exactly one argument")
    if not wd.startswith("/"):
        wd = (config.get("WorkingDir") or "/").rstrip("/") + "/" + wd
    config["WorkingDir"] = wd
    return wd
