"""Typed errors shared by every layer; the api layer maps them once to HTTP statuses.

Lower layers (storage, runtime, registry) raise these too, so that a message such as
"No such image: x" travels unchanged from where it is known to the client.
"""

from __future__ import annotations

import os


class EngineError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(EngineError):
    status = 400


class Unauthorized(EngineError):
    status = 401


class Forbidden(EngineError):
    status = 403


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    status = 409


class NotImplementedYet(EngineError):
    status = 501


class Unavailable(EngineError):
    status = 503


class NotModified(EngineError):
    """Not a failure: start of a running container, stop of a stopped one (HTTP 304)."""

    status = 304


class System(EngineError):
    """A failure of the host (mount, syscall, helper process): HTTP 500."""

    status = 500


def os_error_message(e: OSError) -> str:
    """An OSError in Go's words, as dockerd reports it: "<path>: no space left on device".

    Go's syscall errors are libc's strerror with a lower-case first letter; clients and people
    grep for that text (say "no space left on device"), so Python's "[Errno 28] ..." will not do.
    """
    text = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
    text = text[:1].lower() + text[1:]
    if e.filename is not None:
        return f"{os.fsdecode(e.filename)}: {text}"
    return text


def message_of(e: BaseException) -> str:
    """What the client is told about an error the engine did not type."""
    if isinstance(e, EngineError):
        return e.message
    if isinstance(e, OSError) and e.errno:
        return os_error_message(e)
    return f"{type(e).__name__}: {e}"
