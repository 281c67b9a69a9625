"""docker exec through the stock CLI, docker-py and raw sockets: exit codes, user, env,
workdir, stdin, detached execs, dockerd's refusals, and the exec's confinement compared with
the container's own process from the host side."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from tests.daemon import Daemon, wait_until


@pytest.fixture
def box(dm: Daemon) -> Iterator[str]:
    cid = dm.out("run", "-d", "busybox", "sleep", "1000").strip()
    yield cid
    dm.docker("rm", "-f", cid)


def demux(data: bytes) -> list[tuple[int, bytes]]:
    """stdcopy frames, consecutive ones of a stream joined (frame boundaries are arbitrary)."""
    out: list[tuple[int, bytes]] = []
    while data:
        stream, size = data[0], int.from_bytes(data[4:8], "big")
        payload, data = data[8 : 8 + size], data[8 + size :]
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + payload)
        else:
            out.append((stream, payload))
    return out


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


# ---- CLI -----------------------------------------------------------------------------------


def test_exec_output_and_exit_codes(dm: Daemon, box: str) -> None:
    r = dm.docker("exec", box, "sh", "-c", "echo out; echo err >&2; exit 3", timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = dm.docker("exec", box, "nope", timeout=30)
    assert r.returncode == 127
    assert 'exec: "nope": executable file not found in $PATH' in r.stdout + r.stderr
    r = dm.docker("exec", box, "/etc", timeout=30)
    assert r.returncode == 126
    r = dm.docker("exec", box, "/etc/passwd", timeout=30)
    assert r.returncode == 126
    assert "permission denied" in r.stdout + r.stderr


def test_exec_user_env_workdir(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-e", "FROM_RUN=r", "-e", "X=run", "-w", "/etc", "busybox", "sleep", "1000").strip()
    out = dm.out("exec", cid, "sh", "-c", "pwd; id -u; echo $FROM_RUN $X", timeout=30)
    assert out.split("\n")[:3] == ["/etc", "0", "r run"]
    out = dm.out("exec", "-e", "X=1", "-w", "/tmp", "-u", "nobody", cid, "sh", "-c", "id; pwd; echo $X $FROM_RUN")
    assert out.splitlines() == ["uid=65534(nobody) gid=65534(nogroup)", "/tmp", "1 r"]
    r = dm.docker("exec", "-w", "/nonexistent", cid, "pwd", timeout=30)
    assert r.returncode == 126
    assert 'chdir to cwd ("/nonexistent")' in r.stdout + r.stderr
    dm.docker("rm", "-f", cid)


def test_exec_container_user_and_group_add(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-u", "nobody", "--group-add", "daemon", "busybox", "sleep", "1000").strip()
    assert dm.out("exec", cid, "id", timeout=30).strip() == "uid=65534(nobody) gid=65534(nogroup) groups=1(daemon)"
    assert dm.out("exec", "-u", "0", cid, "id", "-u", timeout=30).strip() == "0"
    dm.docker("rm", "-f", cid)


def test_exec_workdir_resolves_inside_the_container(dm: Daemon, box: str) -> None:
    dm.out("exec", box, "ln", "-s", "/", "/escape", timeout=30)
    dm.out("exec", box, "ln", "-s", "../../../..", "/up", timeout=30)
    for wd in ("/escape", "/up"):
        # The container's root, not the host's: /.dockerenv is only there.
        assert dm.out("exec", "-w", wd, box, "ls", "-a", timeout=30).split().count(".dockerenv") == 1


def test_exec_stdin_eof(dm: Daemon, box: str) -> None:
    r = dm.docker("exec", "-i", box, "sh", "-c", "cat > /f", input="data\n", timeout=30)
    assert r.returncode == 0, r.stderr
    assert dm.out("exec", box, "cat", "/f", timeout=30) == "data\n"
    assert dm.out("exec", "-i", box, "wc", "-c", input="x" * 300000, timeout=30).strip() == "300000"


def test_exec_detached_ends_with_container(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "busybox", "sleep", "1000").strip()
    dm.out("exec", "-d", cid, "sleep", "100", timeout=30)
    wait_until(lambda: "sleep 100" in dm.out("top", cid), 20, "the detached exec in docker top")
    ids = json.loads(dm.out("inspect", "--format", "{{json .ExecIDs}}", cid))
    assert len(ids) == 1
    api = dm.api()
    assert api.exec_inspect(ids[0])["Running"] is True
    dm.out("stop", "-t", "1", cid, timeout=60)
    wait_until(lambda: api.exec_inspect(ids[0])["Running"] is False, 20, "the exec to end with its container")
    assert api.exec_inspect(ids[0])["ExitCode"] == 137
    dm.docker("rm", cid)
    with pytest.raises(Exception, match="No such exec instance"):
        api.exec_inspect(ids[0])


def test_exec_refused_when_stopped_or_paused(dm: Daemon, box: str) -> None:
    dm.out("pause", box)
    r = dm.docker("exec", box, "true", timeout=30)
    assert r.returncode == 1
    assert f"Container {box} is paused, unpause the container before exec" in r.stderr
    dm.out("unpause", box)
    dm.out("stop", "-t", "0", box, timeout=60)
    r = dm.docker("exec", box, "true", timeout=30)
    assert r.returncode == 1
    assert f"Container {box} is not running" in r.stderr
    api = dm.api()
    with pytest.raises(Exception) as e:
        api.exec_create(box, ["true"])
    assert e.value.response.status_code == 409  # type: ignore[attr-defined]


def test_exec_privileged_gets_every_capability(dm: Daemon, box: str) -> None:
    plain = dm.out("exec", box, "grep", "^CapEff:", "/proc/self/status", timeout=30).split()[1]
    priv = dm.out("exec", "--privileged", box, "grep", "^CapEff:", "/proc/self/status", timeout=30).split()[1]
    assert plain == "00000000a80425fb"
    assert int(priv, 16) > int(plain, 16) and int(priv, 16) & int(plain, 16) == int(plain, 16)
    # With every capability, Docker's profile opens what CAP_SYS_ADMIN gates (unshare of a
    # mount namespace), while the container's own confinement still refuses it.
    assert dm.docker("exec", box, "unshare", "-m", "true", timeout=30).returncode != 0
    assert dm.docker("exec", "--privileged", box, "unshare", "-m", "true", timeout=30).returncode == 0


def test_exec_holds_no_outside_descriptor(dm: Daemon, box: str) -> None:
    # ls's own directory fd is 3; nothing else may be open in an exec'd process.
    fds = dm.out("exec", box, "ls", "/proc/self/fd", timeout=30).split()
    assert fds == ["0", "1", "2", "3"]
    out = dm.out("exec", "-t", box, "ls", "/proc/self/fd", timeout=30).split()
    assert out == ["0", "1", "2", "3"]


# ---- confinement, from the host ------------------------------------------------------------


def _detached_exec(dm: Daemon, cid: str, **kw: object) -> tuple[str, int]:
    api = dm.api()
    ex = api.exec_create(cid, ["sleep", "100"], **kw)
    api.exec_start(ex["Id"], detach=True)
    info = api.exec_inspect(ex["Id"])
    assert info["Running"] is True and info["Pid"] > 0
    return ex["Id"], int(info["Pid"])


@pytest.mark.parametrize("nnp", [False, True])
def test_exec_has_the_containers_confinement(dm: Daemon, nnp: bool) -> None:
    args = ["--security-opt", "no-new-privileges"] if nnp else []
    cid = dm.out("run", "-d", *args, "busybox", "sleep", "1000").strip()
    try:
        pid1 = int(dm.out("inspect", "--format", "{{.State.Pid}}", cid))
        _, pid = _detached_exec(dm, cid)
        for ns in ("mnt", "uts", "ipc", "net", "pid", "cgroup"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{pid1}/ns/{ns}"), ns
        with open(f"/proc/{pid}/cgroup") as a, open(f"/proc/{pid1}/cgroup") as b:
            assert a.read() == b.read()
        mine, theirs = _status(pid), _status(pid1)
        for key in ("CapEff", "CapPrm", "CapBnd", "Seccomp", "NoNewPrivs"):
            assert mine[key] == theirs[key], key
        assert mine["Seccomp"] == "2"
        assert mine["NoNewPrivs"] == ("1" if nnp else "0")
        # Its root and cwd are the container's; its only descriptors are stdio.
        assert os.readlink(f"/proc/{pid}/root") == os.readlink(f"/proc/{pid1}/root")
        assert os.stat(f"/proc/{pid}/cwd").st_ino == os.stat(f"/proc/{pid1}/root").st_ino
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
    finally:
        dm.docker("rm", "-f", cid)


# ---- API -----------------------------------------------------------------------------------


def test_exec_inspect_fields(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-u", "1000:1000", "busybox", "sleep", "1000").strip()
    api = dm.api()
    ex = api.exec_create(cid, ["sh", "-c", "exit 5"], detach_keys="ctrl-x,x")
    info = api.exec_inspect(ex["Id"])
    assert info["Running"] is False and info["ExitCode"] is None and info["Pid"] == 0
    out = api.exec_start(ex["Id"])
    assert out == b""
    info = api.exec_inspect(ex["Id"])
    assert info["ExitCode"] == 5 and info["Running"] is False and info["Pid"] > 0
    assert info["ProcessConfig"] == {
        "tty": False, "entrypoint": "sh", "arguments": ["-c", "exit 5"], "privileged": False, "user": "1000:1000"
    }
    assert info["ContainerID"] == cid and info["DetachKeys"] == "ctrl-x,x" and info["CanRemove"] is False
    assert (info["OpenStdin"], info["OpenStdout"], info["OpenStderr"]) == (False, True, True)
    with pytest.raises(Exception, match="has already run"):
        api.exec_start(ex["Id"])
    with pytest.raises(Exception, match="No such exec instance"):
        api.exec_inspect("0" * 64)
    with pytest.raises(Exception, match="No exec command specified"):
        api.exec_create(cid, [])
    with pytest.raises(Exception, match="Invalid escape keys"):
        api.exec_create(cid, ["true"], detach_keys="ctrl-foo")
    dm.docker("rm", "-f", cid)


def test_dockerpy_exec_run_forms(dm: Daemon, box: str) -> None:
    c = dm.client.containers.get(box)
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 2"])
    assert (r.exit_code, r.output) == (2, b"out\nerr\n")
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert r.output == (b"out\n", b"err\n")
    r = c.exec_run(["sh", "-c", "echo a; sleep 0.3; echo b"], stream=True)
    assert b"".join(r.output) == b"a\nb\n"
    r = c.exec_run(["sh", "-c", "tty; echo x"], tty=True)
    assert r.exit_code == 0 and r.output.splitlines() == [b"/dev/pts/0", b"x"]
    r = c.exec_run("id -u", user="nobody", environment={"A": "b"}, workdir="/tmp")
    assert r.output == b"65534\n"
    r = c.exec_run(["sh", "-c", "cat; echo done"], socket=True, stdin=True)
    sock = r.output._sock
    sock.settimeout(20)
    sock.sendall(b"hello\n")
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert demux(data) == [(1, b"hello\ndone\n")]
    sock.close()


def test_dockerpy_exec_resize_and_tty(dm: Daemon, box: str) -> None:
    api = dm.api()
    ex = api.exec_create(box, ["sh"], stdin=True, tty=True)
    sock = api.exec_start(ex["Id"], socket=True, tty=True)._sock
    sock.settimeout(20)
    wait_until(lambda: api.exec_inspect(ex["Id"])["Running"], 20, "the exec to run")
    api.exec_resize(ex["Id"], height=11, width=44)
    sock.sendall(b"stty size; exit 7\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert b"11 44\r\n" in data
    assert api.exec_inspect(ex["Id"])["ExitCode"] == 7
    with pytest.raises(Exception, match="is not running"):
        api.exec_resize(ex["Id"], height=10, width=10)


def _raw_start(dm: Daemon, exec_id: str, upgrade: bool) -> bytes:
    body = b'{"Detach":false,"Tty":false}'
    head = f"POST /v1.44/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(dm.sock)
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_exec_start_plain_and_upgraded(dm: Daemon, box: str) -> None:
    api = dm.api()
    ex = api.exec_create(box, ["echo", "plain"])
    data = _raw_start(dm, ex["Id"], upgrade=False)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/vnd.docker.multiplexed-stream" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert demux(rest) == [(1, b"plain\n")]
    ex = api.exec_create(box, ["echo", "upgraded"])
    head, _, rest = _raw_start(dm, ex["Id"], upgrade=True).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert demux(rest) == [(1, b"upgraded\n")]


def test_exit_code_final_when_stream_closes(dm: Daemon, box: str) -> None:
    # The CLI inspects the exec right after the stream ends: every time, the code is there.
    for code in range(1, 6):
        assert dm.docker("exec", box, "sh", "-c", f"exit {code}", timeout=30).returncode == code


def test_many_execs_are_trimmed(dm: Daemon, box: str) -> None:
    api = dm.api()
    first = api.exec_create(box, ["true"])["Id"]
    api.exec_start(first)
    for _ in range(70):
        api.exec_start(api.exec_create(box, ["true"])["Id"])
    with pytest.raises(Exception, match="No such exec instance"):
        api.exec_inspect(first)
