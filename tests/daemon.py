"""A real bockerd for tests: its own socket, data root, exec root and cgroup parent.

Everything it creates is removed on stop(), also when a test failed: containers are stopped by
the daemon's own shutdown, then we check that no mount, loop device or cgroup it made is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import docker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


class Daemon:
    def __init__(
        self,
        driver: str,
        extra_args: list[str] | None = None,
        record: str | None = None,
        base: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.driver = driver
        self.base = base or tempfile.mkdtemp(prefix=f"bocker-test-{driver}-", dir="/var/tmp")
        self.sock = os.path.join(self.base, "bockerd.sock")
        self.data_root = os.path.join(self.base, "data")
        self.exec_root = os.path.join(self.base, "exec")
        self.cgroup_parent = "bocker-test-" + os.path.basename(self.base)
        self.log_path = os.path.join(self.base, "bockerd.log")
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.record = record
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self.net_slot, self._net_lock = _take_net_slot()
        # Test daemons never share a bridge, subnet or iptables chain, with each other (two
        # may run at once) or with a real daemon: each holds a slot of a test-only range.
        self.bridge = f"bkt{self.net_slot}"
        self.bip = f"10.213.{self.net_slot}.1/24"
        self.pools = f"base=10.214.{self.net_slot}.0/24,size=28"
        self.chain = "BK-" + self.bridge
        # A launcher in front of bockerd (say systemd-socket-activate) and the -H it is given.
        self.command_prefix: list[str] = []
        self.listen_host = ""

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = os.path.join(self.base, "docker-config")
        env["DOCKER_CLI_HINTS"] = "false"
        return env

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, **self.extra_env}
        if self.record:
            env["BOCKER_API_RECORD"] = self.record
        args = [
            *self.command_prefix,
            sys.executable,
            "-m",
            "bocker_engine",
            "-H",
            self.listen_host or self.host,
            "--data-root",
            self.data_root,
            "--exec-root",
            self.exec_root,
            "--storage-driver",
            self.driver,
            "--log-level",
            "debug",
            "--cgroup-parent",
            self.cgroup_parent,
            "--config-file",
            os.path.join(self.base, "daemon.json"),
            "--bridge",
            self.bridge,
            "--bip",
            self.bip,
            "--default-address-pools",
            self.pools,
            *self.extra_args,
        ]
        if not os.path.exists(os.path.join(self.base, "daemon.json")):
            with open(os.path.join(self.base, "daemon.json"), "w") as f:
                f.write("{}")
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bockerd exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.sock):
                r = subprocess.run(
                    [DOCKER, "version", "--format", "{{.Server.Version}}"], env=self.env, capture_output=True
                )
                if r.returncode == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"bockerd did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def cleanup(self) -> None:
        """After stop(): remove whatever a crashed daemon may have left, then the files."""
        self.stop()
        _kill_supervisor(self.exec_root)
        for mnt in reversed(mounts_under(self.base)):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        _remove_cgroups(self.cgroup_parent)
        for link in leftover_links(self):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for rule in leftover_rules(self.chain):
            _delete_rule(rule)
        shutil.rmtree(self.base, ignore_errors=True)
        if self._net_lock is not None:
            self._net_lock.close()
            self._net_lock = None

    # ---- clients ------------------------------------------------------------------------

    def docker(
        self, *args: str, input: bytes | str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [DOCKER, *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input if isinstance(input, str) or input is None else input.decode(),
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def out(self, *args: str, **kw: Any) -> str:
        return self.docker(*args, check=True, **kw).stdout

    @property
    def client(self) -> Any:  # docker.DockerClient (docker-py ships no type hints)
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=120)
        return self._client

    def api(self) -> Any:  # docker.APIClient
        return docker.APIClient(base_url=self.host, timeout=120)

    def clean_containers(self) -> None:
        ids = self.out("ps", "-aq").split()
        if ids:
            self.docker("rm", "-f", *ids)

    def wait_log(self, ref: str, text: str, timeout: float = 20) -> None:
        """Until the container's log shows `text` (say, a script announcing its trap is set)."""
        wait_until(lambda: text in self.docker("logs", ref).stdout, timeout, f"{text!r} in the log of {ref}")

    def info(self) -> dict[str, Any]:
        return json.loads(self.out("info", "--format", "{{json .}}"))


