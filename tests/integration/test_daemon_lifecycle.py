"""bockerd as a process: flags, daemon.json, one daemon per data root, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_root
from tests.daemon import Daemon, leftover_cgroups, mounts_under, wait_until


@pytest.fixture
def fresh(busybox_tar: str):
    require_root()
    daemons: list[Daemon] = []

    def make(driver: str = "btrfs", extra: list[str] | None = None, start: bool = True) -> Daemon:
        d = Daemon(driver, extra_args=extra)
        daemons.append(d)
        if start:
            d.start()
            d.out("import", busybox_tar, "busybox:latest")
        return d

    yield make
    for d in daemons:
        d.cleanup()


def test_sigterm_stops_containers_and_cleans_up(fresh) -> None:
    d = fresh(extra=["--pidfile", "/var/tmp/bocker-test-pidfile"])
    try:
        with open("/var/tmp/bocker-test-pidfile") as f:
            assert f.read().strip() == str(d.proc.pid)
        d.out("run", "-d", "--name", "runner", "busybox", "sleep", "1000")
        d.out("run", "-d", "--name", "trapper", "busybox", "sh", "-c",
              "trap 'exit 0' TERM; echo trapped; while :; do sleep 0.1; done")
        d.wait_log("trapper", "trapped")
        code = d.stop()
        assert code == 0, d.log()
        assert not os.path.exists(d.sock)
        assert not os.path.exists("/var/tmp/bocker-test-pidfile")
        assert mounts_under(d.base) == []
        assert leftover_cgroups(d.cgroup_parent) == []
        assert not os.path.exists(os.path.join(d.exec_root, "supervisor", "supervisor.sock"))
        out = subprocess.run(["losetup", "-j", os.path.join(d.data_root, "btrfs.img")], capture_output=True, text=True)
        assert out.stdout == ""
        # State survives: after a restart the containers are there, stopped.
        d.start()
        states = dict(line.split() for line in d.out("ps", "-a", "--format", "{{.Names}} {{.State}}").splitlines())
        assert states == {"runner": "exited", "trapper": "exited"}
        assert d.out("inspect", "-f", "{{.State.ExitCode}}", "trapper").strip() == "0"
        assert d.out("run", "--rm", "busybox", "echo", "again") == "again\n"
    finally:
        if os.path.exists("/var/tmp/bocker-test-pidfile"):
            os.unlink("/var/tmp/bocker-test-pidfile")


def test_second_daemon_on_same_data_root_refuses(fresh) -> None:
    d = fresh()
    other = Daemon("btrfs", base=None)
    try:
        args = [sys.executable, "-m", "bocker_engine", "-H", f"unix://{other.sock}", "--data-root", d.data_root,
                "--exec-root", other.exec_root]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert "already using data root" in r.stderr
        # The first daemon is unharmed.
        assert d.out("run", "--rm", "busybox", "echo", "fine") == "fine\n"
    finally:
        other.cleanup()


def test_daemon_json_and_conflicts(fresh, tmp_path) -> None:
    d = fresh(start=False)
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump({"storage-driver": "overlay2", "log-level": "debug"}, f)
    d.driver = "overlay2"
    # The fixture passes --storage-driver too: dockerd refuses the same option twice.
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(60) == 1
    assert "specified both as a flag and in the configuration file: storage-driver" in d.log()
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump({"no-such-key": 1}, f)
    d.start(wait=False)
    assert d.proc.wait(60) == 1
    assert "don't match any configuration option: no-such-key" in d.log()


def test_overlay_from_daemon_json(fresh) -> None:
    d = fresh(start=False)
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump({"registry-mirrors": ["http://127.0.0.1:1"], "insecure-registries": ["10.1.2.3:5000"]}, f)
    d.start()
    info = d.info()
    assert info["RegistryConfig"]["Mirrors"] == ["http://127.0.0.1:1/"] or info["RegistryConfig"]["Mirrors"] == [
        "http://127.0.0.1:1"
    ]


def test_version_and_info_figures(fresh) -> None:
    d = fresh()
    v = json.loads(d.out("version", "--format", "{{json .}}"))
    assert v["Server"]["ApiVersion"] == "1.44"
    assert v["Server"]["MinAPIVersion"] == "1.24"
    assert v["Server"]["Os"] == "linux"
    d.out("run", "-d", "busybox", "sleep", "60")
    d.out("create", "busybox", "true")
    info = d.info()
    assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"]) == (2, 1, 1)
    assert info["Images"] == 1
    assert info["Driver"] == "btrfs"
    assert info["CgroupVersion"] in ("1", "2")
    assert info["DockerRootDir"] == d.data_root
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0


def test_live_restore_keeps_containers(fresh) -> None:
    d = fresh(extra=["--live-restore"])
    cid = d.out("run", "-d", "busybox", "sh", "-c", "while :; do echo beat; sleep 0.2; done").strip()
    pid = int(d.out("inspect", "-f", "{{.State.Pid}}", cid))
    assert d.stop() == 0
    os.kill(pid, 0)  # still running without the daemon
    d.start()
    assert d.out("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", cid).split() == ["true", str(pid)]
    # The log keeps growing: the restored daemon still serves the container's output.
    before = d.out("logs", cid).count("beat")
    wait_until(lambda: d.out("logs", cid).count("beat") > before, what="a new beat after the restart")
    d.out("stop", "-t", "1", cid)
    assert d.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "false"
    d.out("rm", cid)


def _freezer(d: Daemon, cid: str) -> tuple[str, str, str]:
    """The container's freezer file and its frozen/thawed values (cgroup v1 or v2)."""
    v1 = f"/sys/fs/cgroup/freezer/{d.cgroup_parent}/{cid}/freezer.state"
    if os.path.exists(v1):
        return v1, "FROZEN", "THAWED"
    return f"/sys/fs/cgroup/{d.cgroup_parent}/{cid}/cgroup.freeze", "1", "0"


