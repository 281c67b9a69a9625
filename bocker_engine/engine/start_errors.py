"""Why a container could not start, classified in one place: the exit code its State records and
the error the API answers with, as dockerd's translateContainerdStartErr maps them.

The runtime says what failed as an errno name (the "kind": ENOENT, EACCES, ...; see
runtime/init.py); the message keeps runc's wording, because the docker CLI derives `docker run`'s
own exit status (127, 126, else 125) from that text, not from anything here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bocker_engine.errors import EngineError, InvalidParameter, System

EXIT_EACCES = 126
EXIT_NOT_FOUND = 127
# dockerd's exitUnknown: any other failed start (also one that never reached the runtime).
EXIT_UNKNOWN = 128

# dockerd's advice when a mount meets a file where it wanted a directory (or the reverse).
ENOTDIR_HINT = (
    ": Are you trying to mount a directory onto a file (or vice-versa)? "
    "Check if the specified host path exists and is the expected type"
)


@dataclass(frozen=True)
class StartFailure:
    exit_code: int
    error: EngineError


def kind_from_text(msg: str) -> str:
    """The kind of a message that came without one (a supervisor started by an older daemon
    keeps running across an upgrade): dockerd's own test of the text."""
    lower = msg.lower()
    if "executable file not found" in lower or "no such file or directory" in lower:
        return "ENOENT"
    if "permission denied" in lower:
        return "EACCES"
    if "is a directory" in lower:
        return "EISDIR"
    if "not a directory" in lower:
        return "ENOTDIR"
    return ""


def _failure(kind: str, full: str, default: int) -> StartFailure:
    if kind in ("ENOENT", "ENOTDIR"):
        return StartFailure(EXIT_NOT_FOUND, InvalidParameter(full))
    if kind in ("EACCES", "EISDIR"):
        return StartFailure(EXIT_EACCES, InvalidParameter(full))
    return StartFailure(default, System(full))


def classify(msg: str, kind: str | None) -> StartFailure:
    """`msg`: the runtime's (runc-like) text; `kind`: its errno name, "" for none, None if unknown."""
    if kind is None:
        kind = kind_from_text(msg)
    detail = msg + ENOTDIR_HINT if kind == "ENOTDIR" else msg
    full = (
        "failed to create task for container: failed to create shim task: OCI runtime create failed: "
        f"runc create failed: unable to start container process: error during container init: {detail}: unknown"
    )
    return _failure(kind, full, EXIT_UNKNOWN)


def classify_exec(msg: str, kind: str | None) -> StartFailure:
    """An exec that could not start: the same kinds, dockerd's exec wording, 126 by default."""
    if kind is None:
        kind = kind_from_text(msg)
    full = f"OCI runtime exec failed: exec failed: unable to start container process: {msg}: unknown"
    return _failure(kind, full, EXIT_EACCES)