def wait_until(cond: Callable[[], object], timeout: float = 20, what: str = "condition") -> None:
    """Poll `cond` until it is true; a deadline, not a timing assertion: slow machines only wait longer."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def mounts_under(path: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                out.append(mnt)
    return out


def _kill_supervisor(exec_root: str) -> None:
    pidfile = os.path.join(exec_root, "supervisor", "supervisor.pid")
    with contextlib.suppress(OSError, ValueError), open(pidfile) as f:
        os.kill(int(f.read().strip()), signal.SIGKILL)


def _remove_cgroups(parent: str) -> None:
    for root in ("/sys/fs/cgroup", *(os.path.join("/sys/fs/cgroup", d) for d in _listdir("/sys/fs/cgroup"))):
        d = os.path.join(root, parent)
        if not os.path.isdir(d):
            continue
        for child in _listdir(d):
            cd = os.path.join(d, child)
            if os.path.isdir(cd):
                # A paused container (its daemon gone without unpausing) cannot die frozen.
                for knob, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                    with contextlib.suppress(OSError), open(os.path.join(cd, knob), "w") as f:
                        f.write(thawed)
                with contextlib.suppress(OSError), open(os.path.join(cd, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):
                    try:
                        os.rmdir(cd)
                        break
                    except OSError:
                        time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def leftover_cgroups(parent: str) -> list[str]:
    left = []
    for ctl in _listdir("/sys/fs/cgroup"):
        d = os.path.join("/sys/fs/cgroup", ctl, parent)
        for child in _listdir(d):
            if os.path.isdir(os.path.join(d, child)):
                left.append(os.path.join(d, child))
    return left


# ---- networking ------------------------------------------------------------------------------

NET_LOCKS = "/run/bocker-test-nets"


def _take_net_slot() -> tuple[int, Any]:
    """A slot no other live test daemon holds (a flock per slot, released with the process),
    whose subnets do not clash with the host's routes."""
    os.makedirs(NET_LOCKS, exist_ok=True)
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    taken = []
    for line in routes.splitlines():
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.IPv4Network(line.split()[0], strict=False))
    for slot in range(1, 250):
        nets = [ipaddress.IPv4Network(f"10.213.{slot}.0/24"), ipaddress.IPv4Network(f"10.214.{slot}.0/24")]
        if any(n.overlaps(t) for n in nets for t in taken if t.prefixlen > 0):
            continue
        f = open(os.path.join(NET_LOCKS, str(slot)), "w")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return slot, f
    raise RuntimeError("no free test network slot")


def leftover_links(d: Daemon) -> list[str]:
    """The daemon's bridge, user-network bridges in its pool range, and veths on them."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True).stdout
    mine = [ipaddress.IPv4Network(d.bip, strict=False), ipaddress.IPv4Network(d.pools.split(",")[0][5:])]
    bridges = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if any(ipaddress.IPv4Address(a["local"]) in n for n in mine):
                bridges.append(link["ifname"])
    if subprocess.run(["ip", "link", "show", d.bridge], capture_output=True).returncode == 0:
        bridges.append(d.bridge)
    bridges = sorted(set(bridges))
    veths = []
    for br in bridges:
        r = subprocess.run(["ip", "-j", "link", "show", "master", br], capture_output=True, text=True)
        veths += [x["ifname"] for x in json.loads(r.stdout or "[]")]
    return veths + bridges


def leftover_rules(chain: str) -> list[str]:
    """Every iptables rule of the daemon's chains and every jump to them."""
    out = []
    for table in ("nat", "filter"):
        r = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if any(w == chain or w.startswith(chain + "-") for w in line.split()):
                out.append(f"{table} {line}")
    return out


def _delete_rule(rule: str) -> None:
    table, _, line = rule.partition(" ")
    parts = line.split()
    if parts[0] == "-A":
        subprocess.run(["iptables", "-w", "-t", table, "-D", *parts[1:]], capture_output=True)
    elif parts[0] == "-N":
        subprocess.run(["iptables", "-w", "-t", table, "-F", parts[1]], capture_output=True)
        subprocess.run(["iptables", "-w", "-t", table, "-X", parts[1]], capture_output=True)


def netns_files(d: Daemon) -> list[str]:
    return _listdir(os.path.join(d.exec_root, "netns"))
