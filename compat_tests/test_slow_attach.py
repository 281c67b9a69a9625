"""The supervisor stays bounded: an attach client that stops reading never grows its memory,
never loses output for the log or for other clients, and never blocks the container for long
(issue 6, section 2)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.daemon import DOCKER, Daemon

TOTAL = 200_000_000  # bytes the container writes, as fast as it can
LINE = 4000
DEADLINE = 240
RSS_SLACK_KIB = 64 * 1024


def _supervisor_rss_kib(dm: Daemon) -> int:
    with open(os.path.join(dm.exec_root, "supervisor", "supervisor.pid")) as f:
        pid = int(f.read())
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw_attach(dm: Daemon, cid: str) -> socket.socket:
    """An attach over a raw socket that, after the 101, sends stdin and never reads again."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(dm.sock)
    s.sendall(
        f"POST /v1.44/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
        "Host: docker\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "connection closed before the 101"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


@pytest.mark.parametrize("stalled", ["raw-socket", "sigstopped-cli"])
def test_attach_client_that_stops_reading(dm: Daemon, stalled: str) -> None:
    # The container waits for a line on stdin, so that every client is attached first.
    script = f"read go; yes $(printf '%{LINE - 1}s' | tr ' ' x) | head -c {TOTAL}; echo done"
    cid = dm.out("run", "-d", "-i", "busybox", "sh", "-c", script).strip()
    reader = subprocess.Popen(
        f"{DOCKER} attach --no-stdin {cid} | wc -c", shell=True, env=dm.env, stdout=subprocess.PIPE
    )
    stuck: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    try:
        if stalled == "raw-socket":
            sock = _raw_attach(dm, cid)
            time.sleep(0.5)  # the CLI reader attaches too
            sock.sendall(b"go\n")
        else:
            stuck = subprocess.Popen([DOCKER, "attach", cid], env=dm.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            assert stuck.stdin is not None
            stuck.stdin.write(b"go\n")
            stuck.stdin.flush()
            # Stopped only once it has passed the line on (the container has begun writing).
            log_path = dm.out("inspect", "-f", "{{.LogPath}}", cid).strip()
            until = time.monotonic() + 30
            while os.path.getsize(log_path) == 0 and time.monotonic() < until:
                time.sleep(0.01)
            stuck.send_signal(signal.SIGSTOP)
        base = _supervisor_rss_kib(dm)
        peak = base
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            peak = max(peak, _supervisor_rss_kib(dm))
            if dm.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "false":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the container did not finish writing: blocked by the stalled client?")
        assert peak - base < RSS_SLACK_KIB, f"supervisor RSS grew from {base} to {peak} KiB"
        # The log and the client that kept reading have everything.
        out, _ = reader.communicate(timeout=DEADLINE)
        assert int(out) == TOTAL + len("done\n")
        assert dm.out("logs", "--tail", "1", cid) == "done\n"
    finally:
        if stuck is not None:
            stuck.send_signal(signal.SIGCONT)
            stuck.kill()
            stuck.wait(30)
        if sock is not None:
            sock.close()
        if reader.poll() is None:
            reader.kill()
        reader.wait(30)
        dm.docker("rm", "-f", cid)
