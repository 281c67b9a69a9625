"""Interactive sessions through a real pseudo-terminal: the stock CLI runs on a pty of ours
(tests/pty_session.py), we type into the shell and read its echo, change the window size,
press Ctrl-C, detach with the keys and attach again. Plus the API forms docker-py and other
clients use: attach_socket with the daemon-side detach keys, resize, the websocket attach."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator

import aiohttp
import pytest

from tests.daemon import Daemon, wait_until
from tests.pty_session import PtySession

PROMPT = r"/ # "


@pytest.fixture
def shell_box(dm: Daemon) -> Iterator[str]:
    """A detached interactive shell: `docker run -dit busybox sh`."""
    cid = dm.out("run", "-dit", "busybox", "sh").strip()
    yield cid
    dm.docker("rm", "-f", cid)


def _wait_sleeping(dm: Daemon, ref: str) -> None:
    """Until the shell runs `sleep 60` in the foreground: a Ctrl-C typed while the shell is
    still in its line editor (ISIG off) would be a plain input byte."""
    wait_until(lambda: "sleep 60" in dm.out("top", ref), 20, "sleep 60 to run")


def _running(dm: Daemon, cid: str) -> bool:
    return dm.out("inspect", "--format", "{{.State.Running}}", cid).strip() == "true"


def test_run_it_prompt_size_ctrl_c_exit_code(dm: Daemon) -> None:
    with PtySession(["run", "-it", "--rm", "--name", "ttyrun", "busybox", "sh"], dm.env, rows=24, cols=80) as s:
        s.expect(PROMPT)
        s.type("echo hel''lo\r")
        s.expect("\r\nhello\r\n")
        s.expect(PROMPT)
        s.type("stty size\r")
        s.expect("\r\n24 80\r\n")
        s.resize(30, 100)
        # The CLI forwards SIGWINCH as a resize; poll until the shell sees it.
        for _ in range(100):
            s.type("stty size\r")
            m = s.expect(r"\r\n(\d+ \d+)\r\n")
            if m.group(1) == b"30 100":
                break
        else:
            raise AssertionError("the window size never reached the container")
        s.expect(PROMPT)
        s.type("sleep 60\r")
        _wait_sleeping(dm, "ttyrun")
        s.write(b"\x03")  # Ctrl-C: the pty's ISIG turns it into SIGINT for the foreground job
        s.expect(PROMPT, timeout=10)
        s.type("echo rc=$?\r")
        s.expect("rc=130")
        s.type("exit 3\r")
        assert s.wait() == 3


def test_attach_detach_and_reattach(dm: Daemon, shell_box: str) -> None:
    with PtySession(["attach", shell_box], dm.env) as s:
        s.type("echo one-$((1+1))\r")
        s.expect("one-2")
        s.type("\x10\x11")  # ctrl-p ctrl-q
        # The stock CLI reports the escape as its error (docker attach returns it, as with dockerd).
        assert s.wait() == 1
        assert b"read escape sequence" in s.output
    assert _running(dm, shell_box)
    with PtySession(["attach", "--detach-keys", "ctrl-x,x", shell_box], dm.env) as s:
        s.type("echo two-$((1+1))\r")
        s.expect("two-2")
        s.type("\x10\x11echo still-$((2+1))\r")  # the default keys no longer detach
        s.expect("still-3")
        s.type("\x18x")
        assert s.wait() == 1
        assert b"read escape sequence" in s.output
    assert _running(dm, shell_box)


def test_detach_keys_from_cli_config(dm: Daemon, shell_box: str, tmp_path: object) -> None:
    config = os.path.join(str(tmp_path), "docker-config")
    os.makedirs(config)
    with open(os.path.join(config, "config.json"), "w") as f:
        json.dump({"detachKeys": "ctrl-a,a"}, f)
    env = {**dm.env, "DOCKER_CONFIG": config}
    with PtySession(["attach", shell_box], env) as s:
        s.type("echo three-$((1+2))\r")
        s.expect("three-3")
        s.type("\x01a")
        assert s.wait() == 1
    assert _running(dm, shell_box)


def test_run_it_detach_exits_zero(dm: Daemon) -> None:
    with PtySession(["run", "-it", "--name", "detachme", "busybox", "sh"], dm.env) as s:
        s.expect(PROMPT)
        s.type("\x10\x11")
        assert s.wait() == 0
    assert _running(dm, "detachme")
    with PtySession(["attach", "detachme"], dm.env) as s:
        s.type("echo back-$((4+4))\r")
        s.expect("back-8")
        s.type("exit 5\r")
        assert s.wait() == 5
    dm.docker("rm", "-f", "detachme")


def test_exec_it_size_follows_window(dm: Daemon, shell_box: str) -> None:
    with PtySession(["exec", "-it", shell_box, "sh"], dm.env, rows=20, cols=90) as s:
        s.expect(PROMPT)
        s.type("stty size; tty\r")
        s.expect("\r\n20 90\r\n")
        s.expect(r"/dev/pts/\d+")
        s.resize(33, 77)
        for _ in range(100):
            s.type("stty size\r")
            if s.expect(r"\r\n(\d+ \d+)\r\n").group(1) == b"33 77":
                break
        else:
            raise AssertionError("the window size never reached the exec")
        s.type("sleep 60\r")
        _wait_sleeping(dm, shell_box)
        s.write(b"\x03")
        s.expect(PROMPT, timeout=10)
        s.type("exit 4\r")
        assert s.wait() == 4
    assert _running(dm, shell_box)


# ---- API clients ---------------------------------------------------------------------------


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_dockerpy_attach_socket_resize_and_daemon_detach(dm: Daemon, shell_box: str) -> None:
    c = dm.client.containers.get(shell_box)
    c.resize(15, 50)
    api = dm.api()
    sock = api.attach_socket(shell_box, params={"stdin": 1, "stdout": 1, "stream": 1})._sock
    sock.settimeout(20)
    sock.sendall(b"stty size\n")
    _recv_until(sock, b"15 50")
    # The daemon's half of the detach keys: the session ends, the container keeps running.
    sock.sendall(b"\x10")
    sock.sendall(b"\x11")
    while sock.recv(65536):
        pass
    sock.close()
    assert _running(dm, shell_box)
    # A second attacher with other keys; and a broken partial sequence passes through.
    sock = api.attach_socket(shell_box, params={"stdin": 1, "stdout": 1, "stream": 1, "detachKeys": "ctrl-z,z"})._sock
    sock.settimeout(20)
    sock.sendall(b"echo \x1aq-$((3+3))\n")
    _recv_until(sock, b"q-6")
    sock.sendall(b"\x1az")
    while sock.recv(65536):
        pass
    sock.close()
    assert _running(dm, shell_box)


def test_attach_bad_detach_keys(dm: Daemon, shell_box: str) -> None:
    api = dm.api()
    with pytest.raises(Exception, match=r"Invalid detach keys \(ctrl-foo\) provided"):
        api.attach_socket(shell_box, params={"stdin": 1, "stream": 1, "detachKeys": "ctrl-foo"})


def test_attach_several_clients_and_logs(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-i", "busybox", "sh", "-c", "echo first; while read l; do echo got-$l; done").strip()
    api = dm.api()
    dm.wait_log(cid, "first")
    assert dm.client.containers.get(cid).attach(stream=False, logs=True) == b"first\n"
    watcher = dm.client.containers.get(cid).attach(stream=True, logs=True)
    assert next(watcher) == b"first\n"
    feeder = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stream": 1})._sock
    feeder.settimeout(20)
    feeder.sendall(b"x\n")
    assert next(watcher) == b"got-x\n"
    # The feeder going away does not stop the container, nor the other attacher.
    feeder.close()
    assert _running(dm, cid)
    second = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stream": 1})._sock
    second.sendall(b"y\n")
    assert next(watcher) == b"got-y\n"
    second.close()
    watcher.close()
    dm.docker("rm", "-f", cid)


def test_websocket_attach(dm: Daemon, shell_box: str) -> None:
    async def session() -> bytes:
        conn = aiohttp.UnixConnector(path=dm.sock)
        async with aiohttp.ClientSession(connector=conn) as http:
            url = f"http://docker/v1.44/containers/{shell_box}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1"
            async with http.ws_connect(url) as ws:
                await ws.send_bytes(b"echo ws-$((1+2))\n")
                got = b""
                while b"ws-3\r\n" not in got:  # the line end may come in a later message
                    msg = await asyncio.wait_for(ws.receive(), 20)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    got += msg.data
                return got

    assert b"ws-3\r\n" in asyncio.run(asyncio.wait_for(session(), 60))
    assert _running(dm, shell_box)


def test_websocket_attach_with_logs_non_tty(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "echo hello-log; sleep 1000").strip()
    dm.wait_log(cid, "hello-log")

    async def session() -> bytes:
        conn = aiohttp.UnixConnector(path=dm.sock)
        async with aiohttp.ClientSession(connector=conn) as http:
            url = f"http://docker/containers/{cid}/attach/ws?logs=1&stream=0&stdout=1"
            async with http.ws_connect(url) as ws:
                got = b""
                async for msg in ws:
                    got += msg.data
                return got

    # Raw, never stdcopy-framed, even without a tty.
    assert asyncio.run(asyncio.wait_for(session(), 60)) == b"hello-log\n"
    dm.docker("rm", "-f", cid)


def test_resize_of_a_stopped_container(dm: Daemon) -> None:
    cid = dm.out("create", "-t", "busybox", "sh").strip()
    with pytest.raises(Exception, match="is not running"):
        dm.api().resize(cid, 10, 10)
    dm.docker("rm", cid)


def test_console_size_at_create(dm: Daemon) -> None:
    cid = dm.api().create_container("busybox", ["stty", "size"], tty=True, host_config={"ConsoleSize": [12, 34]})
    dm.api().start(cid)
    wait_until(lambda: not _running(dm, cid["Id"]), 20, "the container to exit")
    assert dm.out("logs", cid["Id"]).strip() == "12 34"
    dm.docker("rm", cid["Id"])
