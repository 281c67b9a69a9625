"""Progress reports from long work (pull, push, import, load, build).

Lower layers describe what happens as `Message`s and hand them to a `ProgressSink`; the api
layer turns them into Docker's JSON message stream (status/id/progressDetail/stream/aux/error),
so the CLI draws its progress bars. Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    status: str | None = None
    id: str | None = None
    current: int | None = None
    total: int | None = None
    # Pre-formatted text (build output, "Loaded image: x\n"), printed verbatim by the CLI.
    stream: str | None = None
    aux: dict[str, Any] | None = None
    # Set for in-band errors; `error_code` is what `docker build` exits with.
    error: str | None = None
    error_code: int | None = None
    # Whether this message carries a progressDetail object (even an empty one): the CLI keys
    # per-layer lines on `id` and only redraws lines that have one.
    detail: bool = False


ProgressSink = Callable[[Message], None]


def discard(_: Message) -> None:
    """A sink for callers that do not report progress."""