def test_live_restore_takes_the_freezer_for_the_paused_state(fresh) -> None:
    """A daemon that dies during a commit leaves its container frozen, recorded as running (a
    commit does not write its pause down): back, it shows it paused, and unpause works. The
    other way round too: recorded paused, found thawed, it is running."""
    d = fresh(extra=["--live-restore"])
    cid = d.out("run", "-d", "busybox", "sleep", "1000").strip()
    path, frozen, thawed = _freezer(d, cid)
    assert d.stop() == 0
    with open(path, "w") as f:
        f.write(frozen)
    wait_until(lambda: Path(path).read_text().strip() == frozen, what="the freeze")
    d.start()
    assert d.out("inspect", "-f", "{{.State.Running}} {{.State.Paused}} {{.State.Status}}", cid).split() == [
        "true", "true", "paused"]
    d.out("unpause", cid)
    assert d.out("inspect", "-f", "{{.State.Paused}}", cid).strip() == "false"

    d.out("pause", cid)
    assert d.stop() == 0
    with open(path, "w") as f:
        f.write(thawed)
    d.start()
    assert d.out("inspect", "-f", "{{.State.Paused}} {{.State.Status}}", cid).split() == ["false", "running"]
    # The record was written again: a second restart agrees.
    assert d.stop() == 0
    d.start()
    assert d.out("inspect", "-f", "{{.State.Paused}}", cid).strip() == "false"
    d.out("rm", "-f", cid)


