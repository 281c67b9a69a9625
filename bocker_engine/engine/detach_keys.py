"""Detach keys: Docker's key list syntax (moby/term ToBytes) and a scanner over stdin.

A TTY attach or exec ends without stopping anything when the client types the sequence
(default ctrl-p,ctrl-q). The CLI catches it on its side too; this is the daemon's half, for
clients that do not (docker-py's attach_socket, raw sockets).
"""

from __future__ import annotations

from bocker_engine.errors import InvalidParameter

DEFAULT = b"\x10\x11"  # ctrl-p, ctrl-q

# moby/term ASCII: "ctrl-@" is 0, "ctrl-a" 1 ... "ctrl-z" 26, then [ \ ] ^ _.
_CTRL = [
    "ctrl-@",
    *[f"ctrl-{chr(c)}" for c in range(ord("a"), ord("z") + 1)],
    "ctrl-[",
    "ctrl-\\",
    "ctrl-]",
    "ctrl-^",
    "ctrl-_",
]


def to_bytes(keys: str) -> bytes:
    """ "ctrl-p,ctrl-q" -> b"\\x10\\x11"; a single character stands for itself, DEL is 127."""
    out = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            out += key.encode()[:1]
        elif key in _CTRL:
            out.append(_CTRL.index(key))
        elif key == "DEL":
            out.append(127)
        else:
            raise ValueError(f"Unknown character: '{key}'")
    return bytes(out)


def parse(keys: str | None, what: str = "detach") -> bytes:
    """The sequence for a request's detach keys ("" or None: the default). `what` picks
    dockerd's wording: "detach" (attach) or "escape" (exec)."""
    if not keys:
        return DEFAULT
    try:
        return to_bytes(keys)
    except ValueError:
        raise InvalidParameter(f"Invalid {what} keys ({keys}) provided") from None


class EscapeScanner:
    """Feeds stdin through; holds back a partial match until it is complete or broken."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.pos = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, whether the sequence was completed). After a detach, whatever
        followed the sequence is dropped: the session is over."""
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            if b == self.keys[self.pos]:
                self.pos += 1
                if self.pos == len(self.keys):
                    self.pos = 0
                    return bytes(out), True
                continue
            if self.pos:
                out += self.keys[: self.pos]
                self.pos = 0
                if b == self.keys[0]:
                    self.pos = 1
                    continue
            out.append(b)
        return bytes(out), False
