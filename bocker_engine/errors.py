"""Typed errors shared by every layer; the api layer maps them once to HTTP statuses.

Lower layers (storage, runtime, registry) raise these too, so that a message such as
"No such image: x" travels unchanged from where it is known to the client.
"""

from __future__ import annotations


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
