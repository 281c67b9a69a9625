"""Dockerfiles into stages of instructions.

The line syntax (directives, `# escape`, continuations, comments, JSON forms, flags, heredocs)
is BuildKit's own parser through the `dockerfile` package (its Go code, built as a wheel), so we
read a Dockerfile exactly as docker does. What it leaves to the builder is done here: the
instruction names, the stage structure (ARGs before the first FROM, `FROM ... AS name`) and the
escape character the word expansion (build/shell.py) needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import dockerfile as _df

from bocker_engine.errors import InvalidParameter

INSTRUCTIONS = {
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


@dataclass(frozen=True)
class Command:
    name: str  # upper case
    args: tuple[str, ...]
    flags: tuple[str, ...]
    json: bool
    original: str
    line: int
    sub: str | None = None  # ONBUILD's instruction
    heredocs: tuple[tuple[str, str], ...] = ()

    def flag(self, name: str) -> str | None:
        """`--name=value` (the last one given), None when absent."""
        value = None
        for f in self.flags:
            k, eq, v = f[2:].partition("=")
            if k == name:
                value = v if eq else "true"
        return value


@dataclass
class Stage:
    base: str
    name: str  # "" when not named
    platform: str
    index: int
    from_cmd: Command
    commands: list[Command] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str
    meta_args: list[Command]
    stages: list[Stage]

    def stage_index(self, target: str) -> int:
        for s in self.stages:
            if s.name and s.name.lower() == target.lower():
                return s.index
        raise InvalidParameter(f"failed to reach build target {target} in Dockerfile")


def directives(text: str) -> dict[str, str]:
    """Parser directives: `# key=value` lines at the very top, before any other line."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _DIRECTIVE.match(line.strip())
        if not m:
            break
        key = m.group(1).lower()
        if key in out:
            break
        out[key] = m.group(2)
    return out


def _command(c: _df.Command) -> Command:
    name = c.cmd.upper()
    if name not in INSTRUCTIONS:
        raise InvalidParameter(f"dockerfile parse error line {c.start_line}: unknown instruction: {c.cmd.upper()}")
    sub = c.sub_cmd.upper() if c.sub_cmd else None
    where = f"dockerfile parse error line {c.start_line}"
    if sub == "ONBUILD":
        raise InvalidParameter(f"{where}: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if sub in ("FROM", "MAINTAINER"):
        raise InvalidParameter(f"{where}: {sub} isn't allowed as an ONBUILD trigger")
    return Command(
        name=name,
        args=tuple(c.value),
        flags=tuple(c.flags),
        json=c.json,
        original=c.original,
        line=c.start_line,
        sub=sub,
        heredocs=tuple((h.name, h.content) for h in c.heredocs),
    )


def _parse_lines(text: str, name: str) -> tuple[_df.Command, ...]:
    """The line syntax; its errors in dockerd's words (remotecontext's readAndParseDockerfile)."""
    escape = directives(text).get("escape", "\\")
    if escape not in ("\\", "`"):
        raise InvalidParameter(f"failed to parse {name}: invalid escape token '{escape}' does not match ` or \\")
    try:
        return tuple(_df.parse_string(text))
    except _df.GoParseError as e:
        raise InvalidParameter(f"failed to parse {name}: {e}") from None


def parse_commands(text: str, name: str = "Dockerfile") -> list[Command]:
    return [_command(c) for c in _parse_lines(text, name)]


def parse(text: str, name: str = "Dockerfile") -> Dockerfile:
    """Parse errors are found here, before the first step, as dockerd does: instruction by
    instruction, so the first bad line decides the message."""
    if not text:
        raise InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    escape = directives(text).get("escape", "\\")
    meta: list[Command] = []
    stages: list[Stage] = []
    for raw in _parse_lines(text, name):
        cmd = _command(raw)
        if cmd.name == "FROM":
            args = list(cmd.args)
            if len(args) == 3 and args[1].lower() == "as":
                stage_name = args[2]
                if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.-]*", stage_name):
                    raise InvalidParameter(
                        f"dockerfile parse error line {cmd.line}: invalid name for build stage: "
                        f"{json.dumps(stage_name)}, name can't start with a number or contain symbols"
                    )
            elif len(args) == 1:
                stage_name = ""
            else:
                raise InvalidParameter(
                    f"dockerfile parse error line {cmd.line}: FROM requires either one or three arguments"
                )
            stages.append(Stage(args[0], stage_name, cmd.flag("platform") or "", len(stages), cmd))
        elif not stages:
            if cmd.name != "ARG":
                raise InvalidParameter("no build stage in current context")
            meta.append(cmd)
        else:
            stages[-1].commands.append(cmd)
    return Dockerfile(escape, meta, stages)