def test_tcp_with_mutual_tls(fresh, tmp_path) -> None:
    import socket as _socket
    from pathlib import Path

    from tests.tls import make_ca

    base = Path(str(tmp_path))
    ca = make_ca(base)
    server_cert, server_key = ca.issue(base, "server", server=True)
    client_cert, client_key = ca.issue(base, "client", server=False)
    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = fresh(extra=["-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(ca.path),
                     "--tlscert", str(server_cert), "--tlskey", str(server_key)])
    certs = base / "client"
    certs.mkdir()
    for src, name in ((ca.path, "ca.pem"), (client_cert, "cert.pem"), (client_key, "key.pem")):
        (certs / name).write_bytes(src.read_bytes())
    env = dict(d.env, DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1",
               DOCKER_CERT_PATH=str(certs), NO_PROXY="127.0.0.1")
    r = subprocess.run(["docker", "run", "--rm", "busybox", "echo", "over tls"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "over tls\n"
    # Without a client certificate the daemon refuses the connection.
    (certs / "cert.pem").unlink()
    (certs / "key.pem").unlink()
    r = subprocess.run(["docker", "version"], env=dict(env, DOCKER_TLS_VERIFY=""), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0


def test_supervisor_crash_is_survived(fresh) -> None:
    import signal as _signal

    d = fresh()
    cid = d.out("run", "-d", "busybox", "sleep", "1000").strip()
    pid = int(d.out("inspect", "-f", "{{.State.Pid}}", cid))
    with open(os.path.join(d.exec_root, "supervisor", "supervisor.pid")) as f:
        os.kill(int(f.read()), _signal.SIGKILL)
    wait_until(lambda: d.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "false", what="settled")
    assert d.out("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid).split() == ["false", "255"]
    # Its processes did not outlive it, and the engine works again with a new supervisor.
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    assert d.out("run", "--rm", "busybox", "echo", "recovered") == "recovered\n"
    d.out("start", cid)
    assert d.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "true"
    d.out("rm", "-f", cid)


def test_crashed_daemon_restart_without_live_restore_stops_containers(fresh) -> None:
    import signal as _signal

    d = fresh()
    cid = d.out("run", "-d", "busybox", "sleep", "1000").strip()
    pid = int(d.out("inspect", "-f", "{{.State.Pid}}", cid))
    assert d.proc is not None
    d.proc.send_signal(_signal.SIGKILL)
    d.proc.wait()
    os.kill(pid, 0)  # the supervisor kept it running
    d.start()
    # Settled in the background, bounded: the API answers meanwhile.
    deadline = time.time() + 20
    while time.time() < deadline and d.out("inspect", "-f", "{{.State.Running}}", cid).strip() != "false":
        time.sleep(0.05)
    assert d.out("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid).split() == ["false", "137"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _free_port() -> int:
    import socket as _socket

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    import socket as _socket

    with _socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_plain_tcp_beyond_loopback_is_refused(fresh) -> None:
    """dockerd 27+: no TLS on a non-loopback TCP address unless --tls=false says so. The check
    comes before anything else: nothing listens, the data root is not even created."""
    port = _free_port()
    d = fresh(extra=["-H", f"tcp://0.0.0.0:{port}"], start=False)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(60) == 1
    assert f"refusing to listen on tcp://0.0.0.0:{port} without TLS" in d.log()
    assert "--tls=false" in d.log()
    assert not _listening(port)
    assert not os.path.exists(d.sock) and not os.path.exists(d.data_root)


def test_plain_tcp_on_loopback_is_allowed(fresh) -> None:
    port = _free_port()
    d = fresh(extra=["-H", f"tcp://127.0.0.1:{port}"])
    env = dict(d.env, DOCKER_HOST=f"tcp://127.0.0.1:{port}", NO_PROXY="127.0.0.1")
    r = subprocess.run(["docker", "version", "--format", "{{.Server.APIVersion}}"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1.44"


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *cmd], capture_output=True, text=True, timeout=60)


def _mode(path: str) -> int:
    return os.stat(path).st_mode & 0o7777


def _assert_private(d: Daemon, cid: str) -> None:
    data = d.data_root
    home = os.path.join(data, d.driver)
    with open(os.path.join(data, "image", d.driver, "layerdb", "mounts", cid, "mount-id")) as f:
        mount_id = f.read().strip()
    if d.driver == "btrfs":
        rootfs = [os.path.join(home, "subvolumes", mount_id)]
    else:
        rootfs = [os.path.join(home, mount_id, "diff")]
        if os.path.ismount(os.path.join(home, mount_id, "merged")):
            rootfs.append(os.path.join(home, mount_id, "merged"))
    assert any(os.path.exists(os.path.join(r, "secret")) for r in rootfs)
    # dockerd's modes.
    expected = {data: 0o711, home: 0o710, os.path.join(data, "image"): 0o700,
                os.path.join(data, "containers"): 0o710, d.exec_root: 0o700}
    if d.driver == "btrfs":
        expected[os.path.join(data, "btrfs.img")] = 0o600
    assert {p: oct(_mode(p)) for p in expected} == {p: oct(m) for p, m in expected.items()}
    # Another local user can enter the data root, and do nothing else there.
    r = _as_nobody("find", data)
    assert r.stdout.split() == [data], r.stdout
    assert "Permission denied" in r.stderr
    for path in [home, os.path.join(data, "image"), os.path.join(data, "containers"),
                 os.path.join(data, "containers", cid), d.exec_root, *rootfs]:
        r = _as_nobody("ls", path)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout)
    for path in [os.path.join(data, "btrfs.img"), os.path.join(data, "containers", cid, "config.v2.json"),
                 os.path.join(data, "image", d.driver, "repositories.json"),
                 *[os.path.join(r, "secret") for r in rootfs]]:
        if os.path.exists(path):
            r = _as_nobody("head", "-c", "1", path)
            assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout)


@pytest.mark.parametrize("driver", ["btrfs", "overlay2"])
def test_data_root_is_private_to_root(fresh, driver: str) -> None:
    d = fresh(driver)
    os.chmod(d.base, 0o755)  # the test's own temp dir must not be what keeps others out
    cid = d.out("run", "-d", "busybox", "sh", "-c", "echo s3cret > /secret; exec sleep 1000").strip()
    deadline = time.monotonic() + 30
    while d.out("diff", cid).find("/secret") < 0:
        assert time.monotonic() < deadline, "the container never wrote /secret"
        time.sleep(0.05)
    _assert_private(d, cid)
    # A data root made loose (an older version, a hand-made copy) is made private again at start.
    assert d.stop() == 0, d.log()
    loose = [d.data_root, os.path.join(d.data_root, "image"), os.path.join(d.data_root, "containers"),
             os.path.join(d.data_root, driver), d.exec_root]
    for path in loose:
        os.chmod(path, 0o755)
    if driver == "btrfs":
        os.chmod(os.path.join(d.data_root, "btrfs.img"), 0o644)
    d.start()
    _assert_private(d, cid)


def test_restart_settles_leftovers_of_every_stdio_shape(fresh) -> None:
    import signal as _signal

    d = fresh()
    ids = [
        d.out("run", "-d", "busybox", "sleep", "1000").strip(),
        d.out("run", "-d", "-i", "busybox", "cat").strip(),
        d.out("run", "-dit", "busybox", "sh").strip(),
        d.out("run", "-d", "-i", "--rm", "busybox", "cat").strip(),
    ]
    assert d.proc is not None
    d.proc.send_signal(_signal.SIGKILL)
    d.proc.wait()
    d.start()
    assert d.docker("ps", "-a", timeout=20).returncode == 0
    deadline = time.time() + 30
    while time.time() < deadline and d.out("ps", "-q", timeout=20).strip():
        time.sleep(0.1)
    assert d.out("ps", "-q").strip() == ""
    states = {i: d.out("inspect", "-f", "{{.State.ExitCode}}", i).strip() for i in ids[:3]}
    assert states == dict.fromkeys(ids[:3], "137")
    # The --rm one was removed once settled.
    deadline = time.time() + 20
    while time.time() < deadline and d.docker("inspect", ids[3]).returncode == 0:
        time.sleep(0.1)
    assert d.docker("inspect", ids[3]).returncode != 0
    # And removing and stopping still answer at once afterwards.
    d.out("rm", *ids[:3], timeout=20)
