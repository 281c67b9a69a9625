"""sd_notify and sd_listen_fds without systemd: the environment protocol, as systemd speaks it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bocker_engine import systemd


@pytest.fixture
def fresh_notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(systemd, "_notify_read", False)
    monkeypatch.setattr(systemd, "_notify_addr", None)
    yield


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_the_socket(fresh_notify: None, tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                   abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        if abstract:
            name = f"bocker-test-notify-{os.getpid()}"
            rx.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            path = os.path.join(str(tmp_path), "notify")
            rx.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
        rx.settimeout(10)
        assert systemd.notify("READY=1")
        assert rx.recv(4096) == b"READY=1"
        # Taken out of the environment: no child of the daemon believes it is the service.
        assert "NOTIFY_SOCKET" not in os.environ
        assert systemd.notify("STOPPING=1")
        assert rx.recv(4096) == b"STOPPING=1"


def test_notify_without_a_manager(fresh_notify: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


_CHILD = """
import json, os, sys
from bocker_engine import systemd
sel = sys.argv[1]
try:
    socks = systemd.listen_sockets(sel)
except systemd.ActivationError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
print(json.dumps({"fds": [s.fileno() for s in socks], "env": [k for k in os.environ if k.startswith("LISTEN_")],
                  "names": [repr(s.getsockname()) for s in socks]}))
"""


def _activated(selector: str, n: int = 2, names: str = "api:admin", pid: str | None = None) -> dict[str, object]:
    """Run a child with `n` listening sockets passed as fds 3.. the way systemd does."""
    socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for i, s in enumerate(socks):
            s.bind(f"\0bocker-test-activation-{os.getpid()}-{i}")
            s.listen()
        # LISTEN_PID must be the pid of the program that reads it: a trampoline that moves the
        # sockets to fds 3.. and execs it (exec keeps the pid), as systemd does after fork.
        fds = [s.fileno() for s in socks]
        tramp = (
            "import os, sys\n"
            f"for i, fd in enumerate({fds}): os.dup2(fd, 3 + i)\n"
            f"os.environ['LISTEN_PID'] = {pid!r} or str(os.getpid())\n"
            "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
        )
        env = dict(os.environ, LISTEN_FDS=str(n), LISTEN_FDNAMES=names)
        r = subprocess.run([sys.executable, "-c", tramp, _CHILD, selector], env=env, pass_fds=fds,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    finally:
        for s in socks:
            s.close()


def test_listen_fds_selection() -> None:
    every = _activated("")
    assert every["fds"] == [3, 4] and every["env"] == []
    assert _activated("4")["fds"] == [4]  # by number, as dockerd's fd://4
    assert _activated("admin")["fds"] == [4]  # by FileDescriptorName
    assert "too few socket activated files" in str(_activated("9")["error"])
    assert "no socket named 'other'" in str(_activated("other")["error"])


def test_listen_fds_for_another_process_are_ignored() -> None:
    # LISTEN_PID is not ours (the variables leaked from a parent): no sockets.
    assert "no sockets found via socket activation" in str(_activated("", pid="1")["error"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_verify(tmp_path: object) -> None:
    """systemd's own checker finds no unknown key or bad value in the units we ship."""
    contrib = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "systemd")
    with open(os.path.join(contrib, "bocker.service")) as f:
        service = f.read()
    with open(os.path.join(contrib, "bocker.socket")) as f:
        sock = f.read()
    assert "ExecStart=/usr/local/bin/bockerd -H fd://" in service and "Type=notify" in service
    # The checker wants ExecStart's program to exist; bockerd need not be installed for this test.
    for name, text in (("bocker.service", service.replace("/usr/local/bin/bockerd", "/bin/true")),
                       ("bocker.socket", sock)):
        with open(os.path.join(str(tmp_path), name), "w") as f:
            f.write(text)
    r = subprocess.run(["systemd-analyze", "verify", *(os.path.join(str(tmp_path), n)
                                                         for n in ("bocker.service", "bocker.socket"))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
