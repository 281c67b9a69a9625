"""The docker CLI on a real pseudo-terminal, for the TTY tests.

The CLI runs as the session leader of a fresh pty (pty.fork: setsid + controlling terminal), so
it sees a terminal on stdin/stdout, puts it in raw mode itself, and gets SIGWINCH when the
window size changes here (TIOCSWINSZ on the master), exactly as under a terminal emulator.
Every wait has a deadline: a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

from tests.daemon import DOCKER


class PtySession:
    def __init__(self, args: list[str], env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execve(DOCKER, [DOCKER, *args], env)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.output = b""
        self.pos = 0  # what expect() already consumed
        self.status: int | None = None

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def type(self, text: str) -> None:
        """Keys one by one, as typed (the CLI's detach-key proxy looks at single reads)."""
        for ch in text.encode():
            os.write(self.fd, bytes([ch]))
            time.sleep(0.01)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the CLI closed the terminal (it exited)
            data = b""
        if not data:
            return False
        self.output += data
        return True

    def expect(self, pattern: str | bytes, timeout: float = 20) -> re.Match[bytes]:
        """Wait for `pattern` (a regex) in the output after what earlier calls consumed."""
        pat = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.output, self.pos)
            if m is not None:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pat.pattern!r}; output since the last match:\n"
                                     f"{self.output[self.pos:]!r}")
            if not self._read(min(left, 0.2)):
                m = pat.search(self.output, self.pos)
                if m is None:
                    raise AssertionError(f"the terminal closed before {pat.pattern!r}; output since the last "
                                         f"match:\n{self.output[self.pos:]!r}")

    def resize(self, rows: int, cols: int) -> None:
        """Change the window: the kernel sends SIGWINCH to the CLI, which forwards the size."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self, timeout: float = 30) -> int:
        """The CLI's exit status (reading its last output meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the docker CLI did not exit; output:\n{self.output[-2000:]!r}")
            self._read(0.05)
        with contextlib.suppress(OSError):
            while self._read(0.05) and select.select([self.fd], [], [], 0)[0]:
                pass
        return self.status

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.status = -9
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
