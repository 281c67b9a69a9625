"""The Engine API at the byte level: ping headers, errors, versions, hijacked attach."""

from __future__ import annotations

import http.client
import json
import socket
import time

from bocker_engine.stdcopy import parse_frames
from tests.daemon import Daemon


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def request(dm: Daemon, method: str, path: str, body: object = None) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(dm.sock)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def test_ping_headers(dm: Daemon) -> None:
    status, headers, body = request(dm, "HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.44"
    assert headers["ostype"] == "linux"
    assert headers["builder-version"] == "1"
    assert headers["swarm"] == "inactive"
    status, headers, body = request(dm, "GET", "/v1.44/_ping")
    assert body == b"OK"
    assert headers["server"].startswith("Docker/") and headers["server"].endswith("(linux)")


def test_versions(dm: Daemon) -> None:
    assert request(dm, "GET", "/v1.24/version")[0] == 200
    status, headers, body = request(dm, "GET", "/v1.45/version")
    assert status == 400
    assert json.loads(body)["message"] == "client version 1.45 is too new. Maximum supported API version is 1.44"
    status, _, body = request(dm, "GET", "/v1.12/version")
    assert status == 400 and "is too old" in json.loads(body)["message"]


def test_errors_are_exact_json(dm: Daemon) -> None:
    status, headers, body = request(dm, "GET", "/containers/nosuch/json")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": "No such container: nosuch"}
    status, headers, body = request(dm, "GET", "/images/nosuch/json")
    assert status == 404 and json.loads(body) == {"message": "No such image: nosuch:latest"}
    status, headers, body = request(dm, "GET", "/nothing/here")
    assert status == 404 and json.loads(body) == {"message": "page not found"}
    status, _, _ = request(dm, "DELETE", "/_ping")
    assert status == 404
    status, _, body = request(
        dm, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": 1}}
    )
    assert status == 400


def test_ambiguous_prefix(dm: Daemon) -> None:
    ids = [dm.out("create", "busybox", "true").strip() for _ in range(40)]
    by_first: dict[str, list[str]] = {}
    for i in ids:
        by_first.setdefault(i[0], []).append(i)
    shared = next(v for v in by_first.values() if len(v) > 1)
    status, _, body = request(dm, "GET", f"/containers/{shared[0][0]}/json")
    assert status == 400
    assert json.loads(body)["message"] == f"multiple IDs found with provided prefix: {shared[0][0]}"


def _hijack(dm: Daemon, path: str) -> tuple[socket.socket, bytes]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(dm.sock)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "connection closed before the 101"
        head += chunk
    return s, head


def test_hijack_attach_raw_socket(dm: Daemon) -> None:
    cid = dm.out("create", "-i", "busybox", "sh", "-c", "cat; echo done >&2").strip()
    s, head = _hijack(dm, f"/v1.44/containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert b"Content-Type: application/vnd.docker.multiplexed-stream" in head
    assert b"Upgrade: tcp" in head and b"Connection: Upgrade" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    # stdin before start is kept for the process
    s.sendall(b"early\n")
    dm.out("start", cid)
    s.sendall(b"late\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(20)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    frames, rest = parse_frames(data)
    assert rest == b""
    stdout = b"".join(p for st, p in frames if st == 1)
    stderr = b"".join(p for st, p in frames if st == 2)
    assert stdout == b"early\nlate\n"
    assert stderr == b"done\n"


def test_hijack_without_stdin_half_close(dm: Daemon) -> None:
    cid = dm.out("create", "busybox", "sh", "-c", "sleep 0.3; echo after").strip()
    s, head = _hijack(dm, f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
    s.shutdown(socket.SHUT_WR)  # what the CLI does at once without -i
    dm.out("start", cid)
    s.settimeout(20)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    assert parse_frames(data)[0] == [(1, b"after\n")]


def test_wait_headers_come_first(dm: Daemon) -> None:
    cid = dm.out("create", "busybox", "sleep", "0.5").strip()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(dm.sock)
    s.sendall(
        f"POST /containers/{cid}/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    )
    s.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    t = time.time()
    dm.out("start", cid)
    rest = b""
    while b'"StatusCode"' not in rest or not rest.rstrip().endswith(b"0\r\n\r\n".rstrip()):
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
        if b"}" in rest and b"\r\n0\r\n" in rest:
            break
    assert b'"StatusCode": 0' in rest or b'"StatusCode":0' in rest
    assert time.time() - t >= 0.4
    s.close()
