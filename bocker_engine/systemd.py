"""systemd's two protocols, without libsystemd: socket activation and sd_notify.

Socket activation (sd_listen_fds(3)): the service manager (or `systemd-socket-activate`) passes
listening sockets as fds 3, 4, ... with LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in the
environment. Notification (sd_notify(3)): one datagram ("READY=1", "STOPPING=1", ...) to the
unix socket named by NOTIFY_SOCKET, a path or an abstract name starting with "@".

Both sets of variables are taken out of the environment when read, as sd_listen_fds(1) and
sd_notify(1) do: the supervisor and every other child bockerd starts must not believe they are
the activated service.
"""

from __future__ import annotations

import fcntl
import os
import socket

LISTEN_FDS_START = 3

_listen: list[tuple[str, socket.socket]] | None = None
_notify_addr: str | bytes | None = None
_notify_read = False


class ActivationError(Exception):
    pass


def _take_listen_fds() -> list[tuple[str, socket.socket]]:
    env = os.environ
    pid, count, names = env.get("LISTEN_PID"), env.get("LISTEN_FDS"), env.get("LISTEN_FDNAMES")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not pid or not count or not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    n = int(count)
    labels = names.split(":") if names else []
    out = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        # Not inherited by the supervisor or any other child.
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
        sock = socket.socket(fileno=fd)
        out.append((labels[i] if i < len(labels) else "unknown", sock))
    return out


def capture() -> None:
    """Take both protocols' variables out of the environment now, before any child is started
    (the supervisor is, long before the API listens)."""
    global _listen
    if _listen is None:
        _listen = _take_listen_fds()
    _notify_target()


def _notify_target() -> str | bytes | None:
    global _notify_addr, _notify_read
    if not _notify_read:
        _notify_read = True
        raw = os.environ.pop("NOTIFY_SOCKET", "")
        if raw.startswith("@"):
            _notify_addr = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            _notify_addr = raw
    return _notify_addr


def listen_sockets(selector: str) -> list[socket.socket]:
    """The passed sockets `fd://<selector>` means: all for "" or "*", by fd number as dockerd
    (`fd://3`), or by the name systemd gave them (`FileDescriptorName=`, default the .socket unit's
    name: `fd://bocker.socket`)."""
    global _listen
    if _listen is None:
        _listen = _take_listen_fds()
    if not _listen:
        raise ActivationError(
            "no sockets found via socket activation: make sure the service was started by systemd"
        )
    if selector in ("", "*"):
        return [s for _, s in _listen]
    if selector.isdigit():
        i = int(selector) - LISTEN_FDS_START
        if not 0 <= i < len(_listen):
            raise ActivationError("too few socket activated files passed in by systemd")
        return [_listen[i][1]]
    chosen = [s for name, s in _listen if name == selector]
    if not chosen:
        raise ActivationError(f"no socket named {selector!r} passed in by systemd")
    return chosen


def notify(state: str) -> bool:
    """Send `state` to the service manager; False when there is none (not started by systemd)."""
    addr = _notify_target()
    if addr is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(state.encode(), addr)
        except OSError:
            return False
    return True
