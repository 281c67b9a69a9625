"""Start failures: the kind runtime/init.py gives each failure, and the one mapping from kind to
exit code and API error (engine/start_errors.py)."""

from __future__ import annotations

import os

import pytest

from bocker_engine.engine.start_errors import classify, kind_from_text
from bocker_engine.errors import InvalidParameter, System
from bocker_engine.runtime import init


def _kind(cmd: str, env: list[str]) -> tuple[str, str]:
    with pytest.raises(init.InitError) as e:
        init._find_executable(cmd, env)
    return str(e.value), e.value.kind


def test_exec_lookup_kinds(tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    plain = os.path.join(d, "plain")
    with open(plain, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(plain, 0o644)
    env = [f"PATH={d}"]
    assert _kind("nosuchcmd", env) == ('exec: "nosuchcmd": executable file not found in $PATH', "ENOENT")
    assert _kind(f"{d}/nope", env) == (f'exec: "{d}/nope": stat {d}/nope: no such file or directory', "ENOENT")
    assert _kind(d, env) == (f'exec: "{d}": is a directory', "EISDIR")
    if os.geteuid() != 0:  # root may execute anything with an x bit, and access() says so
        assert _kind(plain, env) == (f'exec: "{plain}": permission denied', "EACCES")


def test_errno_kind() -> None:
    assert init.errno_kind(FileNotFoundError(2, "No such file or directory")) == "ENOENT"
    assert init.errno_kind(PermissionError(1, "Operation not permitted")) == "EPERM"
    assert init.errno_kind(ValueError("x")) == ""
    assert init.InitError("x").kind == ""


@pytest.mark.parametrize(
    ("kind", "code", "error"),
    [
        ("ENOENT", 127, InvalidParameter),
        ("ENOTDIR", 127, InvalidParameter),
        ("EACCES", 126, InvalidParameter),
        ("EISDIR", 126, InvalidParameter),
        ("ENOEXEC", 128, System),
        ("EPERM", 128, System),
        ("", 128, System),
    ],
)
def test_classify(kind: str, code: int, error: type[Exception]) -> None:
    f = classify("some message", kind)
    assert f.exit_code == code and type(f.error) is error
    hint = ": Are you trying to mount a directory onto a file (or vice-versa)?" if kind == "ENOTDIR" else ""
    assert f"error during container init: some message{hint}" in f.error.message
    assert f.error.message.endswith(": unknown")


def test_kind_from_text_as_dockerd() -> None:
    assert kind_from_text('exec: "x": executable file not found in $PATH') == "ENOENT"
    assert kind_from_text("stat /x: No such file or directory") == "ENOENT"
    assert kind_from_text("open /x: Permission denied") == "EACCES"
    assert kind_from_text('exec: "/etc": is a directory') == "EISDIR"
    assert kind_from_text("mkdir /etc/passwd/x: not a directory") == "ENOTDIR"
    assert kind_from_text("exec format error") == ""
