"""bockerd as a system service: socket activation (-H fd://), sd_notify, SIGHUP reload, log defaults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator

import pytest

from conftest import require_root
from tests.daemon import Daemon, wait_until

ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture
def fresh(busybox_tar: str) -> Iterator[Callable[..., Daemon]]:
    require_root()
    daemons: list[Daemon] = []

    def make(daemon_json: dict[str, object] | None = None) -> Daemon:
        d = Daemon("btrfs")
        daemons.append(d)
        if daemon_json is not None:
            _write_json(d, daemon_json)
        return d

    yield make
    for d in daemons:
        d.cleanup()


def _write_json(d: Daemon, content: object) -> None:
    tmp = os.path.join(d.base, "daemon.json.tmp")
    with open(tmp, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    os.rename(tmp, os.path.join(d.base, "daemon.json"))


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate (Debian package systemd) is not installed")
def test_socket_activation_and_notify(fresh: Callable[..., Daemon], busybox_tar: str) -> None:
    d = fresh()
    notify_path = os.path.join(d.base, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(notify_path)
        rx.settimeout(60)
        # systemd-socket-activate binds the socket, passes it as fd 3 with LISTEN_* on the first
        # connection, as systemd does for bocker.socket; it passes no other environment unless told.
        assert ACTIVATE is not None
        d.command_prefix = [ACTIVATE, "-l", d.sock, "--fdname=bocker.socket", "-E", f"NOTIFY_SOCKET={notify_path}"]
        d.listen_host = "fd://"
        d.start(wait=False)
        wait_until(lambda: os.path.exists(d.sock), 30, "the activation socket")
        # The first client starts bockerd on the passed socket; it is served without a restart.
        assert d.out("version", "--format", "{{.Server.Os}}").strip() == "linux"
        assert d.proc is not None
        assert rx.recv(4096).decode().split("\n") == ["READY=1", f"MAINPID={d.proc.pid}"]
        d.out("import", busybox_tar, "busybox:latest")
        assert d.out("run", "--rm", "busybox", "echo", "activated") == "activated\n"
        # The supervisor bockerd started is not told it was activated, nor where to notify.
        with open(os.path.join(d.exec_root, "supervisor", "supervisor.pid")) as f:
            supervisor = int(f.read())
        with open(f"/proc/{supervisor}/environ", "rb") as f:
            names = [e.split(b"=", 1)[0] for e in f.read().split(b"\0") if e]
        assert not {b"LISTEN_PID", b"LISTEN_FDS", b"LISTEN_FDNAMES", b"NOTIFY_SOCKET"} & set(names)
        assert d.stop() == 0, d.log()
        assert rx.recv(4096) == b"STOPPING=1"
    # The socket is systemd's: bockerd leaves it in place for the next activation.
    assert os.path.exists(d.sock)


def test_fd_host_without_activation_fails_clearly(fresh: Callable[..., Daemon]) -> None:
    d = fresh()
    d.listen_host = "fd://"
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(60) == 1
    assert "no sockets found via socket activation" in d.log()


def _info(d: Daemon) -> dict[str, object]:
    return d.info()


def test_sighup_reloads_config(fresh: Callable[..., Daemon], busybox_tar: str) -> None:
    first = {
        "registry-mirrors": ["http://127.0.0.1:9"],
        "registry-mirrors-only": True,
        "labels": ["stage=one"],
        "log-opts": {"max-size": "10m", "max-file": "2"},
    }
    d = fresh(first)
    d.start()
    assert d.proc is not None
    info = d.info()
    assert info["Debug"] is False and info["Labels"] == ["stage=one"] and info["LiveRestoreEnabled"] is False
    assert info["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:9"]
    # Daemon-wide log options reach containers that choose none of their own, as dockerd's.
    d.out("import", busybox_tar, "busybox:latest")
    d.out("create", "--name", "defaults", "busybox", "true")
    lc = json.loads(d.out("inspect", "-f", "{{json .HostConfig.LogConfig}}", "defaults"))
    assert lc == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}}
    d.out("create", "--name", "own", "--log-opt", "max-size=1m", "busybox", "true")
    lc = json.loads(d.out("inspect", "-f", "{{json .HostConfig.LogConfig}}", "own"))
    assert lc == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    r = d.docker("create", "--log-opt", "colour=red", "busybox", "true")
    assert r.returncode != 0 and "unknown log opt 'colour' for json-file log driver" in r.stderr

    second = {
        **first,
        "registry-mirrors": ["http://127.0.0.1:7"],
        "debug": True,
        "labels": ["stage=two"],
        "max-concurrent-downloads": 1,
        "live-restore": True,
        "log-opts": {"max-size": "5m"},  # not reloadable: containers keep getting the first ones
    }
    _write_json(d, second)
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _info(d)["Debug"] is True, 30, "Debug after SIGHUP")
    info = d.info()
    assert info["Labels"] == ["stage=two"] and info["LiveRestoreEnabled"] is True
    assert info["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:7"]
    assert "reload: registry-mirrors" in d.log()
    assert "not reloadable, takes effect at the next start: log-opts" in d.log()
    # The registry client itself took the new mirror: a pull now goes there, not to the old one.
    r = d.docker("pull", "busybox:reload-test")
    assert r.returncode != 0 and "127.0.0.1:7" in r.stderr, r.stderr

    # A broken file: logged, the running configuration kept, the daemon serving.
    _write_json(d, "{not json")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "not applied, keeping the running configuration" in d.log(), 30, "the reload error")
    assert d.proc.poll() is None
    info = d.info()
    assert info["Debug"] is True and info["Labels"] == ["stage=two"] and info["LiveRestoreEnabled"] is True
    assert d.out("run", "--rm", "busybox", "echo", "still") == "still\n"
    # A key that conflicts with a flag is refused on reload as at start.
    _write_json(d, {**second, "storage-driver": "overlay2"})
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "both as a flag and in the configuration file: storage-driver" in d.log(), 30, "conflict")
    assert d.info()["Debug"] is True

    # Back to the first file: debug and live-restore off again.
    _write_json(d, first)
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _info(d)["Debug"] is False, 30, "Debug off after SIGHUP")
    info = d.info()
    assert info["LiveRestoreEnabled"] is False and info["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:9"]
    d.clean_containers()
    assert d.stop() == 0, d.log()


def test_default_log_driver_none(fresh: Callable[..., Daemon], busybox_tar: str) -> None:
    d = fresh({"log-driver": "none"})
    d.start()
    assert d.info()["LoggingDriver"] == "none"
    d.out("import", busybox_tar, "busybox:latest")
    d.out("run", "--name", "quiet", "busybox", "echo", "unheard")
    assert json.loads(d.out("inspect", "-f", "{{json .HostConfig.LogConfig}}", "quiet")) == {"Type": "none",
                                                                                               "Config": {}}
    r = d.docker("logs", "quiet")
    assert r.returncode != 0 and "configured logging driver does not support reading" in r.stderr
    d.out("run", "--name", "loud", "--log-driver", "json-file", "busybox", "echo", "heard")
    assert d.out("logs", "loud") == "heard\n"
    d.clean_containers()
    assert d.stop() == 0, d.log()
