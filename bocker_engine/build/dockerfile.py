"""Dockerfile instructions: parsing lines, and applying the config-only ones to an image config.

`docker import -c` and `docker commit -c` take the same config instructions as a Dockerfile
(CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR), so they are
parsed here, where the classic builder will parse whole Dockerfiles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter

CONFIG_INSTRUCTIONS = {
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}


@dataclass
class Instruction:
    name: str  # upper case
    args: list[str]  # parsed arguments
    json_form: bool  # written as a JSON array (exec form)
    original: str


def split_words(s: str) -> list[str]:
    """Whitespace-separated words honouring quotes and backslash escapes (Dockerfile rules)."""
    words: list[str] = []
    cur = ""
    quote = ""
    in_word = False
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(s):
                i += 1
                cur += s[i]
            else:
                cur += c
        elif c in "\"'":
            quote = c
            in_word = True
        elif c == "\\" and i + 1 < len(s):
            i += 1
            cur += s[i]
            in_word = True
        elif c.isspace():
            if in_word:
                words.append(cur)
                cur, in_word = "", False
        else:
            cur += c
            in_word = True
        i += 1
    if quote:
        raise InvalidParameter(f"unexpected end of statement while looking for matching {quote}")
    if in_word:
        words.append(cur)
    return words


def parse_key_values(instr: str, rest: str) -> list[tuple[str, str]]:
    """ENV/LABEL arguments: `k=v k2="v 2"` or the legacy single `k v w`."""
    words = split_words(rest)
    if not words:
        raise InvalidParameter(f"{instr} requires at least one argument")
    if "=" not in words[0]:
        # Legacy form: the rest of the line (after the key) is the value, verbatim.
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidParameter(f"{instr} must have two arguments")
        return [(key, value.strip())]
    pairs = []
    for w in words:
        if "=" not in w:
            raise InvalidParameter(f'Syntax error - can\'t find = in "{w}". Must be of the form: name=value')
        k, _, v = w.partition("=")
        if not k:
            raise InvalidParameter(f"{instr} names can not be blank")
        pairs.append((k, v))
    return pairs


def parse_line(line: str) -> Instruction:
    line = line.strip()
    m = re.match(r"^(\w+)(?:\s+(.*))?$", line, re.S)
    if not m:
        raise InvalidParameter(f"dockerfile parse error: unknown instruction: {line}")
    name, rest = m.group(1).upper(), (m.group(2) or "").strip()
    if rest.startswith("["):
        try:
            arr = json.loads(rest)
            if isinstance(arr, list) and all(isinstance(a, str) for a in arr):
                return Instruction(name, arr, True, line)
        except ValueError:
            pass
    return Instruction(name, [rest] if rest else [], False, line)


def _shell_or_exec(instr: Instruction, shell: list[str]) -> list[str]:
    if instr.json_form:
        return list(instr.args)
    return [*shell, instr.args[0]] if instr.args else []


def apply_config_change(config: dict[str, Any], line: str) -> None:
    """Apply one config-only instruction (import/commit `changes`) to a container Config."""
    instr = parse_line(line)
    if instr.name not in CONFIG_INSTRUCTIONS:
        raise InvalidParameter(f"{instr.name} is not a valid change command")
    shell = config.get("Shell") or ["/bin/sh", "-c"]
    rest = instr.args[0] if instr.args and not instr.json_form else ""
    if instr.name == "CMD":
        config["Cmd"] = _shell_or_exec(instr, shell)
    elif instr.name == "ENTRYPOINT":
        config["Entrypoint"] = _shell_or_exec(instr, shell) or None
        # Setting ENTRYPOINT resets a CMD inherited from the base image (Docker's rule).
        config["Cmd"] = None
    elif instr.name == "ENV":
        env = list(config.get("Env") or [])
        for k, v in parse_key_values("ENV", rest):
            env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
        config["Env"] = env
    elif instr.name == "LABEL":
        labels = dict(config.get("Labels") or {})
        for k, v in parse_key_values("LABEL", rest):
            labels[k] = v
        config["Labels"] = labels
    elif instr.name == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for p in instr.args if instr.json_form else split_words(rest):
            ports[p if "/" in p else f"{p}/tcp"] = {}
        config["ExposedPorts"] = ports
    elif instr.name == "VOLUME":
        vols = dict(config.get("Volumes") or {})
        for v in instr.args if instr.json_form else split_words(rest):
            vols[v] = {}
        config["Volumes"] = vols
    elif instr.name == "WORKDIR":
        wd = rest
        if not wd.startswith("/"):
            wd = (config.get("WorkingDir") or "/").rstrip("/") + "/" + wd
        config["WorkingDir"] = wd
    elif instr.name == "USER":
        config["User"] = rest
    elif instr.name == "STOPSIGNAL":
        config["StopSignal"] = rest
    elif instr.name == "ONBUILD":
        config["OnBuild"] = [*(config.get("OnBuild") or []), rest]
    elif instr.name == "HEALTHCHECK":
        raise InvalidParameter("HEALTHCHECK is not supported in changes yet")
