"""Container lifecycle through the stock docker CLI, as a user types it (issue 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from tests.daemon import Daemon, wait_until


def test_run_prints_and_exit_codes(dm: Daemon) -> None:
    assert dm.out("run", "--rm", "busybox", "echo", "hello") == "hello\n"
    assert dm.docker("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    r = dm.docker("run", "--rm", "busybox", "nosuchcmd")
    assert r.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in r.stderr
    r = dm.docker("run", "--rm", "busybox", "/etc")
    assert r.returncode == 126
    r = dm.docker("run", "--rm", "busybox", "/etc/passwd")
    assert r.returncode == 126 and "permission denied" in r.stderr
    r = dm.docker("run", "--rm", "--blkio-weight", "5", "busybox", "true")
    assert r.returncode == 125


def test_rm_after_failed_start_with_autoremove(dm: Daemon) -> None:
    # The CLI waits for the `removed` condition after a failed start with --rm.
    r = dm.docker("run", "--rm", "--name", "failrm", "busybox", "nosuchcmd", timeout=30)
    assert r.returncode == 127
    assert dm.out("ps", "-aq", "-f", "name=failrm") == ""


def test_stdin_pipe(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "-i", "busybox", "cat", input="piped\nline2\n")
    assert r.returncode == 0
    assert r.stdout == "piped\nline2\n"
    r = dm.docker("run", "--rm", "-i", "busybox", "sh", "-c", "wc -c", input="x" * 300000)
    assert r.stdout.strip() == "300000"


def test_stdout_stderr_separate(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"


def test_detached_ps_logs_inspect_stop_start(dm: Daemon) -> None:
    cid = dm.out(
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "trap 'echo usr1' USR1; while true; do echo tick; sleep 0.2; done",
    ).strip()
    dm.wait_log("web", "tick\ntick\ntick\n")
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    ps = dm.out("ps")
    assert "web" in ps and "Up " in ps
    assert dm.out("ps", "-q", "-f", "name=web", "-f", "status=running").strip() == cid[:12]
    assert dm.out("ps", "-q", "-f", "status=exited").strip() == ""
    assert "SIZE" in dm.out("ps", "-s")
    logs = dm.out("logs", "web")
    assert logs.startswith("tick\n") and logs.count("tick") >= 3
    tail = dm.out("logs", "--tail", "2", "-t", "web").splitlines()
    assert len(tail) == 2
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick$", t) for t in tail)
    assert "tick" in dm.out("logs", "--since", "10s", "web")
    assert dm.out("logs", "--since", str(int(time.time()) + 100), "web") == ""
    pid, logpath = dm.out("inspect", "-f", "{{.State.Pid}} {{.LogPath}}", "web").split()
    assert int(pid) > 0 and logpath.endswith(f"{cid}-json.log")
    with open(logpath) as f:
        first = json.loads(f.readline())
    assert first["log"] == "tick\n" and first["stream"] == "stdout"
    # follow ends when the container stops
    follower = subprocess.Popen(
        ["docker", "logs", "-f", "--tail", "1", "web"], env=dm.env, stdout=subprocess.PIPE, text=True
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "tick\n"  # it is following
    dm.out("stop", "-t", "1", "web")
    out, _ = follower.communicate(timeout=20)
    assert follower.returncode == 0 and "tick" in out
    info = json.loads(dm.out("inspect", "web"))[0]
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    assert dm.out("start", "web").strip() == "web"
    assert json.loads(dm.out("inspect", "web"))[0]["State"]["Running"] is True
    count = dm.out("logs", "web").count("tick")
    dm.out("restart", "-t", "0", "web")
    # The new run's trap is set once it ticks.
    wait_until(lambda: dm.out("logs", "web").count("tick") > count, what="a tick after the restart")
    dm.out("kill", "-s", "USR1", "web")
    dm.wait_log("web", "usr1")
    dm.out("kill", "web")
    assert dm.out("wait", "web").strip() == "137"


def test_stop_uses_signal_then_kill(dm: Daemon) -> None:
    dm.out(
        "run",
        "-d",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; echo trapped; while true; do sleep 0.1; done",
    )
    dm.wait_log("trap", "trapped")
    dm.out("stop", "trap")
    assert "got-term" in dm.out("logs", "trap")
    assert dm.out("inspect", "-f", "{{.State.ExitCode}}", "trap").strip() == "0"
    # `sh` as PID 1 ignores TERM without a trap: stop escalates to KILL after -t.
    dm.out("run", "-d", "--name", "stubborn", "busybox", "sleep", "100")
    t = time.time()
    dm.out("stop", "-t", "1", "stubborn")
    assert time.time() - t < 8
    assert dm.out("inspect", "-f", "{{.State.ExitCode}}", "stubborn").strip() == "137"
    # Stopping a stopped container is not an error (304).
    assert dm.docker("stop", "stubborn").returncode == 0


def test_rename_rm_force_prune(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "r1", "busybox", "sleep", "100")
    dm.out("rename", "r1", "r2")
    assert dm.out("inspect", "-f", "{{.Name}}", "r2").strip() == "/r2"
    r = dm.docker("rm", "r2")
    assert r.returncode == 1
    assert 'cannot remove container "/r2": container is running' in r.stderr
    dm.out("rm", "-f", "r2")
    assert dm.docker("inspect", "r2").returncode == 1
    dm.out("create", "--name", "c1", "busybox", "true")
    dm.out("run", "--name", "c2", "busybox", "true")
    out = dm.out("container", "prune", "-f")
    assert "Deleted Containers" in out
    assert dm.out("ps", "-aq") == ""


def test_name_conflict_and_lookup(dm: Daemon) -> None:
    cid = dm.out("create", "--name", "dup", "busybox", "true").strip()
    r = dm.docker("create", "--name", "dup", "busybox", "true")
    assert r.returncode == 1
    assert f'The container name "/dup" is already in use by container "{cid}"' in r.stderr
    assert dm.out("inspect", "-f", "{{.Id}}", cid[:6]).strip() == cid
    assert dm.out("inspect", "-f", "{{.Id}}", "/dup").strip() == cid
    r = dm.docker("inspect", "nosuch")
    assert r.returncode == 1 and "No such object: nosuch" in r.stderr
    r = dm.docker("rm", "nosuch")
    assert "No such container: nosuch" in r.stderr
    r = dm.docker("create", "--name", "bad name!", "busybox", "true")
    assert r.returncode == 1 and "Invalid container name" in r.stderr


def test_generated_names_are_unique(dm: Daemon) -> None:
    ids = [dm.out("create", "busybox", "true").strip() for _ in range(5)]
    names = {dm.out("inspect", "-f", "{{.Name}}", i).strip() for i in ids}
    assert len(names) == 5
    assert all(re.fullmatch(r"/[a-z]+_[a-z]+\d?", n) for n in names)


def test_config_flags(dm: Daemon) -> None:
    out = dm.out(
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--hostname",
        "h",
        "--entrypoint",
        "sh",
        "--label",
        "k=v",
        "--name",
        "nn",
        "busybox",
        "-c",
        "echo $A; pwd; id; hostname; echo $HOME",
    )
    assert out.splitlines() == ["1", "/tmp", "uid=1000(app) gid=1000(app) groups=50(staff)", "h", "/home/app"]
    out = dm.out("run", "--rm", "-u", "app", "-w", "/new/dir", "busybox", "sh", "-c", "pwd; id -u")
    assert out.split() == ["/new/dir", "1000"]
    r = dm.docker("run", "--rm", "-u", "nobodyhere", "busybox", "true")
    assert r.returncode != 0 and "unable to find user nobodyhere" in r.stderr
    dm.out("create", "--label", "k=v", "--name", "lab", "busybox", "true")
    assert dm.out("inspect", "-f", "{{.Config.Labels.k}}", "lab").strip() == "v"
    assert dm.out("ps", "-aq", "-f", "label=k=v").strip() != ""
    env = dm.out("run", "--rm", "busybox", "env").splitlines()
    assert any(e.startswith("PATH=") for e in env) and any(e.startswith("HOSTNAME=") for e in env)


LIMITS = ["-m", "256m", "--memory-swap", "512m", "--cpu-shares", "512", "--cpus", "1.5", "--cpuset-cpus", "0",
          "--pids-limit", "100"]


def test_resource_limits_host_and_inside(dm: Daemon) -> None:
    cid = dm.out("run", "-d", *LIMITS, "busybox", "sleep", "60").strip()
    parent = dm.cgroup_parent
    host = f"/sys/fs/cgroup/memory/{parent}/{cid}/memory.limit_in_bytes"
    with open(host) as f:
        assert f.read().strip() == "268435456"
    files = ["memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes", "cpu/cpu.shares",
             "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "cpuset/cpuset.cpus", "pids/pids.max"]
    out = dm.out("run", "--rm", *LIMITS, "busybox", "cat", *(f"/sys/fs/cgroup/{f}" for f in files))
    assert out.split() == ["268435456", "536870912", "512", "150000", "100000", "0", "100"]
    dm.out("rm", "-f", cid)
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{parent}/{cid}")


def test_invalid_resources_are_rejected(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "-m", "1m", "busybox", "true")
    assert r.returncode == 125 and "Minimum memory limit allowed is 6MB" in r.stderr
    r = dm.docker("run", "--rm", "--cpus", "64", "busybox", "true")
    assert r.returncode == 125 and "Range of CPUs is from 0.01" in r.stderr


def test_isolation(dm: Daemon) -> None:
    out = dm.out(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo $$; ps -o pid | wc -l; ls /proc/1/root >/dev/null && echo ok; "
        "grep CapEff /proc/self/status; cat /proc/keys | wc -c; "
        "ip link 2>/dev/null | grep -c '^[0-9]'; ls -a /dev | tr '\\n' ' '; echo; "
        "echo x > /proc/sys/kernel/hostname 2>/dev/null && echo writable || echo ro",
    )
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[2] == "ok"
    assert lines[3].split()[1] == "00000000a80425fb"  # Docker's 14 default capabilities
    assert lines[4] == "0"  # /proc/keys is masked
    assert lines[5] == "2"  # lo and eth0 (the default bridge network)
    for node in ("null", "zero", "random", "urandom", "tty", "full", "pts", "shm", "mqueue", "fd"):
        assert node in lines[6].split()
    assert lines[7] == "ro"


def test_no_daemon_socket_or_fds_inside(dm: Daemon) -> None:
    out = dm.out("run", "--rm", "busybox", "sh", "-c", "ls /proc/self/fd | tr '\\n' ' '")
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory handle
    assert dm.docker("run", "--rm", "busybox", "test", "-e", dm.sock).returncode == 1


def test_etc_files(dm: Daemon) -> None:
    out = dm.out(
        "run",
        "--rm",
        "--hostname",
        "myhost",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hostname; grep -c localhost /etc/hosts; test -f /etc/resolv.conf && echo r",
    )
    assert out.split() == ["myhost", "2", "r"]
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "echo hi > /newfile; echo written; sleep 30").strip()
    dm.wait_log(cid, "written")
    diff = dm.out("diff", cid)
    assert "A /newfile" in diff
    assert "/etc/hosts" not in diff


def test_rmi_conflicts(dm: Daemon) -> None:
    dm.out("tag", "busybox", "me/box:1")
    dm.out("create", "--name", "user", "me/box:1", "true")
    # Another reference remains (busybox:latest), so untagging is fine.
    assert "Untagged: me/box:1" in dm.out("rmi", "me/box:1")
    dm.out("tag", "busybox", "solo:1")
    img = dm.out("inspect", "-f", "{{.Id}}", "busybox").strip()
    r = dm.docker("rmi", img)
    assert r.returncode == 1 and "conflict: unable to delete" in r.stderr
    dm.out("rmi", "solo:1")


def test_attach_before_start_sees_first_byte(dm: Daemon) -> None:
    dm.out("create", "--name", "early", "busybox", "echo", "first")
    r = dm.docker("start", "-a", "early")
    assert r.returncode == 0 and r.stdout == "first\n"
    r = dm.docker("start", "-a", "early")
    assert r.stdout == "first\n"


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", "15"])
def test_kill_signal_forms(dm: Daemon, sig: str) -> None:
    dm.out("run", "-d", "--name", "kk", "busybox", "sh", "-c",
           "trap 'exit 143' TERM; echo trapped; while :; do sleep 0.1; done")
    dm.wait_log("kk", "trapped")
    dm.out("kill", "-s", sig, "kk")
    assert dm.out("wait", "kk").strip() == "143"
    r = dm.docker("kill", "kk")
    assert r.returncode == 1 and "is not running" in r.stderr


def test_pause_unpause(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "pp", "busybox", "sleep", "60")
    dm.out("pause", "pp")
    assert "(Paused)" in dm.out("ps")
    assert dm.out("inspect", "-f", "{{.State.Status}}", "pp").strip() == "paused"
    dm.out("unpause", "pp")
    assert dm.out("inspect", "-f", "{{.State.Status}}", "pp").strip() == "running"


def test_tty_run(dm: Daemon) -> None:
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["docker", "run", "--rm", "-t", "busybox", "sh", "-c", "tty; echo $TERM"],
        env=dm.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    buf = b""
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    proc.wait(timeout=20)
    os.close(master)
    assert b"/dev/pts/0" in buf and b"xterm" in buf
    assert proc.returncode == 0


def test_security_and_mount_flags(dm: Daemon, tmp_path: object) -> None:
    import os

    assert dm.out("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args").splitlines()[1].split()[1] == (
        "/sbin/docker-init"
    )
    r = dm.docker("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    caps = dm.out("run", "--rm", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "busybox", "grep", "CapEff",
                  "/proc/self/status").split()[1]
    assert int(caps, 16) & (1 << 12) and not int(caps, 16) & 1
    assert dm.out("run", "--rm", "--cap-drop", "ALL", "busybox", "grep", "CapEff", "/proc/self/status").split()[1] == (
        "0000000000000000"
    )
    priv = dm.out("run", "--rm", "--privileged", "busybox", "sh", "-c", "grep CapEff /proc/self/status; mount")
    with open("/proc/self/status") as f:
        ours = next(line.split()[1] for line in f if line.startswith("CapEff:"))
    assert f"CapEff:\t{ours}" in priv  # everything the host gives us
    assert "/proc/keys" not in priv
    host_dir = os.path.join(str(tmp_path), "shared")
    os.makedirs(host_dir)
    with open(os.path.join(host_dir, "f"), "w") as f:
        f.write("from host")
    assert dm.out("run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "cat", "/data/f") == "from host"
    r = dm.docker("run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "touch", "/data/g")
    assert r.returncode == 1
    dm.out("run", "--rm", "-v", f"{host_dir}:/data", "busybox", "touch", "/data/g")
    assert os.path.exists(os.path.join(host_dir, "g"))


def test_network_modes(dm: Daemon) -> None:
    links = dm.out("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").splitlines()
    assert len(links) == 1 and ": lo:" in links[0]
    host_links = dm.out("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").splitlines()
    assert len(host_links) > 1
    assert dm.out("inspect", "-f", "{{.HostConfig.NetworkMode}}",
                  dm.out("create", "--network", "none", "busybox", "true").strip()).strip() == "none"


def test_ps_limit_and_ancestor(dm: Daemon) -> None:
    a = dm.out("create", "busybox", "true").strip()
    b = dm.out("create", "busybox", "true").strip()
    assert dm.out("ps", "-q", "-n", "1", "--no-trunc").strip() == b
    assert dm.out("ps", "-q", "-l", "--no-trunc").strip() == b
    assert set(dm.out("ps", "-aq", "--no-trunc", "-f", "ancestor=busybox").split()) >= {a, b}
    assert dm.out("ps", "-aq", "-f", f"before={b[:12]}", "--no-trunc").split()[0] == a
    assert dm.out("ps", "-aq", "-f", f"since={a[:12]}", "--no-trunc").split() == [b]
